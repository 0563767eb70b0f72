// Admin states (drain, maintenance) kept in a file, so that a restart does not put a server
// the operator took out back into service. Written whole to a temporary file and renamed over
// the old one (never half a file), like HAProxy's server-state-file; read once at start.
// Each state carries the stamp of its change, so that the two members of a pair (admin.peer)
// agree on the latest one (admin_peer.h).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "health/server_state.h"

namespace sprayer::proxy {

struct AdminRecord {
  health::AdminState state = health::AdminState::ready;
  // When the change was made: Unix milliseconds, but never below a stamp already seen (so a
  // change made after hearing of another one wins over it even if the clocks disagree). 0:
  // never changed, or from a file written before stamps.
  uint64_t stamp = 0;
  bool operator==(const AdminRecord&) const = default;
};

using AdminStates = std::map<std::string, AdminRecord, std::less<>>;  // server id -> its last change

// Reads `path`: one "ID STATE [STAMP]" line per server changed. A missing file is no states
// and no error. False with `error` on anything else (the file is then ignored).
bool load_admin_states(const std::string& path, AdminStates& out, std::string& error);

// Replaces `path` atomically (temporary file in the same folder, fsync, rename). Ready servers
// are written only when their change is stamped (an undrain must beat an older drain).
bool save_admin_states(const std::string& path, const AdminStates& states, std::string& error);

// The file's text, also what the pair's members exchange; `name` prefixes parse errors.
std::string format_admin_states(const AdminStates& states);
bool parse_admin_states(std::string_view text, const std::string& name, AdminStates& out, std::string& error);

// Last writer wins: `remote` replaces `local` when its stamp is newer (on a tie, the state
// that takes more traffic away: maintenance over drain over ready). True when it did.
bool merge_admin_record(AdminRecord& local, const AdminRecord& remote);

// The stamp for a change made now: `now_ms`, or one past the newest stamp known.
uint64_t next_admin_stamp(uint64_t now_ms, const AdminStates& known);

}  // namespace sprayer::proxy
