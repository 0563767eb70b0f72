// PoolServer: poolsim's listener, signal handling and shared per-process state (see pool_server.h).
#include "tests/poolsim/pool_server.h"

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <algorithm>
#include <cstdio>
#include <utility>

#include "tests/poolsim/client_connection.h"
#include "tests/poolsim/text.h"

namespace poolsim {

namespace {

constexpr size_t kReadBufferSize = 64 * 1024;
constexpr int kBacklog = 4096;
constexpr size_t kMaxSpareWrites = 1024;
constexpr size_t kMaxSpareWriteCapacity = 256 * 1024;
constexpr size_t kMaxCachedBlobSizes = 64;

// Splits "host:port" / "[v6]:port"; "", "*" mean every interface, "localhost" the loopback.
bool resolve_listen(const std::string& text, sockaddr_storage& out, std::string& error) {
  size_t colon = text.rfind(':');
  if (colon == std::string::npos) {
    error = "--listen: expected HOST:PORT, got '" + text + "'";
    return false;
  }
  std::string host = text.substr(0, colon);
  uint64_t port = 0;
  if (!parse_uint(std::string_view(text).substr(colon + 1), port) || port > 65535) {
    error = "--listen: bad port in '" + text + "'";
    return false;
  }
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host.empty() || host == "*") host = "0.0.0.0";
  if (host == "localhost") host = "127.0.0.1";
  if (uv_ip4_addr(host.c_str(), static_cast<int>(port), reinterpret_cast<sockaddr_in*>(&out)) == 0) {
    return true;
  }
  if (uv_ip6_addr(host.c_str(), static_cast<int>(port), reinterpret_cast<sockaddr_in6*>(&out)) == 0) {
    return true;
  }
  error = "--listen: not a numeric address: '" + host + "'";
  return false;
}

std::string describe(const sockaddr_storage& addr) {
  char host[64] = {};
  int port = 0;
  if (addr.ss_family == AF_INET6) {
    const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(&addr);
    uv_ip6_name(sin6, host, sizeof host);
    port = ntohs(sin6->sin6_port);
    return "[" + std::string(host) + "]:" + std::to_string(port);
  }
  const auto* sin = reinterpret_cast<const sockaddr_in*>(&addr);
  uv_ip4_name(sin, host, sizeof host);
  port = ntohs(sin->sin_port);
  return std::string(host) + ":" + std::to_string(port);
}

// What the pool table should say for a wildcard listener: the loopback of the same family.
std::string advertised(const sockaddr_storage& bound) {
  std::string text = describe(bound);
  if (text.starts_with("0.0.0.0:")) return "127.0.0.1" + text.substr(7);
  if (text.starts_with("[::]:")) return "[::1]" + text.substr(4);
  return text;
}

}  // namespace

PoolServer::PoolServer(uv_loop_t* loop, Options options)
    : loop_(loop),
      options_(std::move(options)),
      available_(!options_.unavailable),
      prng_state_(options_.seed),
      membership_(loop, options_),
      traveler_(loop, options_),
      extractor_(sprayer::affinity::ExtractorConfig{}),
      read_buffer_(kReadBufferSize),
      blob_pattern_(kBlobPiece + 256) {
  // Byte i of every blob is (i*31+7) & 0xff, so the pattern repeats every 256 bytes and any
  // piece of any blob is a slice of this buffer starting at (offset mod 256).
  for (size_t i = 0; i < blob_pattern_.size(); ++i) {
    blob_pattern_[i] = static_cast<char>((i * 31 + 7) & 0xff);
  }
}

PoolServer::~PoolServer() {
  for (WriteRequest* request : spare_writes_) delete request;
  SSL_CTX_free(tls_ctx_);
}

