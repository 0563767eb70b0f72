// The TLS state of one downstream connection: ciphertext in (from the socket), plaintext out
// (to the HTTP parser) and back. It does no I/O: the connection moves the bytes, so two engines
// (or an engine and a client SSL) can be driven against each other in memory.
#pragma once

#include <openssl/types.h>

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "proxy/buffer_pool.h"
#include "proxy/tls/tls_bio.h"
#include "proxy/tls/tls_client_context.h"
#include "proxy/tls/tls_context.h"
#include "proxy/tls/tls_records.h"

namespace sprayer::proxy {

enum class TlsStatus {
  ok,       // done (for reads: `out` holds data)
  want_io,  // nothing more until more ciphertext arrives; send what take_ciphertext() gives
  closed,   // the peer sent close_notify
  error,    // fatal; error() says why. A pending alert may still be worth sending.
};

const char* to_string(TlsStatus status);

// Driven by the connection, per socket read:
//   first bytes: looks_like_http() → answer 400 in plaintext and close;
//   feed_ciphertext(slice); while (read_plaintext(plain) == ok) parse(plain);
//   take_ciphertext([&](Slice s) { writer.add(std::move(s)); }); flush;
// and per response: write_plaintext(...), take_ciphertext(...), flush. An engine is used by
// one worker thread only; the TlsContext behind it is shared.
class TlsEngine {
 public:
  // Server side, on `context`'s default certificate (SNI may switch it during the handshake).
  // Chunks for ciphertext and plaintext come from `pool` (the worker's). If OpenSSL cannot
  // allocate, status() is error from the start.
  TlsEngine(std::shared_ptr<const TlsContext> context, BufferPool& pool);
  // Client side (toward a pool server): sends SNI, verifies the server as `context` says and
  // offers `session` (optional) for resumption. The first handshake() sends the ClientHello.
  TlsEngine(std::shared_ptr<const TlsClientContext> context, BufferPool& pool, SSL_SESSION* session);
  ~TlsEngine();
  TlsEngine(const TlsEngine&) = delete;
  TlsEngine& operator=(const TlsEngine&) = delete;

  // Plain HTTP sent to the TLS port: the first bytes are an upper-case method and a space (or a
  // prefix of that), while a TLS connection starts with a handshake record (0x16 0x03). Lets the
  // connection answer a readable 400 in plaintext instead of a TLS alert.
  static bool looks_like_http(const char* data, size_t len);

  // Ciphertext from the socket; the slice is held (not copied) until OpenSSL consumes it.
  // Call handshake() or read_plaintext() next.
  TlsStatus feed_ciphertext(Slice data);
  TlsStatus feed_ciphertext(const char* data, size_t len);  // copies into pool chunks

  // Advances the handshake with what was fed. ok = complete (see handshake_done()).
  TlsStatus handshake();

  // Decrypts into one pool chunk (up to its size); advances the handshake first if needed.
  // ok: `out` holds plaintext (call again for more); want_io: nothing decrypted yet; closed;
  // error. Call repeatedly until not ok, or stop early for back-pressure (the rest stays fed).
  TlsStatus read_plaintext(Slice& out);

  // Encrypts all of data (records go to the pending ciphertext). Before the handshake is done
  // it returns want_io and takes nothing; the caller retries after more input.
  TlsStatus write_plaintext(const char* data, size_t len);
  TlsStatus write_plaintext(std::string_view data) { return write_plaintext(data.data(), data.size()); }

  // Queues close_notify. ok also when the handshake never finished (nothing to close).
  TlsStatus shutdown();

  // Ciphertext to send: handshake flights, records, tickets, alerts. Check after EVERY call
  // above (a read can produce a reply, an error an alert). sink(Slice) gets each piece in order.
  size_t pending_ciphertext() const { return buffers_.output_bytes(); }
  template <class Sink>
  size_t take_ciphertext(Sink&& sink) {
    return buffers_.take_output(sink);
  }
  size_t take_ciphertext(std::string& out);  // appends a copy (tests, plaintext fallbacks)
  size_t buffered_ciphertext_in() const { return buffers_.input_bytes(); }
  // Input not yet handed out as plaintext: ciphertext not yet decrypted, or records OpenSSL
  // decrypted and holds. A connection that paused reading must drain this when it resumes.
  bool input_pending() const;

