// Client-side TLS toward one pool server: CA and host-name verification, SNI, an optional
// client certificate. Loaded on the control thread, shared read-only by the workers (and the
// health checker), which create one SSL per upstream connection from it.
#pragma once

#include <openssl/types.h>

typedef struct ssl_session_st SSL_SESSION;  // <openssl/ssl.h> without the whole header

#include <memory>
#include <string>

#include "proxy/tls/tls_bio.h"

namespace sprayer::proxy {

struct TlsClientSettings {
  std::string server_id;    // for messages
  std::string host;         // the server's address host: default SNI and verified name
  std::string sni;          // empty = host (never sent when it is an IP address literal)
  bool verify = true;       // false: any certificate is accepted (a loud warning is logged)
  std::string ca_file;      // PEM bundle; empty = the system's default CA store
  std::string client_cert;  // PEM chain, leaf first; empty = no client certificate
  std::string client_key;
  std::string min_version = "1.2";  // "1.2" or "1.3"
};

class TlsClientContext;

struct TlsClientLoadResult {
  std::shared_ptr<const TlsClientContext> context;  // null when error is set
  std::string error;
  bool ok() const { return context != nullptr; }
};

class TlsClientContext {
 public:
  static TlsClientLoadResult load(const TlsClientSettings& settings);
  ~TlsClientContext();
  TlsClientContext(const TlsClientContext&) = delete;
  TlsClientContext& operator=(const TlsClientContext&) = delete;

  // A client SSL in connect state with SNI and the name to verify set; `session` (optional)
  // is offered for resumption. Null when out of memory.
  SSL* new_ssl(SSL_SESSION* session) const;
  const TlsBioMethod& bio_method() const { return bio_method_; }
  const TlsClientSettings& settings() const { return settings_; }
  // The name sent in SNI ("" = none) and the identity checked against the certificate.
  const std::string& sni() const { return sni_; }
  const std::string& verify_name() const { return verify_name_; }

  // Where a new session is handed when the server issues one (TLS 1.3: after the handshake,
  // maybe while the connection is idle). The receiver takes ownership of one reference.
  using SessionSink = void (*)(void* owner, SSL_SESSION* session);
  static void set_session_sink(SSL* ssl, SessionSink sink, void* owner);

 private:
  explicit TlsClientContext(const TlsClientSettings& settings) : settings_(settings) {}
  static int on_new_session(SSL* ssl, SSL_SESSION* session) noexcept;

  TlsClientSettings settings_;
  SSL_CTX* ctx_ = nullptr;
  std::string sni_;
  std::string verify_name_;
  bool verify_ip_ = false;
  TlsBioMethod bio_method_;
};

}  // namespace sprayer::proxy
