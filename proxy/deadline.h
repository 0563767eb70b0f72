// A connection's timeout as a deadline over one uv timer. Moving a deadline later (every
// keep-alive request does: idle, head, body, response, idle again) is a field write; only a
// deadline earlier than the armed one restarts the timer. The timer that fires before the
// current deadline sleeps again for the rest, so each connection touches libuv's timer heap
// about once per timeout period instead of several times per request. The timer never
// sleeps longer than kMaxSleepMs, so a long deadline (a parked response) followed by a
// shorter one (the idle pool timeout) needs no restart either.
#pragma once

#include <uv.h>

#include <cstdint>

namespace sprayer::proxy {

class Deadline {
 public:
  // The owner keeps timer()->data (its close callback recovers the owner from it) and calls
  // expired() first in its timer callback.
  void init(uv_loop_t* loop, void* owner, uv_timer_cb on_timer) {
    uv_timer_init(loop, &timer_);
    timer_.data = owner;
    on_timer_ = on_timer;
  }

  static constexpr uint64_t kMaxSleepMs = 30'000;

  void set_in(uint64_t ms) {
    uint64_t now = uv_now(timer_.loop);
    due_ = now + ms;
    if (armed_for_ != 0 && armed_for_ <= due_) return;
    sleep(now, ms);
  }

  // Nothing is due; a running timer is left to fire and find nothing.
  void clear() { due_ = 0; }
  bool pending() const { return due_ != 0; }

  // In the timer callback: true when the deadline has passed (and is then cleared); false
  // when it moved or was cleared (the timer is re-armed for what is left, if anything).
  bool expired() {
    armed_for_ = 0;
    if (due_ == 0) return false;
    uint64_t now = uv_now(timer_.loop);
    if (now < due_) {
      sleep(now, due_ - now);
      return false;
    }
    due_ = 0;
    return true;
  }

  uv_timer_t* timer() { return &timer_; }
  uv_handle_t* handle() { return reinterpret_cast<uv_handle_t*>(&timer_); }

 private:
  void sleep(uint64_t now, uint64_t ms) {
    if (ms > kMaxSleepMs) ms = kMaxSleepMs;
    armed_for_ = now + ms;
    uv_timer_start(&timer_, on_timer_, ms, 0);
  }

  uv_timer_t timer_{};
  uv_timer_cb on_timer_ = nullptr;
  uint64_t due_ = 0;        // loop time in ms; 0 = none
  uint64_t armed_for_ = 0;  // when the uv timer fires; 0 = not running
};

}  // namespace sprayer::proxy
