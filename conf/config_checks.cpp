// Checks across keys, made once the keys they compare are read: a section's own at the end
// of its read_* (the mark of a key another key contradicts is where the error goes), the
// whole file's (listener names and addresses, server ids, watermarks) after the walk. Each
// looks only at keys that were written and read without error (Loader::usable).
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <string>
#include <string_view>

#include "conf/loader.h"

namespace sprayer::conf::detail {

void Loader::check_listener(const Item& item, const ListenerConfig& listener) {
  if (listener.tls.enabled && listener.redirect_to_https) {
    error(item, "redirect_to_https is for a plain listener; this one has tls");
  }
}

void Loader::check_upstream_tls(const Item& item, const UpstreamTlsConfig& tls) {
  if (tls.client_cert.empty() != tls.client_key.empty())
    error(item, "client_cert and client_key must be given together");
}

void Loader::check_admin_tokens(const Item& item) {
  for (const char* key : {"token", "read_token"}) {
    std::string path = join(item.path, key);
    std::string file_path = path + "_file";
    if (marks_.contains(path) && marks_.contains(file_path))
      error(marks_[file_path], file_path, "give " + std::string(key) + " or " + key + "_file, not both");
  }
}

// A peer's calls change admin states: they need the write token, and the listener they reach.
void Loader::check_admin_peer(const AdminConfig& admin) {
  if (admin.peer.port == 0 || !usable("admin.peer")) return;
  if (admin.token.empty())
    error(marks_["admin.peer"], "admin.peer",
          "needs admin.token (or admin.token_file), the same on both members: the peer's calls change admin states");
  else if (!admin.enabled)
    error(marks_["admin.peer"], "admin.peer",
          "needs the admin listener (admin.enabled: true): the peer sends its changes there");
}

void Loader::check_extractor(const Item& step_item, const ExtractorStepConfig& step) {
  std::string kind_path = join(step_item.path, "kind");
  std::string name_path = join(step_item.path, "name");
  if (!usable(kind_path) || failed_.contains(name_path)) return;
  bool takes_name = step.kind == "header" || step.kind == "cookie" || step.kind == "query";
  if (takes_name && step.name.empty()) {
    if (marks_.contains(name_path)) {
      error(marks_[name_path], name_path, "must not be empty for kind " + step.kind);
    } else {
      error(step_item.mark, name_path, "required for kind " + step.kind);
    }
  } else if (!takes_name && marks_.contains(name_path)) {
    error(marks_[name_path], name_path, "only header, cookie and query extractors take a name");
  } else if (step.kind != "query" && takes_name && !is_http_token(step.name)) {
    error(marks_[name_path], name_path, "must be an HTTP token (letters, digits and !#$%&'*+-.^_`|~)");
  } else if (step.kind == "query" && !is_visible_ascii(step.name)) {
    error(marks_[name_path], name_path, "must be printable ASCII without spaces");
  }
}

void Loader::check_health(const Item& item, const HealthConfig& health) {
  for (const auto& [name, value] : health.headers) {
    std::string path = join(join(item.path, "headers"), name);
    if (!health.auth_file.empty() && iequals_ascii(name, "Authorization") && usable(path))
      error(marks_[path], path, "auth_file already sends Authorization; keep the login in one place");
  }
  const std::string fast = join(item.path, "fast_interval");
  if (health.fast_interval > health.interval && usable(fast) && !failed_.contains(join(item.path, "interval")))
    error(marks_[fast], fast, "must not exceed interval");
  if (health.max_hold < health.min_hold && usable(join(item.path, "max_hold")))
    error(marks_[join(item.path, "max_hold")], join(item.path, "max_hold"), "must not be less than min_hold");
}

void Loader::check_directory(const Item& item, const DirectoryConfig& d) {
  if (!d.enabled || !usable(join(item.path, "enabled"))) return;
  for (const char* key : {"uri", "base_dn"}) {
    std::string path = join(item.path, key);
    const std::string& value = std::string_view(key) == "uri" ? d.uri : d.base_dn;
    if (value.empty() && !failed_.contains(path)) error(marks_[join(item.path, "enabled")], path, "required when enabled");
  }
  const std::string min = join(item.path, "reconnect_min");
  if (d.reconnect_min > d.reconnect_max && usable(min)) error(marks_[min], min, "must not exceed reconnect_max");
}

void Loader::check_user_map(const AffinityConfig& affinity) {
  // Aliases are compared with the normalised user, so one that normalisation would change
  // can never match: a silent misroute unless it is caught here.
  for (const auto& [alias, user_key] : affinity.map) {
    std::string path = join("affinity.map", alias);
    if (!usable(path)) continue;
    auto is_space = [](char c) { return c == ' ' || (c >= '\t' && c <= '\r'); };
    std::string problem;
    if (is_space(alias.front()) || is_space(alias.back())) {
      problem = "users are trimmed of surrounding white space";
    } else if (affinity.notes_canonical && alias.size() >= 3 && (alias[0] == 'c' || alias[0] == 'C') &&
               (alias[1] == 'n' || alias[1] == 'N') && alias[2] == '=') {
      problem = "notes_canonical is on, so \"CN=\" names are reduced to their common name";
    } else if (affinity.strip_domain && alias.find_first_of("@\\") != std::string::npos) {
      problem = "strip_domain is on, so users have no domain; write the alias without it";
    } else if (affinity.lower_case &&
               std::any_of(alias.begin(), alias.end(), [](char c) { return c >= 'A' && c <= 'Z'; })) {
      problem = "lower_case is on, so users have no upper-case letters; write the alias in lower case";
    }
    if (!problem.empty()) error(marks_[path], path, "this alias can never match: " + problem);
  }
}

void Loader::check_ownership(const OwnershipConfig& ownership) {
  const std::string source = "ownership.source";
  if (usable(source) && ownership.source != OwnershipSourceKind::none) {
    std::string needed;
    bool empty = false;
    std::string kind;
    switch (ownership.source) {
      case OwnershipSourceKind::sqlite:
        needed = "ownership.sqlite_path", empty = ownership.sqlite_path.empty(), kind = "sqlite";
        break;
      case OwnershipSourceKind::postgresql:
        needed = "ownership.postgresql", empty = ownership.postgresql.empty(), kind = "postgresql";
        break;
      case OwnershipSourceKind::mariadb:
        needed = "ownership.mariadb", empty = !marks_.contains(needed), kind = "mariadb";
        break;
      case OwnershipSourceKind::odbc:
        needed = "ownership.odbc", empty = !marks_.contains(needed), kind = "odbc";
        break;
      case OwnershipSourceKind::none: break;
    }
    if (empty && !failed_.contains(needed)) {
      if (marks_.contains(needed)) {
        error(marks_[needed], needed, "must not be empty when source is " + kind);
      } else {
        error(marks_[source], needed, "required when source is " + kind);
      }
    }
  }
  // A password file that cannot be read fails every connect: say so at load time. Its
  // content is never read here, nor shown.
  for (const std::string& key : {std::string("ownership.mariadb.password_file"), std::string("ownership.odbc.password_file")}) {
    const std::string& path = key == "ownership.odbc.password_file" ? ownership.odbc.password_file
                                                                    : ownership.mariadb.password_file;
    if (usable(key) && !path.empty() && ::access(path.c_str(), R_OK) != 0) {
      error(marks_[key], key, "cannot read " + path + ": " + std::strerror(errno));
    }
  }
  const std::string min = "ownership.reconnect_min";
  const std::string max = "ownership.reconnect_max";
  if (failed_.contains(min) || failed_.contains(max) || ownership.reconnect_min <= ownership.reconnect_max) return;
  if (marks_.contains(min)) {
    error(marks_[min], min, "must not exceed reconnect_max (" + format_duration(ownership.reconnect_max) + ")");
  } else {
    error(marks_[max], max, "must not be below reconnect_min (" + format_duration(ownership.reconnect_min) + ")");
  }
}

void Loader::check_listeners(const Config& config) {
  std::map<std::string, std::string> names;      // name → path of its first listener
  std::map<std::string, std::string> addresses;  // address_key → path of its first listener
  for (size_t i = 0; i < config.listeners.size(); ++i) {
    const ListenerConfig& listener = config.listeners[i];
    std::string path = index_path("listeners", i);
    std::string name_path = path + ".name";
    if (usable(name_path)) {
      auto [first, inserted] = names.emplace(listener.name, name_path);
      if (!inserted) {
        error(marks_[name_path], name_path, "duplicate listener name " + quoted(listener.name) +
                                                " (first at line " + std::to_string(line_of(first->second)) + ")");
      }
    }
    std::string address_path = path + ".address";
    if (usable(address_path)) {
      auto [first, inserted] = addresses.emplace(address_key(listener.address), address_path);
      if (!inserted) {
        error(marks_[address_path], address_path,
              "another listener already uses " + listener.address.to_string() + " (line " +
                  std::to_string(line_of(first->second)) + ")");
      }
    }
  }
  // The admin listener binds in the same process; sharing an address would make one of the
  // two binds fail at start, long after the config was declared valid.
  if (!config.admin.enabled || failed_.contains("admin.enabled") || failed_.contains("admin.address")) return;
  auto clash = addresses.find(address_key(config.admin.address));
  if (clash == addresses.end()) return;
  if (marks_.contains("admin.address")) {
    error(marks_["admin.address"], "admin.address",
          "the listener at line " + std::to_string(line_of(clash->second)) + " already uses " +
              config.admin.address.to_string());
  } else {
    error(marks_[clash->second], clash->second,
          "clashes with the admin listener (admin.address defaults to " + config.admin.address.to_string() +
              "); change one of them or set admin.enabled: false");
  }
}

void Loader::check_servers(const Config& config) {
  std::map<std::string, std::string> ids;  // id → path of its first server
  for (size_t i = 0; i < config.servers.size(); ++i) {
    std::string id_path = index_path("servers", i) + ".id";
    if (!usable(id_path)) continue;
    auto [first, inserted] = ids.emplace(config.servers[i].id, id_path);
    if (!inserted) {
      error(marks_[id_path], id_path, "duplicate server id " + quoted(config.servers[i].id) + " (first at line " +
                                          std::to_string(line_of(first->second)) + ")");
    }
  }
}

void Loader::check_watermarks(const Config& config) {
  const std::string low = "http.buffer_low_watermark";
  const std::string high = "http.buffer_high_watermark";
  if (failed_.contains(low) || failed_.contains(high)) return;
  if (config.http.buffer_low_watermark < config.http.buffer_high_watermark) return;
  // Point at the key the operator wrote; a default cannot be the mistake.
  if (marks_.contains(low)) {
    error(marks_[low], low, "must be less than buffer_high_watermark (" +
                                format_size(config.http.buffer_high_watermark) + ")");
  } else {
    error(marks_[high], high, "must be greater than buffer_low_watermark (" +
                                  format_size(config.http.buffer_low_watermark) + ")");
  }
}

}  // namespace sprayer::conf::detail
