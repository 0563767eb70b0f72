// Every OpenSSL call is preceded by clear_stale_errors(): SSL_get_error() consults the thread's
// error queue, and a stale entry from another connection on this worker would fail this one.
#include "proxy/tls/tls_engine.h"

#include <openssl/err.h>
#include <openssl/crypto.h>
#include <openssl/ssl.h>

#include <algorithm>
#include <cstring>
#include <new>

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

// Alert descriptions (RFC 8446 6).
constexpr uint8_t kUnexpectedMessage = 10, kBadRecordMac = 20, kRecordOverflow = 22, kDecodeError = 50,
                  kIllegalParameter = 47, kUserCanceled = 90;

// Bounds on records that carry no application data, as OpenSSL's record layer has them:
// consecutive empty records, warnings (user_canceled) and KeyUpdates.
constexpr uint8_t kMaxEmptyRecords = 32, kMaxWarnings = 5, kMaxKeyUpdates = 32;

// A KeyUpdate message with update_not_requested (RFC 8446 4.6.3): type 24, length 1, value 0.
constexpr char kKeyUpdateNotRequested[5] = {24, 0, 0, 1, 0};

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
  // The own record layer needs whole records of plaintext to fit one pool chunk.
  if (ssl_ && context_->settings().own_records && pool_.chunk_size() >= TlsRecords::kMaxContent)
    SSL_set_ex_data(ssl_, ex_index(), this);
  // OpenSSL 3.0 answers every KeyUpdate and counts none: the engine counts them (below).
  if (ssl_) {
    SSL_set_msg_callback(ssl_, &TlsEngine::on_message);
    SSL_set_msg_callback_arg(ssl_, this);
  }
}

void TlsEngine::on_message(int write_p, int, int content_type, const void* buf, size_t len, SSL*,
                           void* arg) noexcept {
  constexpr uint8_t kKeyUpdate = 24;
  auto* self = static_cast<TlsEngine*>(arg);
  if (write_p == 0 && content_type == SSL3_RT_HANDSHAKE && len > 0 && self->handshake_done_ &&
      static_cast<const unsigned char*>(buf)[0] == kKeyUpdate && self->key_updates_ < 255)
    ++self->key_updates_;
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
  if (records_ && status_ == TlsStatus::error) evict_session();
}

void TlsEngine::evict_session() {
  // What SSL_free does for a failed connection, after the SSL is gone: the cache finds its
  // entry by the session id (a session not in the cache, e.g. a stateless ticket's, is none).
  if (session_id_len_ == 0 || !context_) return;
  SSL_SESSION* key = SSL_SESSION_new();
  // The cache compares the protocol version too.
  if (key && SSL_SESSION_set1_id(key, session_id_, session_id_len_) == 1 &&
      SSL_SESSION_set_protocol_version(key, TLS1_3_VERSION) == 1)
    SSL_CTX_remove_session(context_->session_ctx(), key);
  SSL_SESSION_free(key);
  ERR_clear_error();
}

bool TlsEngine::input_pending() const {
  return buffers_.input_bytes() > 0 || (ssl_ && SSL_pending(ssl_) > 0);
}

TlsEngine::Secrets::~Secrets() {
  OPENSSL_cleanse(client.data(), client.size());
  OPENSSL_cleanse(server.data(), server.size());
}

int TlsEngine::ex_index() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

void TlsEngine::on_keylog(const SSL* ssl, const char* line) noexcept {
  auto* self = static_cast<TlsEngine*>(SSL_get_ex_data(ssl, ex_index()));
  if (!self || !line) return;
  // NSS key log format: "<label> <client random, hex> <secret, hex>".
  std::string_view text(line);
  bool client = text.starts_with("CLIENT_TRAFFIC_SECRET_0 ");
  bool server = text.starts_with("SERVER_TRAFFIC_SECRET_0 ");
  if (!client && !server) return;
  std::string_view hex = text.substr(text.rfind(' ') + 1);
  if (hex.empty() || hex.size() % 2 != 0 || hex.size() > 2 * 48) return;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  try {
    if (!self->secrets_) self->secrets_ = std::make_unique<Secrets>();
    std::string& out = client ? self->secrets_->client : self->secrets_->server;
    out.clear();
    out.reserve(48);  // no reallocation leaves a copy behind
    for (size_t i = 0; i < hex.size(); i += 2) {
      int hi = nibble(hex[i]), lo = nibble(hex[i + 1]);
      if (hi < 0 || lo < 0) {
        self->secrets_.reset();  // unusable: the connection stays on OpenSSL
        return;
      }
      out.push_back(static_cast<char>(hi * 16 + lo));
    }
  } catch (const std::bad_alloc&) {
    self->secrets_.reset();
  }
}

