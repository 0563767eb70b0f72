// Per-worker keep-alive pool for one server.
#include "proxy/upstream_pool.h"

#include <openssl/ssl.h>
#include <uv.h>

#include <algorithm>

#include "proxy/upstream_connection.h"
#include "proxy/worker_context.h"

namespace sprayer::proxy {

UpstreamPool::~UpstreamPool() { SSL_SESSION_free(tls_session_); }

void UpstreamPool::store_tls_session(SSL_SESSION* session, std::shared_ptr<const TlsClientContext> context) {
  SSL_SESSION_free(tls_session_);
  tls_session_ = session;
  session_context_ = session ? std::move(context) : nullptr;
}

void UpstreamPool::drop_tls_session() { store_tls_session(nullptr, nullptr); }

UpstreamConnection* UpstreamPool::acquire(bool& reused, int& error) {
  while (!idle_.empty()) {
    UpstreamConnection* connection = idle_.back();
    idle_.pop_back();
    if (connection->state() == UpstreamConnection::State::idle) {
      reused = true;
      active_.insert(connection);
      return connection;
    }
  }
  reused = false;
  if (retired_) {
    error = UV_ECANCELED;
    return nullptr;
  }
  auto* connection = new UpstreamConnection(ctx_, *this);
  error = connection->connect(reinterpret_cast<const sockaddr*>(&target_.addr));
  if (error != 0) {
    connection->close();
    return nullptr;
  }
  active_.insert(connection);
  return connection;
}

void UpstreamPool::release(UpstreamConnection* connection) {
  active_.erase(connection);
  const auto& config = ctx_.config();
  uint32_t max_requests = config.upstream.max_requests_per_connection;
  if (retired_ || idle_.size() >= config.upstream.max_idle_per_server || ctx_.draining ||
      (max_requests != 0 && connection->requests() >= max_requests)) {
    connection->close();
    return;
  }
  connection->make_idle();
  idle_.push_back(connection);
}

void UpstreamPool::forget(UpstreamConnection* connection) {
  auto it = std::find(idle_.begin(), idle_.end(), connection);
  if (it != idle_.end()) idle_.erase(it);
}

void UpstreamPool::on_closed(UpstreamConnection* connection) {
  active_.erase(connection);
  forget(connection);
}

void UpstreamPool::fail_active() {
  std::vector<UpstreamConnection*> victims(active_.begin(), active_.end());
  for (auto* connection : victims) connection->fail_server_down();
  close_idle();
}

void UpstreamPool::retire() {
  retired_ = true;
  close_idle();
}

void UpstreamPool::close_idle() {
  auto idle = std::move(idle_);
  idle_.clear();
  for (auto* connection : idle) connection->close();
}

}  // namespace sprayer::proxy