  bool handshake_done() const { return handshake_done_; }
  TlsStatus status() const { return status_; }  // sticky closed / error, else ok
  std::string_view error() const { return error_; }

  // For logs. Empty until known (or when the client sent none).
  std::string_view sni() const;
  std::string_view alpn() const;      // "http/1.1"
  std::string_view protocol() const;  // "TLSv1.3"
  std::string_view cipher() const;    // "TLS_AES_128_GCM_SHA256"
  bool session_reused() const;

  // A server connection on TLS 1.3 leaves OpenSSL once its handshake is done (unless the
  // listener says `record_layer: openssl`): records are then sealed and opened by TlsRecords
  // and the SSL object is freed. True from then on.
  bool own_records() const { return records_ != nullptr; }
  // The connection will wait long (a parked Ping): what the record layer and the buffers can
  // rebuild at the next record goes back (the cipher contexts, empty buffer lists). No-op while
  // OpenSSL still runs the connection.
  void rest();

  // Installed by TlsContext as the keylog callback: hands the engine of `ssl` its TLS 1.3
  // application traffic secrets.
  static void on_keylog(const SSL* ssl, const char* line) noexcept;

  const std::shared_ptr<const TlsContext>& context() const { return context_; }
  const std::shared_ptr<const TlsClientContext>& client_context() const { return client_context_; }
  SSL* native_handle() { return ssl_; }  // tests and diagnostics only; null once own_records()
  TlsRecords* records_for_test() { return records_.get(); }  // null unless own_records()

 private:
  TlsStatus result(int ret, const char* operation);
  TlsStatus fail(std::string message);
  TlsStatus ensure_handshake();

  void attach_bio(const TlsBioMethod& method);

  // The own record layer (server, TLS 1.3): taking over from OpenSSL, and the data path.
  struct Secrets {
    std::string client, server;
    ~Secrets();  // wipes both
  };
  static int ex_index();
  static void on_message(int write_p, int version, int content_type, const void* buf, size_t len, SSL* ssl,
                         void* arg) noexcept;
  bool may_take_over() const;
  void take_over_records(uint64_t records_sent);
  void evict_session();
  TlsStatus read_records(Slice& out);
  TlsStatus write_records(const char* data, size_t len);
  bool seal_record(uint8_t type, const char* data, size_t len);
  bool handle_post_handshake(const char* data, size_t len);
  TlsStatus fatal_alert(uint8_t description, std::string message);

  std::shared_ptr<const TlsContext> context_;  // keeps the SSL_CTXs alive (hot reload)
  std::shared_ptr<const TlsClientContext> client_context_;  // the same, client side
  BufferPool& pool_;
  TlsBioBuffers buffers_;
  SSL* ssl_ = nullptr;
  TlsStatus status_ = TlsStatus::ok;
  bool handshake_done_ = false;
  std::string error_;

  std::unique_ptr<Secrets> secrets_;     // during a TLS 1.3 handshake only
  std::unique_ptr<TlsRecords> records_;  // after it, instead of ssl_
  std::string handshake_bytes_;          // a post-handshake message split across records
  std::string sni_, alpn_;               // kept from the SSL for logs
  const char* cipher_name_ = nullptr;    // static in libssl
  bool reused_ = false;
  bool close_sent_ = false;
  bool key_update_due_ = false;  // the client asked for a KeyUpdate; answered before the next data
  uint8_t empty_records_ = 0;    // in a row; these three are reset by application data
  uint8_t warnings_ = 0;
  uint8_t key_updates_ = 0;
  uint8_t session_id_len_ = 0;   // the session's cache entry, evicted if the connection fails
  unsigned char session_id_[32] = {};
};

}  // namespace sprayer::proxy
