// Data-path outcomes per server, reported by workers to the control thread's HealthTracker
// (passive checks). Workers report every failure but a success only after a failure for that
// server, so a healthy pool sends nothing; the control thread drains the queue on a wakeup.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <mutex>
#include <vector>

namespace sprayer::proxy {

// stall: requests wait on the server and nothing has come back from it for
// health.stall_after; a hint that hurries the next active check, not a failure by itself.
enum class PassiveOutcome : uint8_t { success, connect, reset, timeout, status_5xx, stall };

// How a request failed on a pool server, from the socket to the passive health report.
enum class UpstreamError : uint8_t {
  connect,       // connect or TLS handshake failed, or its deadline passed
  reset,         // the connection broke (reset, EOF or a write error mid-request)
  timeout,       // no response within upstream_response
  bad_response,  // the server sent what is not HTTP
  server_down,   // health marked the server down: its requests are ended
  no_memory,     // sprayer's memory budget had no buffer for the answer: not the server's fault
};

// What the passive checks learn from a failure; false for one they caused (server_down).
constexpr bool passive_outcome(UpstreamError error, PassiveOutcome& outcome) {
  switch (error) {
    case UpstreamError::connect: outcome = PassiveOutcome::connect; return true;
    case UpstreamError::reset: outcome = PassiveOutcome::reset; return true;
    case UpstreamError::timeout: outcome = PassiveOutcome::timeout; return true;
    case UpstreamError::bad_response: outcome = PassiveOutcome::reset; return true;
    case UpstreamError::server_down: return false;
    case UpstreamError::no_memory: return false;
  }
  return false;
}

struct PassiveEvent {
  uint16_t server;  // the server's slot (ServerTarget::slot)
  PassiveOutcome outcome;
};

class HealthEvents {
 public:
  using Consumer = std::function<void(const std::vector<PassiveEvent>&)>;

  // Control thread.
  void open(uv_loop_t* loop, Consumer consumer);
  void close();

  // Any thread.
  void report(PassiveEvent event);

 private:
  static void on_async(uv_async_t* handle) noexcept;

  std::mutex mutex_;
  std::vector<PassiveEvent> queue_;
  bool open_ = false;
  uv_async_t async_{};
  Consumer consumer_;
};

// A worker's filter in front of HealthEvents: one flag per server.
class PassiveReporter {
 public:
  PassiveReporter(HealthEvents* events, size_t servers) : events_(events), failing_(servers, false) {}
  void report(uint16_t server, PassiveOutcome outcome) {
    if (!events_) return;
    if (server >= failing_.size()) failing_.resize(server + 1u, false);  // a server added by reload
    if (outcome == PassiveOutcome::stall) {
      events_->report(PassiveEvent{server, outcome});
      return;
    }
    bool failure = outcome != PassiveOutcome::success;
    if (!failure && !failing_[server]) return;
    failing_[server] = failure;
    events_->report(PassiveEvent{server, outcome});
  }

 private:
  HealthEvents* events_;
  std::vector<bool> failing_;
};

}  // namespace sprayer::proxy
