// Admin states (drain, maintenance) kept in a file, so that a restart does not put a server
// the operator took out back into service. Written whole to a temporary file and renamed over
// the old one (never half a file), like HAProxy's server-state-file; read once at start.
#pragma once

#include <map>
#include <string>

#include "health/server_state.h"

namespace sprayer::proxy {

using AdminStates = std::map<std::string, health::AdminState>;  // server id -> state (ready: absent)

// Reads `path`: one "ID STATE" line per server not ready. A missing file is no states and
// no error. False with `error` on anything else (the file is then ignored).
bool load_admin_states(const std::string& path, AdminStates& out, std::string& error);

// Replaces `path` atomically (temporary file in the same folder, fsync, rename).
bool save_admin_states(const std::string& path, const AdminStates& states, std::string& error);

}  // namespace sprayer::proxy