bool PoolServer::load_tls(std::string& error) {
  auto reason = [] {
    char buf[256];
    ERR_error_string_n(ERR_get_error(), buf, sizeof buf);
    ERR_clear_error();
    return std::string(buf);
  };
  tls_ctx_ = SSL_CTX_new(TLS_server_method());
  if (!tls_ctx_) {
    error = "SSL_CTX_new: " + reason();
    return false;
  }
  if (SSL_CTX_use_certificate_chain_file(tls_ctx_, options_.tls_cert.c_str()) != 1) {
    error = "--tls-cert " + options_.tls_cert + ": " + reason();
    return false;
  }
  if (SSL_CTX_use_PrivateKey_file(tls_ctx_, options_.tls_key.c_str(), SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(tls_ctx_) != 1) {
    error = "--tls-key " + options_.tls_key + ": " + reason();
    return false;
  }
  // Needed for TLS 1.2 session-ID resumption once client certificates are verified.
  static const unsigned char kContext[] = "poolsim";
  SSL_CTX_set_session_id_context(tls_ctx_, kContext, sizeof kContext - 1);
  if (!options_.tls_client_ca.empty()) {
    if (SSL_CTX_load_verify_file(tls_ctx_, options_.tls_client_ca.c_str()) != 1) {
      error = "--tls-client-ca " + options_.tls_client_ca + ": " + reason();
      return false;
    }
    SSL_CTX_set_verify(tls_ctx_, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  }
  return true;
}

bool PoolServer::start(std::string& error) {
  if (!options_.tls_cert.empty() && !load_tls(error)) return false;
  sockaddr_storage addr{};
  if (!resolve_listen(options_.listen, addr, error)) return false;
  uv_tcp_init(loop_, &listener_);
  listener_.data = this;
  listening_ = true;
  int rc = uv_tcp_bind(&listener_, reinterpret_cast<const sockaddr*>(&addr), 0);
  if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(&listener_), kBacklog, on_connection_cb);
  if (rc != 0) {
    error = "listen on " + options_.listen + ": " + uv_strerror(rc);
    return false;
  }
  sockaddr_storage bound{};
  int length = sizeof bound;
  uv_tcp_getsockname(&listener_, reinterpret_cast<sockaddr*>(&bound), &length);

  uv_signal_init(loop_, &sigterm_);
  uv_signal_init(loop_, &sigint_);
  sigterm_.data = this;
  sigint_.data = this;
  signals_installed_ = true;
  uv_signal_start(&sigterm_, on_signal_cb, SIGTERM);
  uv_signal_start(&sigint_, on_signal_cb, SIGINT);

  // Registered before the "listening" line, so a test that saw the line finds the row.
  std::string address = options_.advertise.empty() ? advertised(bound) : options_.advertise;
  membership_.start(address);
  traveler_.start(address);

  // Tests wait for this exact line; with port 0 it is the only way to learn the port.
  std::printf("poolsim %s listening on %s\n", options_.id.c_str(), describe(bound).c_str());
  std::fflush(stdout);
  return true;
}

void PoolServer::shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  membership_.shutdown();
  traveler_.shutdown();
  if (listening_) uv_close(reinterpret_cast<uv_handle_t*>(&listener_), nullptr);
  if (signals_installed_) {
    uv_close(reinterpret_cast<uv_handle_t*>(&sigterm_), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&sigint_), nullptr);
  }
  // close() only schedules; the list shrinks in the close callbacks, after this loop.
  for (ClientConnection* c = connections_; c != nullptr; c = c->next_) c->close();
}

void PoolServer::on_connection_cb(uv_stream_t* listener, int status) noexcept {
  static_cast<PoolServer*>(listener->data)->on_connection(status);
}

void PoolServer::on_signal_cb(uv_signal_t* handle, int) noexcept {
  static_cast<PoolServer*>(handle->data)->shutdown();
}

void PoolServer::on_connection(int status) {
  if (status < 0 || shut_down_) return;  // libuv retries accept on the next readiness
  auto* connection = new ClientConnection(*this);
  connection->accept(reinterpret_cast<uv_stream_t*>(&listener_));
}

bool PoolServer::draw_injected_error() {
  // splitmix64: deterministic for a given --seed and request order.
  uint64_t z = (prng_state_ += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  z ^= z >> 31;
  double u = static_cast<double>(z >> 11) * 0x1.0p-53;
  return u < options_.error_rate;
}

uv_buf_t PoolServer::read_buffer() {
  return uv_buf_init(read_buffer_.data(), static_cast<unsigned>(read_buffer_.size()));
}

WriteRequest* PoolServer::acquire_write() {
  if (spare_writes_.empty()) return new WriteRequest;
  WriteRequest* request = spare_writes_.back();
  spare_writes_.pop_back();
  return request;
}

void PoolServer::release_write(WriteRequest* request) {
  request->owner = nullptr;
  request->bytes = 0;
  if (spare_writes_.size() >= kMaxSpareWrites) {
    delete request;
    return;
  }
  // Keep the capacity of ordinary responses, but not of an occasional huge one.
  if (request->data.capacity() > kMaxSpareWriteCapacity) {
    std::string().swap(request->data);
  } else {
    request->data.clear();
  }
  spare_writes_.push_back(request);
}

const char* PoolServer::blob_bytes(uint64_t offset) const {
  return blob_pattern_.data() + (offset & 0xff);
}

uint64_t PoolServer::blob_fnv(uint64_t size) {
  if (auto it = blob_fnv_cache_.find(size); it != blob_fnv_cache_.end()) return it->second;
  uint64_t hash = kFnvOffset;
  for (uint64_t pos = 0; pos < size;) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(size - pos, kBlobPiece));
    hash = fnv1a64_update(hash, blob_bytes(pos), n);
    pos += n;
  }
  if (blob_fnv_cache_.size() >= kMaxCachedBlobSizes) blob_fnv_cache_.clear();
  blob_fnv_cache_.emplace(size, hash);
  return hash;
}

void PoolServer::adopt(ClientConnection* connection) {
  connection->prev_ = nullptr;
  connection->next_ = connections_;
  if (connections_ != nullptr) connections_->prev_ = connection;
  connections_ = connection;
  ++stats_.open_connections;
  ++stats_.total_connections;
}

void PoolServer::forget(ClientConnection* connection) {
  if (connection->prev_ != nullptr) {
    connection->prev_->next_ = connection->next_;
  } else {
    connections_ = connection->next_;
  }
  if (connection->next_ != nullptr) connection->next_->prev_ = connection->prev_;
  connection->prev_ = connection->next_ = nullptr;
  --stats_.open_connections;
}

}  // namespace poolsim
