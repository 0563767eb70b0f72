// The process-wide memory budget (limits.memory_budget) and the overload state it drives:
// every worker charges the buffer memory it takes (pool chunks, queued writes) to one
// counter; past the marks sprayer refuses new work, then sheds the connections holding most.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace sprayer::proxy {

enum class OverloadState : uint8_t {
  normal,    // everything served
  refusing,  // no new connections accepted, new requests answered 503 with Retry-After
  shedding,  // refusing, and the connections holding the most queued bytes are closed
};
std::string_view to_string(OverloadState state);

// The marks, as shares of the budget: refuse at 90 %, shed at 95 %, normal again under
// 80 %; an allocation that would pass 100 % fails (the connection asking closes). The gap
// between refusing and resuming keeps one busy connection from flapping the state. Refusing
// that lasts kShedAfterMs sheds as well: connections that hold the process between 80 and
// 95 % would otherwise keep every new client out for as long as they like.
struct OverloadMarks {
  static constexpr unsigned kResumePercent = 80;
  static constexpr unsigned kRefusePercent = 90;
  static constexpr unsigned kShedPercent = 95;
  static constexpr uint64_t kShedAfterMs = 2000;
  uint64_t budget = 0;  // 0: unlimited, never overloaded
  uint64_t resume = 0;
  uint64_t refuse = 0;
  uint64_t shed = 0;
  static OverloadMarks of(uint64_t budget);
};

// Pure: the state after `current` (entered `in_state_ms` ago) when `used` bytes are accounted.
OverloadState next_overload_state(OverloadState current, uint64_t used, const OverloadMarks& marks,
                                  uint64_t in_state_ms);

// The default budget: half of the memory this process may use, the smaller of the cgroup
// limit (v2 memory.max, v1 memory.limit_in_bytes; "max" or absurd values mean none) and
// MemTotal. Inputs are the files' texts (empty when absent); 0 if nothing is known.
uint64_t default_memory_budget(std::string_view cgroup_v2_max, std::string_view cgroup_v1_limit,
                               std::string_view meminfo);
// The same from this machine's files (/proc/self/cgroup finds the process's own cgroup).
uint64_t default_memory_budget_here();

// Seconds a refused client is told to wait (Retry-After).
inline constexpr int kOverloadRetryAfterSeconds = 5;
// The answer to a request refused for overload: 503, Retry-After, Connection: close.
void build_overload_response(std::string& out);

class Overload {
 public:
  struct Transition {
    OverloadState from;
    OverloadState to;
  };

  explicit Overload(uint64_t budget = 0) { set_budget(budget); }
  Overload(const Overload&) = delete;
  Overload& operator=(const Overload&) = delete;

  // Control thread (start, reload). Takes effect at the next update().
  void set_budget(uint64_t bytes);
  uint64_t budget() const { return budget_.load(std::memory_order_relaxed); }
  uint64_t used() const { return used_.load(std::memory_order_relaxed); }

  // Any worker. Reserves `bytes` unless that would pass the budget: false, nothing charged,
  // and the allocation is refused (counted).
  bool try_charge(size_t bytes);
  // Memory already taken that cannot be refused any more (a queued write's copy).
  void charge(size_t bytes) { used_.fetch_add(bytes, std::memory_order_relaxed); }
  void release(size_t bytes) { used_.fetch_sub(bytes, std::memory_order_relaxed); }
  // Past kKeepIdlePercent of the budget pools give idle chunks back to the system instead of
  // keeping them for reuse: a cache must not be what keeps the process near its marks.
  static constexpr unsigned kKeepIdlePercent = 50;
  bool pressed() const;

  // Any thread, `now_ms` from a monotonic clock: re-evaluates the state from the counter; the
  // one caller that moved it gets the transition (and logs it), everyone else nothing.
  std::optional<Transition> update(uint64_t now_ms);
  OverloadState state() const { return state_.load(std::memory_order_relaxed); }
  bool refusing() const { return state() != OverloadState::normal; }
  // While shedding: how many bytes over the resume mark the process is (what to shed).
  uint64_t excess() const;

  // Counters for the metrics.
  void count_shed() { shed_.fetch_add(1, std::memory_order_relaxed); }
  void count_refused_request() { refused_requests_.fetch_add(1, std::memory_order_relaxed); }
  void count_allocation_failure() { allocation_failures_.fetch_add(1, std::memory_order_relaxed); }
  uint64_t shed_connections() const { return shed_.load(std::memory_order_relaxed); }
  uint64_t refused_requests() const { return refused_requests_.load(std::memory_order_relaxed); }
  uint64_t allocation_failures() const { return allocation_failures_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> budget_{0};
  std::atomic<uint64_t> used_{0};
  std::atomic<OverloadState> state_{OverloadState::normal};
  std::atomic<uint64_t> since_ms_{0};  // when state_ was entered
  std::atomic<uint64_t> shed_{0};
  std::atomic<uint64_t> refused_requests_{0};
  std::atomic<uint64_t> allocation_failures_{0};
};

}  // namespace sprayer::proxy