bool TlsEngine::may_take_over() const {
  // An allow-list of negotiated state the own record layer implements; anything else stays on
  // OpenSSL. TLS 1.3 only, both secrets, nothing read ahead or half-written inside OpenSSL
  // (tickets written as whole records, no KeyUpdate of its own pending), no record size
  // negotiated (max_fragment_length, RFC 6066: OpenSSL honours it, TlsRecords would not;
  // OpenSSL 3.0 has no record_size_limit), and no early data (never enabled here; checked
  // anyway, its records would arrive under another key).
  if (!ssl_ || SSL_version(ssl_) != TLS1_3_VERSION || !secrets_ || secrets_->client.empty() ||
      secrets_->server.empty() || SSL_has_pending(ssl_) != 0 || !buffers_.output_at_record_boundary())
    return false;
  if (SSL_get_key_update_type(ssl_) != SSL_KEY_UPDATE_NONE) return false;
  if (SSL_get_early_data_status(ssl_) == SSL_EARLY_DATA_ACCEPTED) return false;
  const SSL_SESSION* session = SSL_get0_session(ssl_);
  if (!session || SSL_SESSION_get_max_fragment_length(session) != TLSEXT_max_fragment_length_DISABLED) return false;
  const SSL_CIPHER* cipher = SSL_get_current_cipher(ssl_);
  if (!cipher) return false;
  uint16_t id = SSL_CIPHER_get_protocol_id(cipher);
  return id == 0x1301 || id == 0x1302 || id == 0x1303;
}

