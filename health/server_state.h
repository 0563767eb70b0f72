// The small vocabulary shared by health and routing: a server's routing state, admin
// state and availability class. No dependencies, so the affinity router may include it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace sprayer::health {

// What routing sees. Same enumerators, order and values as affinity::ServerState, so the
// two convert with a static_cast (or the router can alias this one).
// Precedence when several apply: maintenance, then down, then draining.
enum class ServerState : std::uint8_t { up = 0, down = 1, draining = 2, maintenance = 3 };

// Operator intent, set through the admin API. drain: owned users stay, no new users;
// maintenance: no traffic at all.
enum class AdminState : std::uint8_t { ready, drain, maintenance };

// What the checks say. `checking` (no check answered yet, e.g. right after a sprayer
// restart or a reload that added the server) routes like `up`, so a restart does not
// blackhole a pool; `fall` failed checks take it down, one passed check confirms it up.
enum class Liveness : std::uint8_t { checking, up, down };

// Why the last routing transition (or the last failure) happened.
enum class Reason : std::uint8_t {
  none,               // no transition yet
  check_passed,       // `rise` consecutive checks passed
  check_status,       // `fall` checks failed; the last one on an unexpected status
  check_body,         // ... on a body without the expected text
  check_timeout,      // ... on no answer within the check timeout
  check_connect,      // ... on a failed connect (refused, unreachable, TLS handshake)
  check_reset,        // ... on a connection reset mid-answer
  passive_connect,    // ejected: consecutive failures reported by workers, the last a connect failure
  passive_reset,      // ... a reset
  passive_timeout,    // ... an upstream response timeout
  passive_5xx,        // ... a 5xx answer
  admin_ready,        // the operator set ready
  admin_drain,        // ... drain
  admin_maintenance,  // ... maintenance
};

// Failures the workers see on real traffic (passive accounting).
enum class PassiveFailure : std::uint8_t {
  connect,     // refused, unreachable, connect timeout, TLS handshake failure
  reset,       // connection reset or closed before a full response
  timeout,     // upstream response timeout
  status_5xx,  // the server answered 5xx
};
inline constexpr std::size_t kPassiveFailureKinds = 4;

// Traveler availability index: 0..100 available; -1..-100 constrained (keeps its users,
// takes no new ones); -200 takes no load-balanced work, only users bound to it.
inline constexpr int kAvailabilityMax = 100;
inline constexpr int kAvailabilityBoundOnly = -200;
inline constexpr int kAvailabilityDefault = 100;  // before any source reported one

// The router only distinguishes these three, so only a change of class is routing-relevant.
enum class AvailabilityClass : std::uint8_t { available, constrained, bound_only };

constexpr AvailabilityClass classify_availability(int availability) noexcept {
  if (availability >= 0) return AvailabilityClass::available;
  if (availability > kAvailabilityBoundOnly) return AvailabilityClass::constrained;
  return AvailabilityClass::bound_only;
}

// Out-of-range reports are clamped, not rejected: a server saying 150 is available, one
// saying -500 takes no load-balanced work.
constexpr int clamp_availability(int availability) noexcept {
  if (availability > kAvailabilityMax) return kAvailabilityMax;
  if (availability < kAvailabilityBoundOnly) return kAvailabilityBoundOnly;
  return availability;
}

std::string_view to_string(ServerState state) noexcept;
std::string_view to_string(AdminState state) noexcept;
std::string_view to_string(Liveness liveness) noexcept;
std::string_view to_string(Reason reason) noexcept;
std::string_view to_string(PassiveFailure kind) noexcept;

}  // namespace sprayer::health
