// Early re-send on a hung server: requests that are safe to run twice leave a server that has
// shown no sign of life for health.stall_after, for the server that would take its users over,
// before the health checks reach their verdict. Everything else keeps waiting for the verdict.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "proxy/route_state.h"

namespace sprayer::proxy {

class UpstreamPool;
class Worker;

// GET, HEAD, OPTIONS, and the ActiveSync Ping (a POST that only parks: running it twice
// costs the server a second wait, never a second change). A POST Sync is never safe.
bool safe_to_resend(std::string_view method, bool long_poll);

// The candidates, as server slots, that the router gives this request if the server at
// `down_slot` were down: the takeover order, so every device of a user lands together.
std::vector<uint32_t> takeover_slots(const RouteState& state, std::string_view user_key,
                                     std::optional<uint64_t> key_hash, uint64_t spread, uint32_t down_slot);

// Called by the worker tick while `pool` is hung (UpstreamPool::hung): if a request that the
// server should answer at once still waits for its first byte, every safe request on the pool
// whose request went out whole and which has no response byte yet goes to its takeover
// candidate, and its stalled connection is closed. Returns how many were re-sent.
size_t resend_early(Worker& worker, UpstreamPool& pool, uint64_t stall_ms);

}  // namespace sprayer::proxy
