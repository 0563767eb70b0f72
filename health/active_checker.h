// Runs the HealthTracker's active checks on a uv loop (the control thread): one timer armed
// at the earliest due check; each check is one short-lived connection with a GET and a
// deadline, its answer judged by evaluate_response. No thread per server, no blocking.
#pragma once

#include <netinet/in.h>
#include <uv.h>

#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "health/clock.h"
#include "health/health_view.h"
#include "health/probe_tls.h"

namespace sprayer::health {

// The header lines for set_request_headers: `Authorization: Basic base64(credentials)` when
// credentials ("user:password") are not empty, then each extra header in order.
std::string check_request_headers(std::string_view credentials,
                                  const std::vector<std::pair<std::string, std::string>>& headers);

class ActiveChecker {
 public:
  struct Target {
    std::string id;
    sockaddr_storage addr{};
    std::string host;  // Host header: the server's host:port
    bool tls = false;  // HTTPS: sessions come from the factory given to set_tls_factory
  };

  // on_change runs after a result that changed what routing sees (a new HealthView).
  ActiveChecker(uv_loop_t* loop, HealthTracker& tracker, const Clock& clock, std::function<void()> on_change);
  ~ActiveChecker();
  ActiveChecker(const ActiveChecker&) = delete;
  ActiveChecker& operator=(const ActiveChecker&) = delete;

  void set_targets(std::vector<Target> targets);
  void set_tls_factory(ProbeTlsFactory factory) { tls_factory_ = std::move(factory); }
  // Header lines added to every check request ("Name: value\r\n" each, from
  // check_request_headers); checks started afterwards use them. May hold a password: never log.
  void set_request_headers(std::string lines) { request_headers_ = std::move(lines); }
  void start();
  // The tracker's schedule moved outside a check (a stall hurried one): re-arm the timer.
  void reschedule() { schedule(); }
  // Closes the timer and every check in flight; `done` runs once all handles are closed.
  void stop(std::function<void()> done);

  uint64_t checks_started() const { return started_; }

  struct Probe;  // one check in flight (public only for the C callbacks in the .cpp)

 private:
  void schedule();
  void on_timer();
  bool in_flight(std::string_view id) const;
  void launch(const Target& target);
  void finish(Probe* probe, const CheckResult& result);
  void probe_closed(Probe* probe);
  void maybe_done();
  void on_connected(Probe* probe);
  void on_bytes(Probe* probe, const char* data, size_t len);
  void on_plaintext(Probe* probe, const char* data, size_t len);
  void send(Probe* probe, std::string bytes);

  uv_loop_t* loop_;
  HealthTracker& tracker_;
  const Clock& clock_;
  std::function<void()> on_change_;
  std::vector<Target> targets_;
  ProbeTlsFactory tls_factory_;
  std::string request_headers_;
  uv_timer_t timer_{};
  bool timer_open_ = false;
  bool stopping_ = false;
  std::function<void()> done_;
  std::vector<Probe*> probes_;
  uint64_t started_ = 0;
};

}  // namespace sprayer::health
