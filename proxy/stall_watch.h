// The stall watch of one server on one worker (health.stall_after): when requests went out and
// when the server last showed a sign of life. Cheap stores on the data path; the worker tick
// asks. Held by UpstreamPool.
#pragma once

#include <cstdint>

namespace sprayer::proxy {

class StallWatch {
 public:
  // A long-poll (Ping) starts the watch but is no evidence of a hang by itself: the server
  // holds it on purpose. `due_since_` counts only requests the server should answer at once.
  void on_request_sent(uint64_t now_ms, bool long_poll) {
    if (unanswered_since_ == 0) unanswered_since_ = now_ms;
    if (!long_poll && due_since_ == 0) due_since_ = now_ms;
  }
  void on_bytes() {
    unanswered_since_ = 0;
    due_since_ = 0;
    stall_reported_ = false;
    hang_logged_ = false;
  }
  // A request went out `after_ms` ago or more and no byte at all has come back since: true
  // once per silence (the worker reports it to health, which checks the server at once).
  bool stalled(uint64_t now_ms, uint64_t after_ms) {
    if (unanswered_since_ == 0 || stall_reported_ || now_ms - unanswered_since_ < after_ms) return false;
    stall_reported_ = true;
    return true;
  }
  // Early re-send (early_resend.h): the same, for a request that should have been answered at
  // once. True on every tick of the silence.
  bool hung(uint64_t now_ms, uint64_t after_ms) const { return due_since_ != 0 && now_ms - due_since_ >= after_ms; }
  // True once per silence: the first early re-send is logged, not every tick's.
  bool note_hang_logged() {
    bool first = !hang_logged_;
    hang_logged_ = true;
    return first;
  }

 private:
  uint64_t unanswered_since_ = 0;  // loop time in ms; 0 = nothing waits unanswered
  uint64_t due_since_ = 0;         // as unanswered_since_, for requests other than long-polls
  bool stall_reported_ = false;
  bool hang_logged_ = false;
};

}  // namespace sprayer::proxy
