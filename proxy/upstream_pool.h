// Idle keep-alive connections to one pool server, per worker (LIFO: the warmest first).
#pragma once

#include <openssl/types.h>

typedef struct ssl_session_st SSL_SESSION;  // <openssl/ssl.h> without the whole header

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <unordered_set>
#include <vector>

#include "proxy/runtime.h"
#include "proxy/stall_watch.h"

namespace sprayer::proxy {

class TlsClientContext;
class UpstreamConnection;
struct WorkerContext;

class UpstreamPool {
 public:
  // `target` is copied: a pool outlives the Runtime it was made from when a reload removes
  // its server while requests are still in flight on it.
  UpstreamPool(WorkerContext& context, ServerTarget target)
      : ctx_(context), slot_(target.slot), target_(std::move(target)) {}
  ~UpstreamPool();
  UpstreamPool(const UpstreamPool&) = delete;
  UpstreamPool& operator=(const UpstreamPool&) = delete;

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

  // The server's slot (ServerTarget::slot): the index of this pool in every worker, of its
  // metric rows and of its passive health reports. Not its position in Runtime::servers,
  // which a reload changes.
  size_t slot() const { return slot_; }
  const ServerTarget& target() const { return target_; }
  // Reload removed the server: no new connection, no idle reuse; those in flight finish.
  void retire();
  bool retired() const { return retired_; }

  // Stall watch (health.stall_after, StallWatch): the exchange reports what it sent and the
  // connections every byte that came back; the worker tick asks.
  void on_request_sent(uint64_t now_ms, bool long_poll) { watch_.on_request_sent(now_ms, long_poll); }
  void on_bytes() { watch_.on_bytes(); }
  bool stalled(uint64_t now_ms, uint64_t after_ms) { return watch_.stalled(now_ms, after_ms); }
  bool hung(uint64_t now_ms, uint64_t after_ms) const { return watch_.hung(now_ms, after_ms); }
  bool note_hang_logged() { return watch_.note_hang_logged(); }
  const std::unordered_set<UpstreamConnection*>& active() const { return active_; }
  size_t idle_count() const { return idle_.size(); }

  // The newest TLS session the server issued to this worker, offered by the next connection
  // so that a reconnect costs an abbreviated handshake. Per worker: no lock. Only a session made
  // under `context` is returned: after a reload (a new CA, say) the server is verified afresh.
  SSL_SESSION* tls_session(const std::shared_ptr<const TlsClientContext>& context) const {
    return context == session_context_ ? tls_session_ : nullptr;
  }
  // Takes the caller's reference.
  void store_tls_session(SSL_SESSION* session, std::shared_ptr<const TlsClientContext> context);
  void drop_tls_session();

 private:
  WorkerContext& ctx_;
  size_t slot_;
  ServerTarget target_;
  bool retired_ = false;
  std::vector<UpstreamConnection*> idle_;
  std::unordered_set<UpstreamConnection*> active_;  // attached to a request
  StallWatch watch_;
  SSL_SESSION* tls_session_ = nullptr;
  std::shared_ptr<const TlsClientContext> session_context_;
};

}  // namespace sprayer::proxy
