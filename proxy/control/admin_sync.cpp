// Admin states shared by the two members of a pair (admin.peer): the stamped records, the
// POST /api/v1/admin-states call the peer makes, and merging what it answers. Last writer
// wins by the change's stamp (admin_state.h); the link itself is admin_peer.*.
#include <string>

#include "proxy/control/admin_peer.h"
#include "proxy/control/admin_state.h"
#include "proxy/control/control_loop.h"
#include "proxy/json.h"
#include "proxy/log.h"

namespace sprayer::proxy {

bool ControlLoop::set_admin_record(const std::string& id, const AdminRecord& record, const char* source) {
  admin_records_[id] = record;
  admin_sources_[id] = source;
  return tracker_->set_admin_state(id, record.state, clock_.now());
}

std::string ControlLoop::admin_states_text() const {
  AdminStates configured;
  for (const auto& s : runtime_->servers)
    if (auto record = admin_records_.find(s.id); record != admin_records_.end()) configured[s.id] = record->second;
  return format_admin_states(configured);
}

bool ControlLoop::merge_peer_states(std::string_view text, std::string& error) {
  AdminStates theirs;
  if (!parse_admin_states(text, "admin peer's states", theirs, error)) return false;
  bool changed = false, route_changed = false;
  for (const auto& [id, record] : theirs) {
    if (!tracker_ || !tracker_->find(id)) continue;  // not configured here
    AdminRecord mine = admin_records_.count(id) ? admin_records_[id] : AdminRecord{};
    if (!merge_admin_record(mine, record)) continue;
    LOG_INFO("server %s: %s, from the admin peer (changed there at %llu ms)", id.c_str(),
             std::string(health::to_string(record.state)).c_str(), static_cast<unsigned long long>(record.stamp));
    route_changed |= set_admin_record(id, mine, "peer");
    changed = true;
  }
  if (route_changed) publish_route();
  if (changed) save_admin_state_file();
  return true;
}

// GET: this member's stamped states. POST (the peer): its states, merged; the answer is ours
// after the merge, so one call carries a change both ways.
AdminResponse ControlLoop::admin_states_api(const AdminRequest& request) {
  if (request.method == "POST") {
    std::string error;
    if (!merge_peer_states(request.body, error)) {
      std::string body = "{\"error\":";
      json_string(body, error);
      body += "}\n";
      return AdminResponse{400, "application/json", std::move(body)};
    }
  } else if (request.method != "GET") {
    return AdminResponse{405, "application/json", "{\"error\":\"use GET or POST\"}\n"};
  }
  return AdminResponse{200, "text/plain; charset=utf-8", admin_states_text()};
}

void ControlLoop::start_admin_peer() {
  const conf::AdminConfig& admin = config_->admin;
  if (admin.peer.port == 0 || !tracker_) return;
  peer_ = std::make_unique<AdminPeer>(
      &loop_, admin.peer, [this] { return config_->admin.token; }, [this] { return admin_states_text(); },
      [this](std::string_view answer) {
        std::string error;
        if (!merge_peer_states(answer, error)) LOG_WARN("admin peer %s: %s", config_->admin.peer.to_string().c_str(),
                                                        error.c_str());
      });
  LOG_INFO("admin peer %s: drain and maintenance are shared with it", admin.peer.to_string().c_str());
  peer_->start();
}

}  // namespace sprayer::proxy
