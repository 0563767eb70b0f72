// Server-side TLS for the downstream (client) side: the certificates chosen by SNI, the
// "intermediate" profile, ALPN, and session resumption shared by an active/standby pair.
#pragma once

#include <openssl/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/tls/tls_bio.h"
#include "proxy/tls/tls_names.h"
#include "proxy/tls/tls_ticket_keys.h"

namespace sprayer::proxy {

struct TlsCertificateFiles {
  std::string cert_chain_pem;  // leaf first, then intermediates
  std::string key_pem;         // unencrypted PEM private key (RSA, ECDSA, ...)
};

// Defaults follow the widely used "intermediate" compatibility profile (TLS 1.2 and 1.3,
// ECDHE with AES-GCM or ChaCha20-Poly1305 only), in our order unless the client prefers ChaCha20.
struct TlsSettings {
  // Certificates whose DNS names are the same set are served side by side (one per key type:
  // RSA and ECDSA for *.mycompany.com), picked by what the client supports. Different name sets
  // are picked by SNI. The first certificate's set is the default.
  std::vector<TlsCertificateFiles> certificates;
  std::string min_version = "1.2";  // "1.2" or "1.3"
  std::string ciphers =             // TLS 1.2 (OpenSSL cipher list)
      "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
      "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
      "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
  std::string ciphersuites =  // TLS 1.3
      "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";
  std::string groups = "X25519:P-256:P-384";
  std::vector<std::string> alpn{"http/1.1"};  // server preference order; empty = no ALPN
  // Unknown SNI name: false = serve the default certificate; true = fatal unrecognized_name
  // alert. A ClientHello without SNI (a device given an IP address) always gets the default.
  bool strict_sni = false;
  std::string ticket_key_file;  // see tls_ticket_keys.h; empty = random keys in memory
  uint32_t session_cache_size = 20480;  // server-side session-ID cache (TLS 1.2); 0 = off
  bool session_tickets = true;           // false: no tickets issued or accepted (TLS 1.2 and 1.3)
  std::chrono::seconds session_timeout{std::chrono::hours(24)};  // cache entries and tickets
  // TLS 1.3 connections leave OpenSSL after their handshake for sprayer's record layer
  // (tls_records.h), which keeps a parked connection about 12 KB smaller. false = OpenSSL's.
  bool own_records = true;
};

class TlsContext;

// The oldest queued OpenSSL error as short text ("no start line"); clears the queue.
std::string openssl_reason();

struct TlsLoadResult {
  std::shared_ptr<const TlsContext> context;  // null when error is set
  std::string error;                          // "<file>: <reason>" or "<setting>: <reason>"
  bool ok() const { return context != nullptr; }
};

// Immutable once loaded, shared by the workers of the process. Reload = load again and swap
// the shared_ptr; connections keep the context they started with. Only the ticket keys change
// in place (atomically), so rotation needs no reload.
class TlsContext {
 public:
  static constexpr size_t npos = TlsNameTable::npos;

  // `now` is checked against each leaf certificate's validity. `previous` (optional): a reload
  // without a ticket key file keeps the previous context's random keys, so tickets survive it.
  static TlsLoadResult load(const TlsSettings& settings, std::chrono::system_clock::time_point now,
                            const TlsContext* previous = nullptr);

  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  // A server-side SSL on the default certificate set; null when out of memory. TlsEngine uses
  // this; the SSL must not outlive the context (the engine holds a shared_ptr to it).
  SSL* new_ssl() const;
  // The SSL_CTX whose session cache and tickets every connection of this context uses (SNI
  // may switch the certificate's SSL_CTX, not this one).
  SSL_CTX* session_ctx() const { return sets_.front().ctx; }
  const TlsBioMethod& bio_method() const { return bio_method_; }

  // Rotation: re-reads ticket_key_file and swaps the keys in one step (safe while other
  // workers handshake). Without a file, a new random key encrypts and the previous one still
  // decrypts. On failure the keys in use stay and error says why.
  bool reload_ticket_keys(std::string& error) const;
  std::shared_ptr<const TlsTicketKeys> ticket_keys() const { return ticket_keys_.load(); }

  const TlsSettings& settings() const { return settings_; }
  size_t certificate_set_count() const { return sets_.size(); }
  // The set an SNI name selects, or npos (the default, set 0, is then served unless strict).
  size_t find_certificate_set(std::string_view host) const { return names_.find(host); }

 private:
  struct CertificateSet {
    SSL_CTX* ctx = nullptr;
    std::vector<std::string> names;  // sorted, lower case
    std::vector<int> key_types;      // EVP_PKEY base ids loaded into ctx
    std::vector<std::string> files;  // for messages
  };

  explicit TlsContext(const TlsSettings& settings) : settings_(settings) {}
  bool configure(SSL_CTX* ctx, std::string& error) const;
  bool add_certificate(const TlsCertificateFiles& files, std::chrono::system_clock::time_point now,
                       std::string& error);

  static int on_client_hello(SSL* ssl, int* alert, void* arg) noexcept;
  static int on_servername(SSL* ssl, int* alert, void* arg) noexcept;
  static int on_alpn(SSL* ssl, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                     unsigned int inlen, void* arg) noexcept;
  static int on_ticket_key(SSL* ssl, unsigned char* key_name, unsigned char* iv, EVP_CIPHER_CTX* cipher_ctx,
                           EVP_MAC_CTX* mac_ctx, int encrypt) noexcept;
  int select_certificate(SSL* ssl, int* alert) const;
  int ticket_key(unsigned char* key_name, unsigned char* iv, EVP_CIPHER_CTX* cipher_ctx, EVP_MAC_CTX* mac_ctx,
                 int encrypt) const;

  TlsSettings settings_;
  std::vector<CertificateSet> sets_;
  TlsNameTable names_;
  std::string alpn_wire_;  // length-prefixed protocol names, server preference order
  EVP_CIPHER* ticket_cipher_ = nullptr;
  TlsBioMethod bio_method_;
  mutable std::atomic<std::shared_ptr<const TlsTicketKeys>> ticket_keys_;
};

}  // namespace sprayer::proxy
