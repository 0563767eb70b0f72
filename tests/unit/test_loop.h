// A private uv loop for component tests: driven with UV_RUN_ONCE until a predicate holds or a
// deadline passes, then closed with a check that nothing was left open.
#pragma once

#include <uv.h>

#include <chrono>
#include <cstdint>

namespace sprayer::test {

class TestLoop {
 public:
  TestLoop() {
    uv_loop_init(&loop_);
    uv_timer_init(&loop_, &deadline_);
  }
  uv_loop_t* get() { return &loop_; }

  template <class Pred>
  bool run_until(Pred pred, std::chrono::milliseconds limit) {
    const auto end = std::chrono::steady_clock::now() + limit;
    // Wakes UV_RUN_ONCE at the deadline even when nothing else happens.
    uv_timer_start(&deadline_, [](uv_timer_t*) {}, static_cast<std::uint64_t>(limit.count()), 0);
    while (!pred() && std::chrono::steady_clock::now() < end) uv_run(&loop_, UV_RUN_ONCE);
    uv_timer_stop(&deadline_);
    return pred();
  }

  // Closes the helper timer and runs the loop dry; 0 when nothing was left open.
  int close() {
    uv_close(reinterpret_cast<uv_handle_t*>(&deadline_), nullptr);
    uv_run(&loop_, UV_RUN_DEFAULT);
    return uv_loop_close(&loop_);
  }

 private:
  uv_loop_t loop_{};
  uv_timer_t deadline_{};
};

}  // namespace sprayer::test
