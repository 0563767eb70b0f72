// Comparing two validated Configs key by key for a live reload.
#include "conf/config_diff.h"

#include <algorithm>
#include <initializer_list>
#include <utility>

namespace sprayer::conf {
namespace {

template <typename T, typename Key>
const T* find_by(const std::vector<T>& items, const std::string& key, Key T::*member) {
  auto it = std::find_if(items.begin(), items.end(), [&](const T& item) { return item.*member == key; });
  return it == items.end() ? nullptr : &*it;
}

// "servers +pool4 -pool1 ~pool2", nothing when the group did not change.
void group(std::string& out, const char* label,
           std::initializer_list<std::pair<char, const std::vector<std::string>*>> parts) {
  std::string items;
  for (const auto& [sign, names] : parts)
    for (const auto& name : *names) items += std::string(" ") + sign + name;
  if (items.empty()) return;
  if (!out.empty()) out += "; ";
  out += label + items;
}

}  // namespace

std::string ConfigDiff::summary() const {
  std::string out;
  group(out, "servers", {{'+', &servers_added}, {'-', &servers_removed}, {'~', &servers_changed}});
  group(out, "listeners", {{'+', &listeners_added}, {'-', &listeners_removed}, {'~', &listeners_changed}});
  if (!live.empty()) {
    if (!out.empty()) out += "; ";
    out += "live:";
    for (const auto& key : live) out += " " + key;
  }
  if (!needs_restart.empty()) {
    if (!out.empty()) out += "; ";
    out += "needs restart:";
    for (const auto& key : needs_restart) out += " " + key;
  }
  return out.empty() ? "no change" : out;
}

ConfigDiff diff_configs(const Config& running, const Config& next) {
  ConfigDiff diff;
  for (const auto& server : next.servers) {
    const ServerConfig* before = find_by(running.servers, server.id, &ServerConfig::id);
    if (!before)
      diff.servers_added.push_back(server.id);
    else if (!(*before == server))
      diff.servers_changed.push_back(server.id);
  }
  for (const auto& server : running.servers)
    if (!find_by(next.servers, server.id, &ServerConfig::id)) diff.servers_removed.push_back(server.id);

  for (const auto& listener : next.listeners) {
    const ListenerConfig* before = find_by(running.listeners, listener.name, &ListenerConfig::name);
    if (!before) {
      diff.listeners_added.push_back(listener.name);
    } else if (!(*before == listener)) {
      diff.listeners_changed.push_back(listener.name);
      if (!(before->address == listener.address)) diff.listeners_rebound.push_back(listener.name);
    }
  }
  for (const auto& listener : running.listeners)
    if (!find_by(next.listeners, listener.name, &ListenerConfig::name)) diff.listeners_removed.push_back(listener.name);

  auto live = [&](bool same, const char* key) {
    if (!same) diff.live.push_back(key);
  };
  live(running.timeouts == next.timeouts, "timeouts");
  live(running.limits == next.limits, "limits");
  live(running.upstream == next.upstream, "upstream");
  live(running.http == next.http, "http");
  live(running.affinity == next.affinity, "affinity");
  HealthConfig health_next = next.health;
  health_next.enabled = running.health.enabled;  // restart-only, reported below
  live(running.health == health_next, "health");
  live(running.log == next.log, "log");
  live(running.admin.token == next.admin.token && running.admin.token_file == next.admin.token_file, "admin.token");
  live(running.admin.read_token == next.admin.read_token && running.admin.read_token_file == next.admin.read_token_file,
       "admin.read_token");
  live(running.access_log == next.access_log, "access_log");
  live(running.admin.state_file == next.admin.state_file, "admin.state_file");

  auto restart = [&](bool same, const char* key) {
    if (!same) diff.needs_restart.push_back(key);
  };
  restart(running.workers == next.workers, "workers");
  restart(running.admin.enabled == next.admin.enabled, "admin.enabled");
  restart(running.admin.address == next.admin.address, "admin.address");
  restart(running.admin.peer == next.admin.peer, "admin.peer");
  restart(running.ownership == next.ownership, "ownership");
  restart(running.health.enabled == next.health.enabled, "health.enabled");
  restart(running.directory == next.directory, "directory");
  return diff;
}

std::shared_ptr<const Config> keep_restart_only(const Config& running, const Config& next) {
  auto out = std::make_shared<Config>(next);
  out->workers = running.workers;
  out->admin.enabled = running.admin.enabled;
  out->admin.address = running.admin.address;
  out->admin.peer = running.admin.peer;
  out->ownership = running.ownership;
  out->health.enabled = running.health.enabled;
  out->directory = running.directory;
  return out;
}

}  // namespace sprayer::conf
