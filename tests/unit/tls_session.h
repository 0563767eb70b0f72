// Test helpers for the TLS units: a test PKI made with the OpenSSL API in a temporary
// directory, standard settings, and a Session that drives a server TlsEngine against an
// OpenSSL client over memory BIOs. Shared by the TLS tests and the stream writer's test.
#pragma once

#include <doctest/doctest.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <algorithm>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>
#include "proxy/buffer_pool.h"
#include "proxy/tls/tls_context.h"
#include "proxy/tls/tls_engine.h"

namespace sprayer::test::tls {

using namespace sprayer::proxy;
using Clock = std::chrono::system_clock;

// ---- test PKI ----------------------------------------------------------------------------

inline void write_file(const std::string& path, std::string_view data) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  REQUIRE(f);
  REQUIRE(std::fwrite(data.data(), 1, data.size(), f) == data.size());
  std::fclose(f);
}

struct Pki {
  std::string dir;
  std::string ca_bundle;  // both CAs, for clients
  std::string rsa_key, ec_key, ec_other_key;
  std::string wild_rsa, wild_ec, pool1_rsa, expired_rsa, future_rsa, wild_rsa_again;

  Pki() {
    char tmpl[] = "/tmp/sprayer-tls-test-XXXXXX";
    REQUIRE(mkdtemp(tmpl));
    dir = tmpl;
    EVP_PKEY* ca_rsa_key = EVP_RSA_gen(2048);
    EVP_PKEY* ca_ec_key = EVP_EC_gen("P-256");
    EVP_PKEY* leaf_rsa = EVP_RSA_gen(2048);
    EVP_PKEY* leaf_ec = EVP_EC_gen("P-256");
    EVP_PKEY* other_ec = EVP_EC_gen("P-256");
    REQUIRE((ca_rsa_key && ca_ec_key && leaf_rsa && leaf_ec && other_ec));

    X509* ca_rsa = make_cert(ca_rsa_key, "Test RSA CA", nullptr, nullptr, ca_rsa_key, -2, 3650, true);
    X509* ca_ec = make_cert(ca_ec_key, "Test EC CA", nullptr, nullptr, ca_ec_key, -2, 3650, true);
    ca_bundle = dir + "/ca.pem";
    write_pem(ca_bundle, {ca_rsa, ca_ec}, nullptr);

    rsa_key = dir + "/leaf-rsa.key";
    ec_key = dir + "/leaf-ec.key";
    ec_other_key = dir + "/other-ec.key";
    write_pem(rsa_key, {}, leaf_rsa);
    write_pem(ec_key, {}, leaf_ec);
    write_pem(ec_other_key, {}, other_ec);

    const char* wild_san = "DNS:*.example.com,DNS:example.com";
    wild_rsa = leaf("wild-rsa", leaf_rsa, "*.example.com", wild_san, ca_rsa, ca_rsa_key, -1, 30);
    wild_ec = leaf("wild-ec", leaf_ec, "*.example.com", wild_san, ca_ec, ca_ec_key, -1, 30);
    pool1_rsa = leaf("pool1-rsa", leaf_rsa, "pool1.example.com", "DNS:pool1.example.com", ca_rsa, ca_rsa_key, -1, 30);
    expired_rsa = leaf("expired", leaf_rsa, "old.example.com", "DNS:old.example.com", ca_rsa, ca_rsa_key, -30, -1);
    future_rsa = leaf("future", leaf_rsa, "new.example.com", "DNS:new.example.com", ca_rsa, ca_rsa_key, 1, 30);
    wild_rsa_again = leaf("wild-rsa-2", leaf_rsa, "Renewed", wild_san, ca_rsa, ca_rsa_key, -1, 60);

    X509_free(ca_rsa);
    X509_free(ca_ec);
    for (EVP_PKEY* k : {ca_rsa_key, ca_ec_key, leaf_rsa, leaf_ec, other_ec}) EVP_PKEY_free(k);
  }
  ~Pki() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }

  std::string leaf(const char* name, EVP_PKEY* key, const char* cn, const char* san, X509* ca, EVP_PKEY* ca_key,
                   long from_days, long to_days) {
    X509* cert = make_cert(key, cn, san, ca, ca_key, from_days, to_days, false);
    std::string path = dir + "/" + name + ".pem";
    write_pem(path, {cert, ca}, nullptr);  // leaf, then the chain
    X509_free(cert);
    return path;
  }

  static X509* make_cert(EVP_PKEY* key, const char* cn, const char* san, X509* issuer, EVP_PKEY* issuer_key,
                         long from_days, long to_days, bool ca) {
    static long serial = 1;
    X509* x = X509_new();
    REQUIRE(x);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    std::time_t now = std::time(nullptr);
    X509_time_adj_ex(X509_getm_notBefore(x), int(from_days), 0, &now);
    X509_time_adj_ex(X509_getm_notAfter(x), int(to_days), 0, &now);
    X509_set_pubkey(x, key);
    X509_NAME* name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(cn), -1, -1, 0);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name);
    X509V3_CTX v3;
    X509V3_set_ctx(&v3, issuer ? issuer : x, x, nullptr, nullptr, 0);
    auto add = [&](int nid, const char* value) {
      X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &v3, nid, value);
      REQUIRE(ext);
      X509_add_ext(x, ext, -1);
      X509_EXTENSION_free(ext);
    };
    add(NID_subject_key_identifier, "hash");
    if (ca) {
      add(NID_basic_constraints, "critical,CA:TRUE");
      add(NID_key_usage, "critical,keyCertSign,cRLSign");
    } else {
      add(NID_authority_key_identifier, "keyid");
      add(NID_basic_constraints, "critical,CA:FALSE");
      add(NID_ext_key_usage, "serverAuth");
      if (san) add(NID_subject_alt_name, san);
    }
    REQUIRE(X509_sign(x, issuer_key, EVP_sha256()) > 0);
    return x;
  }

  static void write_pem(const std::string& path, std::initializer_list<X509*> certs, EVP_PKEY* key) {
    BIO* bio = BIO_new_file(path.c_str(), "w");
    REQUIRE(bio);
    for (X509* c : certs) PEM_write_bio_X509(bio, c);
    if (key) PEM_write_bio_PrivateKey(bio, key, nullptr, nullptr, 0, nullptr, nullptr);
    BIO_free(bio);
  }
};

