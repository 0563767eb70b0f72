// Whole-config reload (SIGHUP, POST /api/v1/reload): the parts that need no ControlLoop state.
// ControlLoop::reload_config (config_reload.cpp) loads and validates the file, refuses it whole
// on any error, and otherwise hands the new Runtime to the workers at a loop boundary.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "conf/config.h"
#include "health/server_health.h"
#include "proxy/runtime.h"

namespace sprayer::proxy {

struct ReloadOutcome {
  bool applied = false;
  int status = 200;                        // admin API status: 200, 422 refused, 503 shutting down
  std::string changes;                     // ConfigDiff::summary()
  std::vector<std::string> errors;         // why it was refused: "file:line:column: key: message", ...
  std::vector<std::string> needs_restart;  // changed keys kept at their running values
  std::string to_json() const;
};

// Gives each server of `next` its slot: the running one for a server whose id and address
// stay, a new one (from `next_slot`, which advances) otherwise.
void assign_slots(const std::vector<ServerTarget>& running, std::vector<ServerTarget>& next, uint32_t& next_slot);

// Binds, and closes at once, a socket on every listener address of `next` that `running`
// does not listen on, so a reload whose new listener cannot bind is refused before anything
// changes (the workers bind their own sockets after).
bool probe_new_listeners(const conf::Config& running, const conf::Config& next, std::string& error);

health::HealthSpec health_spec(const conf::HealthConfig& config);

// The header lines of every status check (health.headers, and the login read from
// health.auth_file). False with a reason naming the file, never its content.
bool load_check_headers(const conf::HealthConfig& config, std::string& out, std::string& error);

}  // namespace sprayer::proxy
