// Idle keep-alive connections to one pool server, per worker (LIFO: the warmest first).
#pragma once

#include <atomic>
#include <cstddef>
#include <unordered_set>
#include <vector>

#include "proxy/runtime.h"

namespace sprayer::proxy {

class UpstreamConnection;
class Worker;

class UpstreamPool {
 public:
  // `target` is copied: a pool outlives the Runtime it was made from when a reload removes
  // its server while requests are still in flight on it.
  UpstreamPool(Worker& worker, ServerTarget target)
      : worker_(worker), server_index_(target.slot), target_(std::move(target)) {}

  // An idle connection ready for a request, or a new one that is connecting (null if the
  // connect could not even start; the error is in `error`).
  UpstreamConnection* acquire(bool& reused, int& error);
  void release(UpstreamConnection* connection);  // keep idle, or close if the pool is full
  void forget(UpstreamConnection* connection);   // an idle connection closed by itself
  void on_closed(UpstreamConnection* connection);  // any connection of this pool is closing
  void close_idle();
  // The server became unusable (down, maintenance): end every request in flight on it so
  // parked long-polls are answered and their devices come back to a live server.
  void fail_active();
  size_t active_count() const { return active_.size(); }

  size_t server_index() const { return server_index_; }  // the server's slot
  const ServerTarget& target() const { return target_; }
  // Reload removed the server: no new connection, no idle reuse; those in flight finish.
  void retire();
  bool retired() const { return retired_; }
  size_t idle_count() const { return idle_.size(); }

 private:
  Worker& worker_;
  size_t server_index_;
  ServerTarget target_;
  bool retired_ = false;
  std::vector<UpstreamConnection*> idle_;
  std::unordered_set<UpstreamConnection*> active_;  // attached to a request
};

}  // namespace sprayer::proxy