inline const Pki& pki() {
  static Pki instance;  // RSA key generation is slow: once per test run
  return instance;
}

inline TlsSettings standard_settings() {
  TlsSettings s;
  s.certificates = {{pki().wild_rsa, pki().rsa_key}, {pki().wild_ec, pki().ec_key}, {pki().pool1_rsa, pki().rsa_key}};
  return s;
}

inline std::shared_ptr<const TlsContext> load_ok(const TlsSettings& settings, const TlsContext* previous = nullptr) {
  TlsLoadResult r = TlsContext::load(settings, Clock::now(), previous);
  INFO(r.error);
  REQUIRE(r.ok());
  return r.context;
}

inline std::string load_error(const TlsSettings& settings, Clock::time_point now = Clock::now()) {
  TlsLoadResult r = TlsContext::load(settings, now);
  CHECK_FALSE(r.ok());
  return r.error;
}

inline bool contains(std::string_view hay, std::string_view needle) { return hay.find(needle) != std::string_view::npos; }

// ---- an OpenSSL client on memory BIOs ------------------------------------------------------

struct ClientOptions {
  std::string sni{};
  int min_version = TLS1_2_VERSION;
  int max_version = TLS1_3_VERSION;
  std::string sigalgs{};  // restrict the certificate types the client accepts (TLS 1.3)
  std::string ciphers{};  // TLS 1.2 list
  std::string suites{};   // TLS 1.3 list
  std::vector<std::string> alpn{"http/1.1"};
  bool verify = true;  // chain to the test CAs and name == sni
  bool no_ticket = false;
  SSL_SESSION* session = nullptr;
  uint8_t max_fragment = 0;  // TLSEXT_max_fragment_length_512..4096 asks for RFC 6066 records
};