void TlsEngine::take_over_records(uint64_t records_sent) {
  if (!may_take_over()) {
    secrets_.reset();
    return;
  }
  std::unique_ptr<Secrets> secrets = std::move(secrets_);
  const SSL_CIPHER* cipher = SSL_get_current_cipher(ssl_);
  if (!cipher) return;
  std::string error;
  std::unique_ptr<TlsRecords> records =
      TlsRecords::create(SSL_CIPHER_get_protocol_id(cipher), secrets->client, secrets->server, records_sent, error);
  if (!records) return;
  try {
    if (const char* name = SSL_get_servername(ssl_, TLSEXT_NAMETYPE_host_name)) sni_ = name;
    const unsigned char* proto = nullptr;
    unsigned int proto_len = 0;
    SSL_get0_alpn_selected(ssl_, &proto, &proto_len);
    if (proto) alpn_.assign(reinterpret_cast<const char*>(proto), proto_len);
  } catch (const std::bad_alloc&) {
    return;
  }
  cipher_name_ = SSL_CIPHER_get_name(cipher);
  reused_ = SSL_session_reused(ssl_) == 1;
  unsigned int id_len = 0;
  const unsigned char* id = SSL_SESSION_get_id(SSL_get0_session(ssl_), &id_len);
  session_id_len_ = static_cast<uint8_t>(std::min<unsigned int>(id_len, sizeof session_id_));
  if (id) std::memcpy(session_id_, id, session_id_len_);
  // As in the destructor: a completed connection keeps its session in the cache.
  SSL_set_shutdown(ssl_, SSL_get_shutdown(ssl_) | SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
  SSL_free(ssl_);
  ssl_ = nullptr;
  records_ = std::move(records);
}

TlsStatus TlsEngine::fatal_alert(uint8_t description, std::string message) {
  const char alert[2] = {2, static_cast<char>(description)};  // fatal
  seal_record(TlsRecords::kAlert, alert, 2);
  return fail(std::move(message));
}

bool TlsEngine::seal_record(uint8_t type, const char* data, size_t len) {
  thread_local std::string sealed;  // one worker thread; at most one record
  if (close_sent_) return false;  // nothing follows our close_notify (RFC 8446 6.1)
  if ((key_update_due_ || records_->write_key_worn()) && type != TlsRecords::kHandshake) {
    if (!seal_record(TlsRecords::kHandshake, kKeyUpdateNotRequested, sizeof kKeyUpdateNotRequested) ||
        !records_->update_write_key())
      return false;
    key_update_due_ = false;
  }
  // Sealed straight into the output chunk; through a copy only when the record does not fit one.
  size_t need = TlsRecords::sealed_size(len);
  if (char* out = buffers_.output_space(need)) {
    size_t n = records_->seal(type, data, len, out);
    if (n == 0) return false;
    buffers_.commit_output(out, n);
    return true;
  }
  sealed.resize(need);
  size_t n = records_->seal(type, data, len, sealed.data());
  if (n == 0) return false;
  return buffers_.write_output(sealed.data(), n);
}

TlsStatus TlsEngine::write_records(const char* data, size_t len) {
  if (close_sent_) return fail("write: after close_notify");
  while (len > 0) {
    size_t n = std::min(len, TlsRecords::kMaxContent);
    if (!seal_record(TlsRecords::kApplicationData, data, n)) return fail("write: sealing failed");
    data += n;
    len -= n;
  }
  return TlsStatus::ok;
}

bool TlsEngine::handle_post_handshake(const char* data, size_t len) {
  // After the handshake a client may only send KeyUpdate (RFC 8446 4.6.3): no post-handshake
  // authentication is ever requested, and tickets go the other way.
  constexpr uint8_t kKeyUpdate = 24;
  constexpr size_t kMaxPending = 64;
  if (len == 0) {
    fatal_alert(kUnexpectedMessage, "read: empty handshake record");  // 5.1: never zero-length
    return false;
  }
  if (handshake_bytes_.size() + len > kMaxPending) {
    fatal_alert(kUnexpectedMessage, "read: unexpected post-handshake message");
    return false;
  }
  handshake_bytes_.append(data, len);
  while (handshake_bytes_.size() >= 4) {
    const auto* h = reinterpret_cast<const unsigned char*>(handshake_bytes_.data());
    size_t body = (size_t(h[1]) << 16) | (size_t(h[2]) << 8) | h[3];
    if (h[0] != kKeyUpdate) {
      fatal_alert(kUnexpectedMessage, "read: unexpected post-handshake message");
      return false;
    }
    if (body != 1) {
      fatal_alert(kDecodeError, "read: malformed KeyUpdate");
      return false;
    }
    if (handshake_bytes_.size() < 5) return true;  // the rest comes in the next record
    uint8_t requested = h[4];
    // A key change must end its record: nothing may follow under the old key.
    if (requested > 1 || handshake_bytes_.size() > 5) {
      fatal_alert(requested > 1 ? kIllegalParameter : kUnexpectedMessage, "read: malformed KeyUpdate");
      return false;
    }
    handshake_bytes_.clear();
    // Each costs a key derivation and nothing else does: a client that only rekeys is cut off.
    if (++key_updates_ > kMaxKeyUpdates) {
      fatal_alert(kUnexpectedMessage, "read: too many KeyUpdates without application data");
      return false;
    }
    if (!records_->update_read_key()) {
      fail("read: KeyUpdate failed");
      return false;
    }
    // Answered before the next application data record, once for all the requests received
    // since the last answer (4.6.3): a flood of requests costs no output at all.
    if (requested) key_update_due_ = true;
  }
  return true;
}

TlsStatus TlsEngine::read_records(Slice& out) {
  thread_local std::string record;  // ciphertext of one record; plaintext never lands here
  Chunk* chunk = nullptr;
  size_t filled = 0;
  while (status_ == TlsStatus::ok && buffers_.input_bytes() >= TlsRecords::kHeader) {
    unsigned char header[TlsRecords::kHeader];
    buffers_.peek_input(reinterpret_cast<char*>(header), sizeof header);
    size_t len = TlsRecords::record_length(header);
    if (len == 0) {
      size_t announced = (size_t(header[3]) << 8) | header[4];
      if (header[0] != TlsRecords::kApplicationData)
        fatal_alert(kUnexpectedMessage, "read: unprotected record after the handshake");
      else if (announced > TlsRecords::kMaxCiphertext)
        fatal_alert(kRecordOverflow, "read: record too long");
      else
        fatal_alert(kBadRecordMac, "read: record too short");  // no room for a tag and a type
      break;
    }
    if (buffers_.input_bytes() < len) break;
    // Decrypted straight into the chunk handed out: content, type and padding must fit.
    size_t sealed = len - TlsRecords::kHeader - TlsRecords::kTag;
    if (chunk && chunk->capacity - filled < sealed) break;
    record.resize(len);
    buffers_.read_input(record.data(), len);
    if (!chunk) chunk = pool_.acquire();
    if (!chunk) {
      fail("read: out of buffer memory");
      break;
    }
    uint8_t type = 0;
    size_t content_len = 0;
    char* content = chunk->data() + filled;
    TlsRecords::Open opened = TlsRecords::Open::bad_tag;
    if (sealed <= chunk->capacity - filled) {
      opened = records_->open_into(record.data(), len, content, type, content_len);
    } else {
      // A padded record larger than a small pool's chunk: opened in place, its content moved
      // into the chunk (it fits: content is at most 2^14), the rest wiped.
      opened = records_->open_into(record.data(), len, record.data() + TlsRecords::kHeader, type, content_len);
      if (opened == TlsRecords::Open::ok && content_len <= chunk->capacity - filled)
        std::memcpy(content, record.data() + TlsRecords::kHeader, content_len);
      else if (opened == TlsRecords::Open::ok)
        opened = TlsRecords::Open::overflow;
      OPENSSL_cleanse(record.data() + TlsRecords::kHeader, sealed);
    }
    if (opened != TlsRecords::Open::ok) {
      if (opened == TlsRecords::Open::no_content_type)
        fatal_alert(kUnexpectedMessage, "read: record without a content type");  // 5.4
      else if (opened == TlsRecords::Open::overflow)
        fatal_alert(kRecordOverflow, "read: record content over 2^14 bytes");  // 5.1
      else
        fatal_alert(kBadRecordMac, "read: decryption failed or bad record");
      break;
    }
    if (!handshake_bytes_.empty() && type != TlsRecords::kHandshake) {
      fatal_alert(kUnexpectedMessage, "read: handshake message interrupted");
      break;
    }
    if (type == TlsRecords::kApplicationData) {
      if (content_len == 0) {
        // Empty records carry nothing and cost a decryption each; OpenSSL allows 32 in a row.
        if (++empty_records_ > kMaxEmptyRecords) {
          fatal_alert(kUnexpectedMessage, "read: too many empty records");
          break;
        }
        continue;
      }
      empty_records_ = 0;
      key_updates_ = 0;
      warnings_ = 0;
      filled += content_len;
    } else if (type == TlsRecords::kAlert) {
      if (content_len != 2) {
        fatal_alert(kDecodeError, "read: malformed alert");
        break;
      }
      uint8_t description = static_cast<uint8_t>(content[1]);
      if (description == 0) {
        status_ = TlsStatus::closed;  // close_notify; the connection answers with its own
      } else if (description != kUserCanceled) {
        fail("read: the client sent alert " + std::to_string(description));
      } else if (++warnings_ > kMaxWarnings) {  // user_canceled is followed by close_notify
        fatal_alert(kUnexpectedMessage, "read: too many user_canceled alerts");
      }
    } else if (type == TlsRecords::kHandshake) {
      if (!handle_post_handshake(content, content_len)) break;
    } else {
      fatal_alert(kUnexpectedMessage, "read: unexpected record type " + std::to_string(type));
    }
  }
  if (filled > 0) {
    // Data first; a close or error seen after it is sticky and reported by the next call.
    out = Slice(chunk, chunk->data(), filled);
    BufferPool::unref(chunk);
    return TlsStatus::ok;
  }
  if (chunk) BufferPool::unref(chunk);
  return status_ == TlsStatus::ok ? TlsStatus::want_io : status_;
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
  if (!buffers_.push_input_copy(data, len)) return fail("read: out of buffer memory");
  return TlsStatus::ok;
}

TlsStatus TlsEngine::handshake() {
  if (status_ != TlsStatus::ok) return status_;
  if (handshake_done_) return TlsStatus::ok;
  clear_stale_errors();
  uint64_t records_before = buffers_.output_records();
  int ret = SSL_do_handshake(ssl_);
  if (ret == 1) {
    handshake_done_ = true;
    // The call that completes a server handshake reads the client's Finished and writes only
    // session tickets, already under the server's application secret.
    if (secrets_) take_over_records(buffers_.output_records() - records_before);
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
  if (records_) return read_records(out);
  // The common wake-up with nothing to decrypt costs no chunk.
  if (buffers_.input_bytes() == 0 && SSL_has_pending(ssl_) == 0) return TlsStatus::want_io;

  Chunk* chunk = pool_.acquire();
  if (!chunk) return fail("read: out of buffer memory");
  size_t filled = 0;
  TlsStatus last = TlsStatus::want_io;
  while (filled < chunk->capacity) {
    size_t n = 0;
    clear_stale_errors();
    int ret = SSL_read_ex(ssl_, chunk->data() + filled, chunk->capacity - filled, &n);
    if (key_updates_ > kMaxKeyUpdates) {
      // OpenSSL has already answered each; it offers no way to send a fatal alert of ours.
      last = fail("read: too many KeyUpdates without application data");
      break;
    }
    if (ret != 1) {
      last = result(ret, "read");
      break;
    }
    key_updates_ = 0;
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
  if (records_) return write_records(data, len);
  size_t written = 0;
  clear_stale_errors();
  // Without SSL_MODE_ENABLE_PARTIAL_WRITE and with a BIO that never blocks, success means all.
  int ret = SSL_write_ex(ssl_, data, len, &written);
  if (ret == 1) return TlsStatus::ok;
  return result(ret, "write");
}

TlsStatus TlsEngine::shutdown() {
  if (status_ == TlsStatus::error) return status_;
  if (records_) {
    static const char close_notify[2] = {1, 0};  // warning, close_notify
    if (close_sent_) return TlsStatus::ok;
    if (!seal_record(TlsRecords::kAlert, close_notify, 2)) return fail("shutdown: sealing failed");
    close_sent_ = true;
    return TlsStatus::ok;
  }
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
  if (records_) return sni_;
  const char* name = ssl_ ? SSL_get_servername(ssl_, TLSEXT_NAMETYPE_host_name) : nullptr;
  return name ? std::string_view(name) : std::string_view();
}

std::string_view TlsEngine::alpn() const {
  if (records_) return alpn_;
  const unsigned char* data = nullptr;
  unsigned int len = 0;
  if (ssl_) SSL_get0_alpn_selected(ssl_, &data, &len);
  return data ? std::string_view(reinterpret_cast<const char*>(data), len) : std::string_view();
}

std::string_view TlsEngine::protocol() const {
  if (records_) return "TLSv1.3";
  return (ssl_ && handshake_done_) ? std::string_view(SSL_get_version(ssl_)) : std::string_view();
}

std::string_view TlsEngine::cipher() const {
  if (records_) return cipher_name_ ? std::string_view(cipher_name_) : std::string_view();
  const SSL_CIPHER* c = ssl_ ? SSL_get_current_cipher(ssl_) : nullptr;
  const char* name = c ? SSL_CIPHER_get_name(c) : nullptr;
  return name ? std::string_view(name) : std::string_view();
}

bool TlsEngine::session_reused() const { return records_ ? reused_ : ssl_ && SSL_session_reused(ssl_) == 1; }

void TlsEngine::rest() {
  if (!records_) return;
  records_->rest();
  buffers_.trim();
}

}  // namespace sprayer::proxy
