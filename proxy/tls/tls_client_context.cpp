// Loading is all-or-nothing and names the file or setting at fault; no OpenSSL error is left
// in the queue for a later SSL_get_error to mistake as its own.
#include "proxy/tls/tls_client_context.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "proxy/tls/tls_context.h"
#include "proxy/tls/tls_ticket_keys.h"

namespace sprayer::proxy {

namespace {

bool is_ip_literal(const std::string& host) {
  unsigned char buf[sizeof(in6_addr)];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

int sink_index() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

bool readable(const std::string& path, std::string& error) {
  std::string content;
  if (!read_small_file(path, content, error)) return false;
  return true;
}

}  // namespace

TlsClientContext::~TlsClientContext() { SSL_CTX_free(ctx_); }

TlsClientLoadResult TlsClientContext::load(const TlsClientSettings& settings) {
  TlsClientLoadResult result;
  std::string& error = result.error;
  ERR_clear_error();
  std::unique_ptr<TlsClientContext> self(new TlsClientContext(settings));
  if (settings.min_version != "1.2" && settings.min_version != "1.3") {
    error = "min_version: must be \"1.2\" or \"1.3\"";
    return result;
  }
  if (settings.client_cert.empty() != settings.client_key.empty()) {
    error = "client_cert and client_key go together";
    return result;
  }
  if (!self->bio_method_.ok() || sink_index() < 0) {
    error = "out of memory";
    return result;
  }
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx) {
    error = "cannot create an SSL_CTX (" + openssl_reason() + ")";
    return result;
  }
  self->ctx_ = ctx;
  int min = settings.min_version == "1.3" ? TLS1_3_VERSION : TLS1_2_VERSION;
  SSL_CTX_set_min_proto_version(ctx, min);
  SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);  // pooled idle connections stay small
  // Sessions live in each worker's pool for the server, not in OpenSSL's (locked) cache.
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(ctx, &TlsClientContext::on_new_session);

  if (settings.verify) {
    if (!settings.ca_file.empty()) {
      if (!readable(settings.ca_file, error)) return result;
      if (SSL_CTX_load_verify_file(ctx, settings.ca_file.c_str()) != 1) {
        error = settings.ca_file + ": no usable CA certificate (" + openssl_reason() + ")";
        return result;
      }
    } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
      error = "cannot load the system CA store (" + openssl_reason() + ")";
      return result;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  } else {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  }
  if (!settings.client_cert.empty()) {
    if (!readable(settings.client_cert, error) || !readable(settings.client_key, error)) return result;
    if (SSL_CTX_use_certificate_chain_file(ctx, settings.client_cert.c_str()) != 1) {
      error = settings.client_cert + ": no usable PEM certificate (" + openssl_reason() + ")";
      return result;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, settings.client_key.c_str(), SSL_FILETYPE_PEM) != 1) {
      error = settings.client_key + ": no usable PEM private key (" + openssl_reason() + ")";
      return result;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
      error = settings.client_key + ": private key does not match " + settings.client_cert;
      ERR_clear_error();
      return result;
    }
  }
  self->verify_name_ = settings.sni.empty() ? settings.host : settings.sni;
  self->verify_ip_ = is_ip_literal(self->verify_name_);
  // RFC 6066 3: literal IP addresses are not permitted in server_name.
  self->sni_ = self->verify_ip_ ? std::string() : self->verify_name_;
  ERR_clear_error();
  result.context = std::shared_ptr<const TlsClientContext>(self.release());
  return result;
}

SSL* TlsClientContext::new_ssl(SSL_SESSION* session) const {
  ERR_clear_error();
  SSL* ssl = SSL_new(ctx_);
  if (!ssl) return nullptr;
  SSL_set_connect_state(ssl);
  bool ok = true;
  if (!sni_.empty()) ok = SSL_set_tlsext_host_name(ssl, sni_.c_str()) == 1;
  if (ok && settings_.verify) {
    if (verify_ip_)
      ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), verify_name_.c_str()) == 1;
    else
      ok = SSL_set1_host(ssl, verify_name_.c_str()) == 1;
  }
  if (ok && session) ok = SSL_set_session(ssl, session) == 1;
  if (!ok) {
    SSL_free(ssl);
    ERR_clear_error();
    return nullptr;
  }
  return ssl;
}

void TlsClientContext::set_session_sink(SSL* ssl, SessionSink sink, void* owner) {
  SSL_set_ex_data(ssl, sink_index(), reinterpret_cast<void*>(sink));
  SSL_set_app_data(ssl, owner);
}

int TlsClientContext::on_new_session(SSL* ssl, SSL_SESSION* session) noexcept {
  auto sink = reinterpret_cast<SessionSink>(SSL_get_ex_data(ssl, sink_index()));
  void* owner = SSL_get_app_data(ssl);
  if (!sink || !owner) return 0;  // not kept: OpenSSL frees it
  sink(owner, session);
  return 1;  // the sink owns the reference
}

}  // namespace sprayer::proxy