struct Client {
  SSL_CTX* ctx = nullptr;
  SSL* ssl = nullptr;
  BIO* in = nullptr;   // server → client
  BIO* out = nullptr;  // client → server
  bool failed = false;
  std::string error;
  std::string received;
  std::string client_secret, server_secret;  // TLS 1.3 application traffic secrets, from the key log

  explicit Client(const ClientOptions& o) {
    ctx = SSL_CTX_new(TLS_client_method());
    REQUIRE(ctx);
    if (o.min_version < TLS1_2_VERSION) SSL_CTX_set_security_level(ctx, 0);  // let it offer old versions
    SSL_CTX_set_min_proto_version(ctx, o.min_version);
    SSL_CTX_set_max_proto_version(ctx, o.max_version);
    if (!o.sigalgs.empty()) REQUIRE(SSL_CTX_set1_sigalgs_list(ctx, o.sigalgs.c_str()) == 1);
    if (!o.ciphers.empty()) REQUIRE(SSL_CTX_set_cipher_list(ctx, o.ciphers.c_str()) == 1);
    if (!o.suites.empty()) REQUIRE(SSL_CTX_set_ciphersuites(ctx, o.suites.c_str()) == 1);
    if (o.no_ticket) SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_keylog_callback(ctx, &Client::on_keylog);
    if (o.verify) {
      REQUIRE(SSL_CTX_load_verify_locations(ctx, pki().ca_bundle.c_str(), nullptr) == 1);
      SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
    }
    ssl = SSL_new(ctx);
    REQUIRE(ssl);
    in = BIO_new(BIO_s_mem());
    out = BIO_new(BIO_s_mem());
    SSL_set_bio(ssl, in, out);
    SSL_set_connect_state(ssl);
    if (!o.sni.empty()) {
      SSL_set_tlsext_host_name(ssl, o.sni.c_str());
      if (o.verify) SSL_set1_host(ssl, o.sni.c_str());
    }
    if (!o.alpn.empty()) {
      std::string wire;
      for (const std::string& p : o.alpn) wire += char(p.size()) + p;
      REQUIRE(SSL_set_alpn_protos(ssl, reinterpret_cast<const unsigned char*>(wire.data()), unsigned(wire.size())) ==
              0);
    }
    if (o.session) REQUIRE(SSL_set_session(ssl, o.session) == 1);
    if (o.max_fragment) REQUIRE(SSL_set_tlsext_max_fragment_length(ssl, o.max_fragment) == 1);
    SSL_set_app_data(ssl, this);
  }

