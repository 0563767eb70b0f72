// Idle keep-alive connections to one pool server, per worker (LIFO: the warmest first).
#pragma once

#include <cstddef>
#include <vector>

namespace sprayer::proxy {

class UpstreamConnection;
class Worker;

class UpstreamPool {
 public:
  UpstreamPool(Worker& worker, size_t server_index) : worker_(worker), server_index_(server_index) {}

  // An idle connection ready for a request, or a new one that is connecting (null if the
  // connect could not even start; the error is in `error`).
  UpstreamConnection* acquire(bool& reused, int& error);
  void release(UpstreamConnection* connection);  // keep idle, or close if the pool is full
  void forget(UpstreamConnection* connection);   // an idle connection closed by itself
  void close_idle();

  size_t server_index() const { return server_index_; }
  size_t idle_count() const { return idle_.size(); }

 private:
  Worker& worker_;
  size_t server_index_;
  std::vector<UpstreamConnection*> idle_;
};

}  // namespace sprayer::proxy
