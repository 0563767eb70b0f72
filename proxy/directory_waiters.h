// A worker's requests waiting for a directory answer: each waits at most directory.wait,
// parked without blocking the loop, and is resumed when the directory thread says answers
// arrived (through the worker's mailbox) or when its time is up, then goes by whatever key
// is known by then (the directory's, or the normalised name).
#pragma once

#include <uv.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace sprayer::proxy {

class Exchange;
struct WorkerContext;

class DirectoryWaiters {
 public:
  explicit DirectoryWaiters(WorkerContext& context) : ctx_(context) {}
  void open(uv_loop_t* loop);  // the timer, unreferenced: waiting requests keep the loop alive

  // The key for a user the extractor found (`key` holds its normalised form). Returns true
  // when `exchange` was parked: Exchange::resume_route follows, never from inside this call.
  // Otherwise `key` is final (the directory's answer when cached, else unchanged).
  bool resolve(Exchange& exchange, std::string_view raw_user, std::string& key);
  void cancel(Exchange& exchange);  // the request went away while parked
  void on_answers();                // worker thread, from the mailbox
  size_t parked() const { return parked_.size(); }

 private:
  struct Parked {
    Exchange* exchange;
    std::string name;
    uint64_t deadline_ms;  // uv_now
  };
  // The directory's key for `name` if cached (normalised), else empty.
  bool cached_key(const std::string& name, std::string& key, bool& answered);
  void on_timer();
  void arm();

  WorkerContext& ctx_;
  uv_timer_t timer_{};
  bool open_ = false;
  std::vector<Parked> parked_;
};

}  // namespace sprayer::proxy