  static void on_keylog(const SSL* ssl, const char* line) {
    auto* self = static_cast<Client*>(SSL_get_app_data(ssl));
    std::string text(line);
    std::string* out = nullptr;
    if (text.rfind("CLIENT_TRAFFIC_SECRET_0 ", 0) == 0) out = &self->client_secret;
    if (text.rfind("SERVER_TRAFFIC_SECRET_0 ", 0) == 0) out = &self->server_secret;
    if (!out) return;
    std::string hex = text.substr(text.rfind(' ') + 1);
    out->clear();
    for (size_t i = 0; i + 1 < hex.size(); i += 2) out->push_back(char(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  ~Client() {
    // Like the engine: a connection that simply ends keeps its session resumable.
    if (done() && !failed) SSL_set_shutdown(ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
  }

  bool done() const { return SSL_is_init_finished(ssl); }

  void note_error(int ret) {
    int code = SSL_get_error(ssl, ret);
    if (code == SSL_ERROR_WANT_READ || code == SSL_ERROR_WANT_WRITE || code == SSL_ERROR_ZERO_RETURN) return;
    failed = true;
    char buf[256];
    ERR_error_string_n(ERR_peek_error(), buf, sizeof buf);
    error = buf;
    ERR_clear_error();
  }

  // Handshake or read whatever arrived (this also takes TLS 1.3 tickets in).
  void step() {
    if (failed) return;
    ERR_clear_error();
    if (!done()) {
      int ret = SSL_do_handshake(ssl);
      if (ret != 1) return note_error(ret);
    }
    char buf[16384];
    for (;;) {
      size_t n = 0;
      ERR_clear_error();
      int ret = SSL_read_ex(ssl, buf, sizeof buf, &n);
      if (ret != 1) return note_error(ret);
      received.append(buf, n);
    }
  }

  void write(std::string_view data) {
    size_t n = 0;
    ERR_clear_error();
    REQUIRE(SSL_write_ex(ssl, data.data(), data.size(), &n) == 1);
    REQUIRE(n == data.size());
  }

  const X509* peer() const { return SSL_get0_peer_certificate(ssl); }
  std::string peer_cn() const {
    char buf[256] = {};
    if (peer()) X509_NAME_get_text_by_NID(X509_get_subject_name(peer()), NID_commonName, buf, sizeof buf);
    return buf;
  }
  int peer_key_type() const { return peer() ? EVP_PKEY_get_base_id(X509_get0_pubkey(peer())) : 0; }
  bool peer_covers(const char* host) const {
    return peer() && X509_check_host(const_cast<X509*>(peer()), host, 0, 0, nullptr) == 1;
  }
};

// A client and a server engine joined by memory; pump() moves bytes until both are quiet.
struct Session {
  BufferPool pool{16 * 1024, 64};
  Client client;
  TlsEngine server;
  TlsStatus server_status = TlsStatus::ok;
  std::string server_received;

  Session(std::shared_ptr<const TlsContext> ctx, const ClientOptions& o) : client(o), server(std::move(ctx), pool) {}

  void pump() {
    for (int round = 0; round < 1000; ++round) {
      bool moved = false;
      client.step();
      char buf[16384];
      int n;
      while ((n = BIO_read(client.out, buf, sizeof buf)) > 0) {
        server.feed_ciphertext(buf, size_t(n));
        moved = true;
      }
      for (;;) {
        Slice plain;
        server_status = server.read_plaintext(plain);
        if (server_status != TlsStatus::ok) break;
        server_received.append(plain.data(), plain.size());
      }
      server.take_ciphertext([&](Slice s) {
        REQUIRE(BIO_write(client.in, s.data(), int(s.size())) == int(s.size()));
        moved = true;
      });
      if (!moved) return;
    }
    FAIL("pump did not settle");
  }

  bool established() const { return client.done() && !client.failed && server.handshake_done(); }
};

inline SSL_SESSION* handshake_and_keep_session(std::shared_ptr<const TlsContext> ctx, ClientOptions o) {
  Session s(std::move(ctx), o);
  s.pump();
  REQUIRE(s.established());
  SSL_SESSION* session = SSL_get1_session(s.client.ssl);
  REQUIRE(session);
  REQUIRE(SSL_SESSION_is_resumable(session));
  return session;
}

inline std::string ticket_key_name(SSL_SESSION* session) {
  const unsigned char* ticket = nullptr;
  size_t len = 0;
  SSL_SESSION_get0_ticket(session, &ticket, &len);
  return len >= 16 ? std::string(reinterpret_cast<const char*>(ticket), 16) : std::string();
}

inline std::string binary_key(char seed) {
  std::string key(80, '\0');
  for (size_t i = 0; i < key.size(); ++i) key[i] = char(seed * 31 + i * 13 + 1);
  key[0] = '\x01';  // never mistaken for text
  return key;
}

}  // namespace sprayer::test::tls
