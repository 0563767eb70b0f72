// The other member of an active/standby pair (admin.peer): drain and maintenance are shared
// with it through its admin API, so that a change made on either member reaches the other.
// Each exchange is one POST /api/v1/admin-states carrying this member's stamped states; the
// answer is the peer's after it merged them (last writer wins, admin_state.h). One runs at
// start, after every local change and every few seconds; one at a time, each with a deadline.
// A peer that does not answer is logged once and counted; local changes never wait for it.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "conf/config.h"

namespace sprayer::proxy {

inline constexpr uint64_t kPeerIntervalMs = 2000;  // the periodic exchange
inline constexpr uint64_t kPeerTimeoutMs = 2000;   // one exchange, resolving the name included

struct AdminPeerStatus {
  std::string address;             // host:port
  std::optional<bool> up;          // none before the first exchange ends
  uint64_t exchanges_ok = 0;
  uint64_t exchanges_failed = 0;
  std::string last_error;          // of the last failed exchange
};

class AdminPeer {
 public:
  // our_states: the body to send (format_admin_states); on_answer: the peer's body on a 200.
  // token: admin.token, read at each exchange (a reload may change it).
  AdminPeer(uv_loop_t* loop, conf::Endpoint peer, std::function<std::string()> token,
            std::function<std::string()> our_states, std::function<void(std::string_view)> on_answer);
  ~AdminPeer();
  AdminPeer(const AdminPeer&) = delete;
  AdminPeer& operator=(const AdminPeer&) = delete;

  void start();    // an exchange now, then every kPeerIntervalMs
  void changed();  // a local change: exchange at once (after the one in flight)
  void stop();     // the timer and the exchange in flight are closed; nothing runs after
  const AdminPeerStatus& status() const { return status_; }

  struct Call;  // one exchange in flight (public only for the C callbacks)
  void finished(Call* call, int http_status, std::string body, std::string error);

 private:
  void exchange();
  void on_timer();

  uv_loop_t* loop_;
  conf::Endpoint peer_;
  std::function<std::string()> token_;
  std::function<std::string()> our_states_;
  std::function<void(std::string_view)> on_answer_;
  uv_timer_t timer_{};
  bool timer_open_ = false;
  bool stopped_ = false;
  bool again_ = false;  // a change came while an exchange was in flight
  Call* call_ = nullptr;
  AdminPeerStatus status_;
};

}  // namespace sprayer::proxy
