// What one active health check asks for (CheckSpec) and how its answer is judged
// (evaluate_response). Pure: the HTTP exchange itself belongs to the control loop.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sprayer::health {

struct CheckSpec {
  std::string path = "/traveler?action=getStatus";
  // Empty = any 2xx.
  std::vector<int> expected_statuses{200};
  // The Traveler servlet can answer 200 while its sync task is down; only this text says
  // the server really works. Case-sensitive substring of the body; empty = no body check.
  std::string body_contains = "Traveler server is available.";
  // Read at most this much of the body: the text sits at its start, and a broken server
  // must not make the checker buffer without bound.
  std::size_t max_body_bytes = 16 * 1024;
  // Response header carrying the availability index; empty = none (the pool table only).
  std::string availability_header;
  std::chrono::milliseconds interval{1000};
  // While a server is suspected (ServerHealth::suspected: a failed check or a stall, fewer
  // than `fall` so far), its checks start this often instead of every interval, so the
  // verdict on a dead or hung server takes (fall - 1) checks, not (fall - 1) intervals. A
  // check still in flight is never overlapped: one that timed out is followed at once.
  // Rise checks after a down keep the interval; the hold-down damps flapping.
  std::chrono::milliseconds fast_interval{200};
  // At most the interval. Checks of one server never overlap: the next one is scheduled
  // only from this one's answer or timeout.
  std::chrono::milliseconds timeout{800};
  int rise = 2;  // consecutive passes that bring a down server up
  int fall = 2;  // consecutive failures that take a server down
  // Each interval is stretched or shrunk by up to this fraction, so the checks of a pool
  // drift apart instead of hitting every server (and every sprayer) in lock-step.
  double jitter = 0.1;
};

struct CheckResult {
  enum class Outcome : std::uint8_t {
    pass,
    fail_status,   // answered with a status not in expected_statuses
    fail_body,     // expected status, body without body_contains
    fail_timeout,  // no full answer within the timeout
    fail_connect,  // connect refused / unreachable / TLS handshake failed
    fail_reset,    // connection reset or closed before a full answer
  };
  Outcome outcome = Outcome::fail_connect;
  int status = 0;  // 0 when no status line arrived
  // From CheckSpec::availability_header when configured and present and numeric.
  std::optional<int> availability;
  std::chrono::milliseconds latency{0};  // set by the caller, who measured it

  bool passed() const noexcept { return outcome == Outcome::pass; }
};

// Judges a complete answer (status and the first max_body_bytes of the body). A check
// that never got an answer is a `failed_check` instead.
CheckResult evaluate_response(int status, std::string_view body, const CheckSpec& spec);

// The same, with the raw value of the availability header (nullopt when absent). A value
// that does not parse leaves `availability` empty; it never fails the check, because the
// server did answer that it works.
CheckResult evaluate_response(int status, std::string_view body,
                              std::optional<std::string_view> availability_value,
                              const CheckSpec& spec);

// A check that ended without an answer (timeout, connect failure, reset).
CheckResult failed_check(CheckResult::Outcome outcome, std::chrono::milliseconds latency);

// "  -50 " → -50; clamped to [-200, 100]; nullopt for anything but an optional sign and
// digits between optional blanks.
std::optional<int> parse_availability(std::string_view text) noexcept;

std::string_view to_string(CheckResult::Outcome outcome) noexcept;

// Empty when usable, else why not (for the config loader's message).
std::string_view validate(const CheckSpec& spec) noexcept;

}  // namespace sprayer::health
