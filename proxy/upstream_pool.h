// Idle keep-alive connections to one pool server, per worker (LIFO: the warmest first).
#pragma once

#include <openssl/types.h>

typedef struct ssl_session_st SSL_SESSION;  // <openssl/ssl.h> without the whole header

#include <atomic>
#include <cstddef>
#include <memory>
#include <unordered_set>
#include <vector>

namespace sprayer::proxy {

class TlsClientContext;
class UpstreamConnection;
class Worker;

class UpstreamPool {
 public:
  UpstreamPool(Worker& worker, size_t server_index) : worker_(worker), server_index_(server_index) {}
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

  size_t server_index() const { return server_index_; }
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
  Worker& worker_;
  size_t server_index_;
  std::vector<UpstreamConnection*> idle_;
  std::unordered_set<UpstreamConnection*> active_;  // attached to a request
  SSL_SESSION* tls_session_ = nullptr;
  std::shared_ptr<const TlsClientContext> session_context_;
};

}  // namespace sprayer::proxy
