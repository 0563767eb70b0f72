// Every OpenSSL call is preceded by clear_stale_errors(): SSL_get_error() consults the thread's
// error queue, and a stale entry from another connection on this worker would fail this one.
#include "proxy/tls_engine.h"

#include <openssl/err.h>
#include <openssl/ssl.h>

namespace sprayer::proxy {

namespace {

// The first (root-cause) error: its reason, plus any detail a callback attached.
std::string error_queue_text() {
  const char* data = nullptr;
  int flags = 0;
  unsigned long e = ERR_peek_error_data(&data, &flags);
  std::string out;
  if (e != 0) {
    if (const char* reason = ERR_reason_error_string(e)) {
      out = reason;
    } else {
      char buf[256];
      ERR_error_string_n(e, buf, sizeof buf);
      out = buf;
    }
    if ((flags & ERR_TXT_STRING) && data && *data) out.append(" (").append(data).append(")");
  }
  ERR_clear_error();
  return out;
}

// ERR_clear_error() resets all sixteen slots of the queue, which on the data path cost as much
// as a record's cipher setup; the queue is almost always empty, and a peek says so cheaply.
inline void clear_stale_errors() {
  if (ERR_peek_error() != 0) ERR_clear_error();
}

}  // namespace

const char* to_string(TlsStatus status) {
  switch (status) {
    case TlsStatus::ok: return "ok";
    case TlsStatus::want_io: return "want_io";
    case TlsStatus::closed: return "closed";
    case TlsStatus::error: return "error";
  }
  return "?";
}

TlsEngine::TlsEngine(std::shared_ptr<const TlsContext> context, BufferPool& pool)
    : context_(std::move(context)), pool_(pool), buffers_(pool) {
  ssl_ = context_->new_ssl();
  attach_bio(context_->bio_method());
}

TlsEngine::TlsEngine(std::shared_ptr<const TlsClientContext> context, BufferPool& pool, SSL_SESSION* session)
    : client_context_(std::move(context)), pool_(pool), buffers_(pool) {
  ssl_ = client_context_->new_ssl(session);
  attach_bio(client_context_->bio_method());
}

void TlsEngine::attach_bio(const TlsBioMethod& method) {
  BIO* bio = ssl_ ? method.new_bio(buffers_) : nullptr;
  if (!bio) {
    SSL_free(ssl_);
    ssl_ = nullptr;
    fail("out of memory creating the TLS session");
    return;
  }
  SSL_set_bio(ssl_, bio, bio);  // one BIO for both directions: SSL takes the single reference
}

TlsEngine::~TlsEngine() {
  // A device that just drops the TCP connection (idle timeout, network change) did nothing
  // wrong; without this OpenSSL evicts its session from the cache when the SSL is freed.
  // Sessions of failed connections are still evicted.
  if (ssl_ && handshake_done_ && status_ != TlsStatus::error)
    SSL_set_shutdown(ssl_, SSL_get_shutdown(ssl_) | SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
  SSL_free(ssl_);  // before buffers_ goes: the BIO points at it
}

bool TlsEngine::input_pending() const {
  return buffers_.input_bytes() > 0 || (ssl_ && SSL_pending(ssl_) > 0);
}

bool TlsEngine::looks_like_http(const char* data, size_t len) {
  // Methods are tokens; in practice upper-case letters, '-' or '_' ("M-SEARCH"), at most ~20.
  constexpr size_t kMaxMethod = 24;
  for (size_t i = 0; i < len && i <= kMaxMethod; ++i) {
    char c = data[i];
    if (c >= 'A' && c <= 'Z') continue;
    if ((c == '-' || c == '_') && i > 0) continue;
    return c == ' ' && i > 0;
  }
  return len > 0 && len <= kMaxMethod;  // only a prefix of a method has arrived so far
}

TlsStatus TlsEngine::fail(std::string message) {
  status_ = TlsStatus::error;
  error_ = std::move(message);
  ERR_clear_error();
  return TlsStatus::error;
}

TlsStatus TlsEngine::result(int ret, const char* operation) {
  int code = SSL_get_error(ssl_, ret);
  switch (code) {
    case SSL_ERROR_NONE:
      return TlsStatus::ok;
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
      return TlsStatus::want_io;
    case SSL_ERROR_ZERO_RETURN:
      status_ = TlsStatus::closed;
      return TlsStatus::closed;
    case SSL_ERROR_SYSCALL: {
      std::string reason = error_queue_text();
      return fail(std::string(operation) + ": " + (reason.empty() ? "unexpected end of stream" : reason));
    }
    default: {
      std::string reason = error_queue_text();
      if (client_context_) {
        // "certificate verify failed" alone does not say which check: expiry, issuer, name.
        long verify = SSL_get_verify_result(ssl_);
        if (verify != X509_V_OK) reason.append(": ").append(X509_verify_cert_error_string(verify));
      }
      return fail(std::string(operation) + ": " + (reason.empty() ? "failed" : reason));
    }
  }
}

TlsStatus TlsEngine::feed_ciphertext(Slice data) {
  if (status_ == TlsStatus::error) return status_;
  buffers_.push_input(std::move(data));
  return TlsStatus::ok;
}

TlsStatus TlsEngine::feed_ciphertext(const char* data, size_t len) {
  if (status_ == TlsStatus::error) return status_;
  buffers_.push_input_copy(data, len);
  return TlsStatus::ok;
}

TlsStatus TlsEngine::handshake() {
  if (status_ != TlsStatus::ok) return status_;
  if (handshake_done_) return TlsStatus::ok;
  clear_stale_errors();
  int ret = SSL_do_handshake(ssl_);
  if (ret == 1) {
    handshake_done_ = true;
    return TlsStatus::ok;
  }
  return result(ret, "handshake");
}

TlsStatus TlsEngine::read_plaintext(Slice& out) {
  out.reset();
  if (status_ != TlsStatus::ok) return status_;
  if (!handshake_done_) {
    TlsStatus s = handshake();
    if (s != TlsStatus::ok) return s;
  }
  // The common wake-up with nothing to decrypt costs no chunk.
  if (buffers_.input_bytes() == 0 && SSL_has_pending(ssl_) == 0) return TlsStatus::want_io;

  Chunk* chunk = pool_.acquire();
  size_t filled = 0;
  TlsStatus last = TlsStatus::want_io;
  while (filled < chunk->capacity) {
    size_t n = 0;
    clear_stale_errors();
    int ret = SSL_read_ex(ssl_, chunk->data() + filled, chunk->capacity - filled, &n);
    if (ret != 1) {
      last = result(ret, "read");
      break;
    }
    filled += n;
    // Everything fed has been decrypted: stop without the call that would only say so.
    if (buffers_.input_bytes() == 0 && SSL_has_pending(ssl_) == 0) break;
  }
  if (filled == 0) {
    BufferPool::unref(chunk);
    return last;
  }
  // Data first; a close or error seen after it is sticky and reported by the next call.
  out = Slice(chunk, chunk->data(), filled);
  BufferPool::unref(chunk);
  return TlsStatus::ok;
}

TlsStatus TlsEngine::write_plaintext(const char* data, size_t len) {
  if (status_ == TlsStatus::error) return status_;
  if (!handshake_done_) {
    TlsStatus s = handshake();
    if (s != TlsStatus::ok) return s;
  }
  if (len == 0) return TlsStatus::ok;
  size_t written = 0;
  clear_stale_errors();
  // Without SSL_MODE_ENABLE_PARTIAL_WRITE and with a BIO that never blocks, success means all.
  int ret = SSL_write_ex(ssl_, data, len, &written);
  if (ret == 1) return TlsStatus::ok;
  return result(ret, "write");
}

TlsStatus TlsEngine::shutdown() {
  if (status_ == TlsStatus::error) return status_;
  if (!handshake_done_ || SSL_in_init(ssl_)) return TlsStatus::ok;
  clear_stale_errors();
  int ret = SSL_shutdown(ssl_);
  if (ret >= 0) return TlsStatus::ok;  // 0: ours sent, the peer's not seen yet, which we don't wait for
  return result(ret, "shutdown");
}

size_t TlsEngine::take_ciphertext(std::string& out) {
  return buffers_.take_output([&out](Slice s) { out.append(s.data(), s.size()); });
}

std::string_view TlsEngine::sni() const {
  const char* name = ssl_ ? SSL_get_servername(ssl_, TLSEXT_NAMETYPE_host_name) : nullptr;
  return name ? std::string_view(name) : std::string_view();
}

std::string_view TlsEngine::alpn() const {
  const unsigned char* data = nullptr;
  unsigned int len = 0;
  if (ssl_) SSL_get0_alpn_selected(ssl_, &data, &len);
  return data ? std::string_view(reinterpret_cast<const char*>(data), len) : std::string_view();
}

std::string_view TlsEngine::protocol() const {
  return (ssl_ && handshake_done_) ? std::string_view(SSL_get_version(ssl_)) : std::string_view();
}

std::string_view TlsEngine::cipher() const {
  const SSL_CIPHER* c = ssl_ ? SSL_get_current_cipher(ssl_) : nullptr;
  const char* name = c ? SSL_CIPHER_get_name(c) : nullptr;
  return name ? std::string_view(name) : std::string_view();
}

bool TlsEngine::session_reused() const { return ssl_ && SSL_session_reused(ssl_) == 1; }

}  // namespace sprayer::proxy
