// TlsContext loading and a server TlsEngine driven against an OpenSSL client over memory BIOs:
// handshakes, SNI, key types, data, resumption across a fail-over, rotation. No network, no
// sleeps; the test PKI is made with the OpenSSL API into a temporary directory.
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

#include "tests/unit/tls_session.h"

using namespace sprayer::proxy;
using Clock = std::chrono::system_clock;

using namespace sprayer::test::tls;

// ---- loading -----------------------------------------------------------------------------

TEST_CASE("tls context: the standard set loads, RSA and ECDSA side by side, one set per name list") {
  auto ctx = load_ok(standard_settings());
  CHECK(ctx->certificate_set_count() == 2);
  CHECK(ctx->find_certificate_set("pool1.example.com") == 1);
  CHECK(ctx->find_certificate_set("anything.example.com") == 0);
  CHECK(ctx->find_certificate_set("example.com") == 0);
  CHECK(ctx->find_certificate_set("a.b.example.com") == TlsContext::npos);
  CHECK(ctx->ticket_keys()->keys.size() == 1);  // random, in memory
}

TEST_CASE("tls context: bad files and bad certificates are refused with the file and the reason") {
  TlsSettings s = standard_settings();

  s.certificates = {{pki().dir + "/missing.pem", pki().rsa_key}};
  CHECK(load_error(s) == pki().dir + "/missing.pem: cannot open: No such file or directory");

  s.certificates = {{pki().wild_rsa, pki().dir + "/missing.key"}};
  CHECK(load_error(s) == pki().dir + "/missing.key: cannot open: No such file or directory");

  std::string garbage = pki().dir + "/garbage.pem";
  write_file(garbage, "this is not PEM\n");
  s.certificates = {{garbage, pki().rsa_key}};
  std::string e = load_error(s);
  CHECK(contains(e, garbage + ": no PEM certificate found"));

  s.certificates = {{pki().wild_rsa, garbage}};
  CHECK(contains(load_error(s), garbage + ": no usable PEM private key"));

  s.certificates = {{pki().wild_ec, pki().ec_other_key}};
  CHECK(load_error(s) == pki().ec_other_key + ": private key does not match the certificate in " + pki().wild_ec);
  s.certificates = {{pki().wild_rsa, pki().ec_key}};  // other key type
  CHECK(contains(load_error(s), "does not match"));

  s.certificates = {{pki().expired_rsa, pki().rsa_key}};
  e = load_error(s);
  CHECK(contains(e, pki().expired_rsa + ": certificate expired (notAfter "));

  s.certificates = {{pki().future_rsa, pki().rsa_key}};
  CHECK(contains(load_error(s), pki().future_rsa + ": certificate is not yet valid (notBefore "));

  // "now" is injected: the same valid certificate is expired 90 days from now.
  s = standard_settings();
  CHECK(contains(load_error(s, Clock::now() + std::chrono::hours(24 * 90)), pki().wild_rsa + ": certificate expired"));
  CHECK(contains(load_error(s, Clock::now() - std::chrono::hours(24 * 10)), "not yet valid"));

  s.certificates.push_back({pki().wild_rsa_again, pki().rsa_key});
  CHECK(load_error(s) == pki().wild_rsa_again + ": a RSA certificate for the same names is already loaded from " +
                             pki().wild_rsa);
}

TEST_CASE("tls context: bad settings are refused by name") {
  TlsSettings s = standard_settings();
  s.min_version = "1.1";
  CHECK(contains(load_error(s), "min_version"));
  s = standard_settings();
  s.ciphers = "NOT-A-CIPHER";
  CHECK(contains(load_error(s), "ciphers: no usable cipher"));
  s = standard_settings();
  s.groups = "P-257";
  CHECK(contains(load_error(s), "groups:"));
  s = standard_settings();
  s.alpn = {""};
  CHECK(contains(load_error(s), "alpn:"));
  s = standard_settings();
  s.certificates.clear();
  CHECK(contains(load_error(s), "certificates:"));
  s = standard_settings();
  s.ticket_key_file = pki().dir + "/no-such-ticket.key";
  CHECK(load_error(s) == pki().dir + "/no-such-ticket.key: cannot open: No such file or directory");
}

// ---- handshakes ----------------------------------------------------------------------------

TEST_CASE("tls handshake: TLS 1.3 with ALPN http/1.1, details for the logs") {
  Session s(load_ok(standard_settings()), {.sni = "pool1.example.com"});
  s.pump();
  REQUIRE(s.established());
  CHECK(s.server_status == TlsStatus::want_io);
  CHECK(s.server.protocol() == "TLSv1.3");
  CHECK(s.server.alpn() == "http/1.1");
  CHECK(s.server.sni() == "pool1.example.com");
  CHECK(contains(s.server.cipher(), "TLS_"));
  CHECK_FALSE(s.server.session_reused());
  CHECK(s.server.error().empty());
  CHECK(SSL_get_verify_result(s.client.ssl) == X509_V_OK);
}

TEST_CASE("tls handshake: the server's suite order wins, except for a client that wants ChaCha20") {
  auto ctx = load_ok(standard_settings());
  Session aes(ctx, {.sni = "pool1.example.com", .suites = "TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256"});
  aes.pump();
  REQUIRE(aes.established());
  CHECK(aes.server.cipher() == "TLS_AES_128_GCM_SHA256");
  Session chacha(ctx, {.sni = "pool1.example.com",
                       .suites = "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256"});
  chacha.pump();
  REQUIRE(chacha.established());
  CHECK(chacha.server.cipher() == "TLS_CHACHA20_POLY1305_SHA256");
}

TEST_CASE("tls handshake: TLS 1.2 with ALPN and an ECDHE AEAD suite") {
  Session s(load_ok(standard_settings()), {.sni = "www.example.com", .max_version = TLS1_2_VERSION});
  s.pump();
  REQUIRE(s.established());
  CHECK(s.server.protocol() == "TLSv1.2");
  CHECK(s.server.alpn() == "http/1.1");
  CHECK(contains(s.server.cipher(), "ECDHE-"));
  CHECK((contains(s.server.cipher(), "GCM") || contains(s.server.cipher(), "CHACHA20")));
}

TEST_CASE("tls handshake: SNI picks the certificate: per-host, wildcard, default, any case") {
  auto ctx = load_ok(standard_settings());
  {
    Session s(ctx, {.sni = "pool1.example.com"});
    s.pump();
    REQUIRE(s.established());
    CHECK(s.client.peer_cn() == "pool1.example.com");
  }
  {
    Session s(ctx, {.sni = "POOL1.Example.COM"});
    s.pump();
    REQUIRE(s.established());
    CHECK(s.client.peer_cn() == "pool1.example.com");
  }
  {
    Session s(ctx, {.sni = "traveler.example.com"});
    s.pump();
    REQUIRE(s.established());
    CHECK(s.client.peer_cn() == "*.example.com");
    CHECK(s.client.peer_covers("traveler.example.com"));
  }
  {
    // Two labels under the wildcard: no match, so the default (also the wildcard) is served and
    // a verifying client refuses it.
    Session s(ctx, {.sni = "a.b.example.com", .verify = false});
    s.pump();
    REQUIRE(s.established());
    CHECK(s.client.peer_cn() == "*.example.com");
    CHECK_FALSE(s.client.peer_covers("a.b.example.com"));
  }
  {
    Session s(ctx, {.sni = "a.b.example.com"});
    s.pump();
    CHECK(s.client.failed);
    CHECK(contains(s.client.error, "certificate verify failed"));
  }
  {
    Session s(ctx, {.verify = false});  // no SNI at all
    s.pump();
    REQUIRE(s.established());
    CHECK(s.server.sni().empty());
    CHECK(s.client.peer_cn() == "*.example.com");
  }
}

TEST_CASE("tls handshake: strict SNI refuses unknown names with unrecognized_name") {
  TlsSettings settings = standard_settings();
  settings.strict_sni = true;
  auto ctx = load_ok(settings);
  {
    Session s(ctx, {.sni = "intranet.other.com", .verify = false});
    s.pump();
    CHECK(s.client.failed);
    CHECK(contains(s.client.error, "unrecognized name"));
    CHECK(s.server_status == TlsStatus::error);
    CHECK(s.server.status() == TlsStatus::error);
    CHECK(s.server.error() == "handshake: callback failed (strict_sni: no certificate for \"intranet.other.com\")");
  }
  {
    Session s(ctx, {.sni = "pool1.example.com"});
    s.pump();
    CHECK(s.established());
  }
  {
    Session s(ctx, {.verify = false});  // no SNI: the default, even when strict
    s.pump();
    CHECK(s.established());
  }
}

TEST_CASE("tls handshake: ECDSA to an ECDSA-only client, RSA to an RSA-only one") {
  auto ctx = load_ok(standard_settings());
  const char* ecdsa_13 = "ECDSA+SHA256:ECDSA+SHA384";
  const char* rsa_13 = "RSA-PSS+SHA256:RSA-PSS+SHA384:RSA+SHA256";
  {
    Session s(ctx, {.sni = "www.example.com", .sigalgs = ecdsa_13});
    s.pump();
    REQUIRE(s.established());
    CHECK(s.client.peer_key_type() == EVP_PKEY_EC);
  }
  {
    Session s(ctx, {.sni = "www.example.com", .sigalgs = rsa_13});
    s.pump();
    REQUIRE(s.established());
    CHECK(s.client.peer_key_type() == EVP_PKEY_RSA);
  }
  {
    Session s(ctx, {.sni = "www.example.com", .max_version = TLS1_2_VERSION, .ciphers = "ECDHE-ECDSA-AES128-GCM-SHA256"});
    s.pump();
    REQUIRE(s.established());
    CHECK(s.client.peer_key_type() == EVP_PKEY_EC);
  }
  {
    Session s(ctx, {.sni = "www.example.com", .max_version = TLS1_2_VERSION, .ciphers = "ECDHE-RSA-AES256-GCM-SHA384"});
    s.pump();
    REQUIRE(s.established());
    CHECK(s.client.peer_key_type() == EVP_PKEY_RSA);
  }
  {
    // pool1 has only an RSA certificate: an RSA-only client gets it, ECDSA-only cannot connect.
    Session s(ctx, {.sni = "pool1.example.com", .sigalgs = rsa_13});
    s.pump();
    REQUIRE(s.established());
    CHECK(s.client.peer_cn() == "pool1.example.com");
  }
  {
    Session s(ctx, {.sni = "pool1.example.com", .sigalgs = ecdsa_13});
    s.pump();
    CHECK(s.client.failed);
    CHECK(s.server.status() == TlsStatus::error);
  }
}

TEST_CASE("tls handshake: old protocol versions, TLS 1.3-only and foreign ALPN are refused") {
  auto ctx = load_ok(standard_settings());
  {
    Session s(ctx, {.sni = "www.example.com", .min_version = TLS1_VERSION, .max_version = TLS1_1_VERSION});
    s.pump();
    CHECK(s.client.failed);
    CHECK(s.server.status() == TlsStatus::error);
    CHECK(contains(s.server.error(), "unsupported protocol"));
  }
  {
    TlsSettings settings = standard_settings();
    settings.min_version = "1.3";
    Session s(load_ok(settings), {.sni = "www.example.com", .max_version = TLS1_2_VERSION});
    s.pump();
    CHECK(s.client.failed);
    CHECK(s.server.status() == TlsStatus::error);
  }
  {
    Session s(ctx, {.sni = "www.example.com", .alpn = {"h2"}});
    s.pump();
    CHECK(s.client.failed);
    CHECK(contains(s.client.error, "no application protocol"));
    CHECK(s.server.error() == "handshake: no application protocol");
  }
  {
    Session s(ctx, {.sni = "www.example.com", .alpn = {"h2", "http/1.1"}});
    s.pump();
    REQUIRE(s.established());
    CHECK(s.server.alpn() == "http/1.1");
  }
  {
    Session s(ctx, {.sni = "www.example.com", .alpn = {}});
    s.pump();
    REQUIRE(s.established());
    CHECK(s.server.alpn().empty());
  }
}

// ---- data ------------------------------------------------------------------------------------

TEST_CASE("tls data: requests and responses both ways, 1 MB each, chunks all returned") {
  auto ctx = load_ok(standard_settings());
  for (int max_version : {TLS1_2_VERSION, TLS1_3_VERSION}) {
    CAPTURE(max_version);
    Session s(ctx, {.sni = "pool1.example.com", .max_version = max_version});
    CHECK(s.server.write_plaintext("too early") == TlsStatus::want_io);  // nothing taken before the handshake
    s.pump();
    REQUIRE(s.established());
    CHECK(s.pool.outstanding() == 0);  // idle: no chunk held

    s.client.write("GET /Microsoft-Server-ActiveSync HTTP/1.1\r\nHost: pool1.example.com\r\n\r\n");
    s.pump();
    CHECK(s.server_received == "GET /Microsoft-Server-ActiveSync HTTP/1.1\r\nHost: pool1.example.com\r\n\r\n");
    REQUIRE(s.server.write_plaintext("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n") == TlsStatus::ok);
    s.pump();
    CHECK(s.client.received == "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");

    std::string big(1 << 20, '\0');
    for (size_t i = 0; i < big.size(); ++i) big[i] = char((i * 2654435761u) >> 13);
    s.server_received.clear();
    s.client.received.clear();
    s.client.write(big);
    s.pump();
    CHECK(s.server_received.size() == big.size());
    CHECK(s.server_received == big);
    REQUIRE(s.server.write_plaintext(big) == TlsStatus::ok);
    CHECK(s.server.pending_ciphertext() > big.size());
    s.pump();
    CHECK(s.client.received.size() == big.size());
    CHECK(s.client.received == big);
    CHECK(s.pool.outstanding() == 0);
    CHECK(s.server.buffered_ciphertext_in() == 0);
  }
}

TEST_CASE("tls data: plaintext is delivered as pool slices the proxy can forward") {
  Session s(load_ok(standard_settings()), {.sni = "pool1.example.com"});
  s.pump();
  REQUIRE(s.established());
  s.client.write(std::string(40000, 'b'));
  char buf[65536];
  int n;
  while ((n = BIO_read(s.client.out, buf, sizeof buf)) > 0) {
    // As the connection does: the socket read lands in a chunk and the slice is fed as is.
    for (int off = 0; off < n;) {
      Chunk* chunk = s.pool.acquire();
      size_t len = std::min<size_t>(size_t(n - off), chunk->capacity);
      std::memcpy(chunk->data(), buf + off, len);
      s.server.feed_ciphertext(Slice(chunk, chunk->data(), len));
      BufferPool::unref(chunk);
      off += int(len);
    }
  }
  std::vector<Slice> pieces;
  Slice plain;
  while (s.server.read_plaintext(plain) == TlsStatus::ok) pieces.push_back(std::move(plain));
  size_t total = 0;
  for (const Slice& p : pieces) {
    CHECK(p.size() <= s.pool.chunk_size());
    total += p.size();
  }
  CHECK(total == 40000);
  CHECK(pieces.size() == 3);  // 16 KiB chunks
  CHECK(s.pool.outstanding() == pieces.size());  // ciphertext chunks already given back
  pieces.clear();
  CHECK(s.pool.outstanding() == 0);
}

// ---- the own TLS 1.3 record layer ----------------------------------------------------------

namespace {

// Requests and responses of growing size, up to several records each way.
void exchange_data(Session& s) {
  for (size_t size : {size_t(1), size_t(300), size_t(16384), size_t(16385), size_t(70000)}) {
    CAPTURE(size);
    std::string up(size, 'u'), down(size, 'd');
    up.back() = '!';
    s.server_received.clear();
    s.client.received.clear();
    s.client.write(up);
    s.pump();
    CHECK(s.server_received == up);
    REQUIRE(s.server.write_plaintext(down) == TlsStatus::ok);
    s.pump();
    CHECK(s.client.received == down);
  }
}

}  // namespace

TEST_CASE("tls records: a TLS 1.3 connection leaves OpenSSL after its handshake, for every suite") {
  auto ctx = load_ok(standard_settings());
  for (const char* suite : {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}) {
    CAPTURE(suite);
    Session s(ctx, {.sni = "pool1.example.com", .suites = suite});
    s.pump();
    REQUIRE(s.established());
    CHECK(s.server.own_records());
    CHECK(s.server.native_handle() == nullptr);
    CHECK(s.server.cipher() == suite);
    CHECK(s.server.protocol() == "TLSv1.3");
    CHECK(s.server.sni() == "pool1.example.com");
    CHECK(s.server.alpn() == "http/1.1");
    exchange_data(s);
    CHECK(s.pool.outstanding() == 0);
    // The tickets OpenSSL sent before it left count in the sequence: they were usable.
    SSL_SESSION* session = SSL_get1_session(s.client.ssl);
    REQUIRE(session);
    CHECK(SSL_SESSION_is_resumable(session));
    Session again(ctx, {.sni = "pool1.example.com", .suites = suite, .session = session});
    again.pump();
    REQUIRE(again.established());
    CHECK(again.server.session_reused());
    CHECK(again.server.own_records());
    exchange_data(again);
    SSL_SESSION_free(session);
  }
}

TEST_CASE("tls records: TLS 1.2, and record_layer openssl, stay on OpenSSL") {
  {
    Session s(load_ok(standard_settings()), {.sni = "pool1.example.com", .max_version = TLS1_2_VERSION});
    s.pump();
    REQUIRE(s.established());
    CHECK_FALSE(s.server.own_records());
    CHECK(s.server.native_handle() != nullptr);
    exchange_data(s);
  }
  {
    TlsSettings settings = standard_settings();
    settings.own_records = false;
    Session s(load_ok(settings), {.sni = "pool1.example.com"});
    s.pump();
    REQUIRE(s.established());
    CHECK_FALSE(s.server.own_records());
    CHECK(s.server.protocol() == "TLSv1.3");
    exchange_data(s);
  }
}

TEST_CASE("tls records: KeyUpdate from the client, answered when requested") {
  Session s(load_ok(standard_settings()), {.sni = "pool1.example.com"});
  s.pump();
  REQUIRE(s.established());
  REQUIRE(s.server.own_records());
  for (int type : {SSL_KEY_UPDATE_REQUESTED, SSL_KEY_UPDATE_NOT_REQUESTED, SSL_KEY_UPDATE_REQUESTED}) {
    CAPTURE(type);
    REQUIRE(SSL_key_update(s.client.ssl, type) == 1);
    s.client.write("after the update");  // the update goes out first, then this under the new key
    s.server_received.clear();
    s.client.received.clear();
    s.pump();
    CHECK(s.server_received == "after the update");
    CHECK(s.server.status() == TlsStatus::ok);
    REQUIRE(s.server.write_plaintext("answer") == TlsStatus::ok);
    s.pump();
    CHECK(s.client.received == "answer");
    CHECK_FALSE(s.client.failed);
  }
}

TEST_CASE("tls records: a tampered record fails the connection with bad_record_mac") {
  Session s(load_ok(standard_settings()), {.sni = "pool1.example.com"});
  s.pump();
  REQUIRE(s.established());
  REQUIRE(s.server.own_records());
  s.client.write("GET / HTTP/1.1\r\n\r\n");
  char buf[4096];
  int n = BIO_read(s.client.out, buf, sizeof buf);
  REQUIRE(n > 20);
  buf[n - 3] ^= 0x40;  // inside the tag
  s.server.feed_ciphertext(buf, size_t(n));
  Slice plain;
  CHECK(s.server.read_plaintext(plain) == TlsStatus::error);
  CHECK(plain.empty());
  CHECK(s.server.error().find("decryption failed") != std::string::npos);
  // The fatal alert reaches the client, sealed under the current key.
  std::string alert;
  s.server.take_ciphertext(alert);
  REQUIRE_FALSE(alert.empty());
  REQUIRE(BIO_write(s.client.in, alert.data(), int(alert.size())) == int(alert.size()));
  s.client.step();
  CHECK(s.client.failed);
  CHECK(s.client.error.find("bad record mac") != std::string::npos);
}

TEST_CASE("tls records: unprotected and oversized records are fatal; close_notify both ways") {
  auto ctx = load_ok(standard_settings());
  auto fresh = [&] {
    auto s = std::make_unique<Session>(ctx, ClientOptions{.sni = "pool1.example.com"});
    s->pump();
    REQUIRE(s->established());
    REQUIRE(s->server.own_records());
    return s;
  };
  Slice plain;
  {
    auto s = fresh();
    const char ccs[] = {20, 3, 3, 0, 1, 1};  // change_cipher_spec after the handshake
    s->server.feed_ciphertext(ccs, sizeof ccs);
    CHECK(s->server.read_plaintext(plain) == TlsStatus::error);
    CHECK(s->server.error().find("unprotected") != std::string::npos);
  }
  {
    auto s = fresh();
    const char big[] = {23, 3, 3, 0x41, 0x01};  // 2^14 + 257 bytes announced
    s->server.feed_ciphertext(big, sizeof big);
    CHECK(s->server.read_plaintext(plain) == TlsStatus::error);
    CHECK(s->server.error().find("too long") != std::string::npos);
  }
  {
    auto s = fresh();  // the client's close_notify
    REQUIRE(SSL_shutdown(s->client.ssl) == 0);
    s->pump();
    CHECK(s->server.status() == TlsStatus::closed);
    CHECK(s->server.shutdown() == TlsStatus::ok);
    s->pump();
    CHECK((SSL_get_shutdown(s->client.ssl) & SSL_RECEIVED_SHUTDOWN) != 0);
  }
}

TEST_CASE("tls close: close_notify both ways") {
  auto ctx = load_ok(standard_settings());
  {
    Session s(ctx, {.sni = "pool1.example.com"});
    s.pump();
    REQUIRE(s.established());
    CHECK(s.server.shutdown() == TlsStatus::ok);
    s.pump();
    CHECK((SSL_get_shutdown(s.client.ssl) & SSL_RECEIVED_SHUTDOWN) != 0);
  }
  {
    Session s(ctx, {.sni = "pool1.example.com"});
    s.pump();
    REQUIRE(s.established());
    s.client.write("last words");
    REQUIRE(SSL_shutdown(s.client.ssl) == 0);
    s.pump();
    CHECK(s.server_received == "last words");
    CHECK(s.server_status == TlsStatus::closed);
    CHECK(s.server.status() == TlsStatus::closed);
  }
  {
    Session s(ctx, {.sni = "pool1.example.com"});
    CHECK(s.server.shutdown() == TlsStatus::ok);  // before any handshake: nothing to send
    CHECK(s.server.pending_ciphertext() == 0);
  }
}

// ---- resumption ------------------------------------------------------------------------------

TEST_CASE("tls resumption: a ticket from the active member resumes on the standby") {
  // As `openssl rand -base64 80 > pair-ticket.key` writes it: base64 wrapped at 64 columns.
  std::string key_file = pki().dir + "/pair-ticket.key";
  std::string key = binary_key(1);
  unsigned char b64[200];
  int len = EVP_EncodeBlock(b64, reinterpret_cast<const unsigned char*>(key.data()), int(key.size()));
  std::string text(reinterpret_cast<const char*>(b64), size_t(len));
  write_file(key_file, text.substr(0, 64) + "\n" + text.substr(64) + "\n");
  TlsSettings settings = standard_settings();
  settings.ticket_key_file = key_file;
  auto active = load_ok(settings);
  auto standby = load_ok(settings);  // the other member: same file, separate process

  for (int max_version : {TLS1_2_VERSION, TLS1_3_VERSION}) {
    CAPTURE(max_version);
    SSL_SESSION* session = handshake_and_keep_session(active, {.sni = "pool1.example.com", .max_version = max_version});
    CHECK(ticket_key_name(session) == binary_key(1).substr(0, 16));
    {
      Session s(standby, {.sni = "pool1.example.com", .max_version = max_version, .session = session});
      s.pump();
      REQUIRE(s.established());
      CHECK(s.server.session_reused());
      CHECK(SSL_session_reused(s.client.ssl) == 1);
      CHECK(s.server.alpn() == "http/1.1");
    }
    {
      // A member with other keys cannot read the ticket: a full handshake, not a failure.
      TlsSettings other = standard_settings();
      Session s(load_ok(other), {.sni = "pool1.example.com", .max_version = max_version, .session = session});
      s.pump();
      REQUIRE(s.established());
      CHECK_FALSE(s.server.session_reused());
    }
    SSL_SESSION_free(session);
  }
}

TEST_CASE("tls resumption: rotation, the old key still decrypts and the new one encrypts") {
  std::string key_file = pki().dir + "/rotate-ticket.key";
  std::string k1 = binary_key(1), k2 = binary_key(2);
  write_file(key_file, k1);
  TlsSettings settings = standard_settings();
  settings.ticket_key_file = key_file;
  auto ctx = load_ok(settings);

  SSL_SESSION* old_session = handshake_and_keep_session(ctx, {.sni = "pool1.example.com"});
  CHECK(ticket_key_name(old_session) == k1.substr(0, 16));

  write_file(key_file, k2 + k1);  // new key first, the old one kept for decryption
  std::string error;
  REQUIRE(ctx->reload_ticket_keys(error));
  CHECK(ctx->ticket_keys()->keys.size() == 2);

  SSL_SESSION* renewed = nullptr;
  {
    Session s(ctx, {.sni = "pool1.example.com", .session = old_session});
    s.pump();
    REQUIRE(s.established());
    CHECK(s.server.session_reused());
    renewed = SSL_get1_session(s.client.ssl);
  }
  REQUIRE(renewed);
  CHECK(ticket_key_name(renewed) == k2.substr(0, 16));

  // A broken file leaves the keys in use alone.
  write_file(key_file, "garbage\n");
  CHECK_FALSE(ctx->reload_ticket_keys(error));
  CHECK(error == key_file + ": line 1: incomplete key at end of file");
  CHECK(ctx->ticket_keys()->keys.size() == 2);

  // k1 retired: its tickets fall back to a full handshake; k2's still resume.
  write_file(key_file, k2);
  REQUIRE(ctx->reload_ticket_keys(error));
  {
    Session s(ctx, {.sni = "pool1.example.com", .session = old_session});
    s.pump();
    REQUIRE(s.established());
    CHECK_FALSE(s.server.session_reused());
  }
  {
    Session s(ctx, {.sni = "pool1.example.com", .session = renewed});
    s.pump();
    REQUIRE(s.established());
    CHECK(s.server.session_reused());
  }
  SSL_SESSION_free(old_session);
  SSL_SESSION_free(renewed);
}

TEST_CASE("tls resumption: in-memory keys survive a reload and rotate on demand") {
  auto first = load_ok(standard_settings());
  SSL_SESSION* session = handshake_and_keep_session(first, {.sni = "pool1.example.com"});
  auto reloaded = load_ok(standard_settings(), first.get());
  {
    Session s(reloaded, {.sni = "pool1.example.com", .session = session});
    s.pump();
    REQUIRE(s.established());
    CHECK(s.server.session_reused());
  }
  std::string error;
  REQUIRE(reloaded->reload_ticket_keys(error));  // new random key, previous kept for decryption
  CHECK(reloaded->ticket_keys()->keys.size() == 2);
  {
    Session s(reloaded, {.sni = "pool1.example.com", .session = session});
    s.pump();
    REQUIRE(s.established());
    CHECK(s.server.session_reused());
  }
  SSL_SESSION_free(session);
}

TEST_CASE("tls resumption: session-ID cache for TLS 1.2 clients without tickets") {
  auto ctx = load_ok(standard_settings());
  ClientOptions o{.sni = "pool1.example.com", .max_version = TLS1_2_VERSION, .no_ticket = true};
  SSL_SESSION* session = handshake_and_keep_session(ctx, o);
  o.session = session;
  {
    Session s(ctx, o);
    s.pump();
    REQUIRE(s.established());
    CHECK(s.server.session_reused());
  }
  {
    // The cache is per process: the standby cannot resume it (tickets are what survive fail-over).
    Session s(load_ok(standard_settings()), o);
    s.pump();
    REQUIRE(s.established());
    CHECK_FALSE(s.server.session_reused());
  }
  {
    TlsSettings no_cache = standard_settings();
    no_cache.session_cache_size = 0;
    Session s(load_ok(no_cache), {.sni = "pool1.example.com", .max_version = TLS1_2_VERSION, .no_ticket = true});
    s.pump();
    REQUIRE(s.established());
    CHECK(SSL_SESSION_is_resumable(SSL_get0_session(s.client.ssl)) == 0);  // no session ID handed out
  }
  SSL_SESSION_free(session);
}

// ---- abuse -----------------------------------------------------------------------------------

TEST_CASE("tls abuse: client-initiated renegotiation is refused") {
  Session s(load_ok(standard_settings()), {.sni = "pool1.example.com", .max_version = TLS1_2_VERSION});
  s.pump();
  REQUIRE(s.established());
  REQUIRE(SSL_renegotiate(s.client.ssl) == 1);
  ERR_clear_error();
  CHECK(SSL_do_handshake(s.client.ssl) <= 0);  // the new ClientHello goes out; no answer yet
  char buf[4096];
  int n = BIO_read(s.client.out, buf, sizeof buf);
  REQUIRE(n > 0);
  s.server.feed_ciphertext(buf, size_t(n));
  // The server answers with a no_renegotiation warning and carries on; no new handshake flight.
  Slice plain;
  CHECK(s.server.read_plaintext(plain) == TlsStatus::want_io);
  CHECK(s.server.status() == TlsStatus::ok);
  CHECK(s.server.pending_ciphertext() > 0);
  CHECK(s.server.pending_ciphertext() < 64);  // one encrypted alert record, not ServerHello+Certificate
  s.pump();
  CHECK(SSL_renegotiate_pending(s.client.ssl) == 1);  // never completed
  CHECK(s.client.failed);                              // OpenSSL clients give up on a refusal
  CHECK(contains(s.client.error, "no renegotiation"));
}

TEST_CASE("tls abuse: garbage and plain HTTP fail cleanly with an error status") {
  auto ctx = load_ok(standard_settings());
  BufferPool pool(16 * 1024, 8);
  {
    TlsEngine engine(ctx, pool);
    std::string garbage(300, '\0');
    for (size_t i = 0; i < garbage.size(); ++i) garbage[i] = char(i * 37 + 11);
    CHECK_FALSE(TlsEngine::looks_like_http(garbage.data(), garbage.size()));
    engine.feed_ciphertext(garbage.data(), garbage.size());
    Slice out;
    CHECK(engine.read_plaintext(out) == TlsStatus::error);
    CHECK(out.empty());
    CHECK_FALSE(engine.error().empty());
    CHECK(engine.read_plaintext(out) == TlsStatus::error);  // sticky
    CHECK(engine.write_plaintext("x") == TlsStatus::error);
    CHECK(engine.feed_ciphertext("more", 4) == TlsStatus::error);
  }
  {
    TlsEngine engine(ctx, pool);
    std::string_view request = "GET / HTTP/1.1\r\nHost: pool1.example.com\r\n\r\n";
    CHECK(TlsEngine::looks_like_http(request.data(), request.size()));
    engine.feed_ciphertext(request.data(), request.size());
    CHECK(engine.handshake() == TlsStatus::error);
    CHECK(engine.error() == "handshake: http request");
  }
  {
    // A truncated, then corrupted, ClientHello.
    Session s(ctx, {.sni = "pool1.example.com"});
    s.client.step();
    char hello[4096];
    int n = BIO_read(s.client.out, hello, sizeof hello);
    REQUIRE(n > 100);
    s.server.feed_ciphertext(hello, 60);
    CHECK(s.server.handshake() == TlsStatus::want_io);
    hello[70] ^= 0x5a;
    hello[71] ^= 0xff;
    s.server.feed_ciphertext(hello + 60, size_t(n - 60));
    TlsStatus st = s.server.handshake();
    CHECK((st == TlsStatus::error || st == TlsStatus::want_io));
  }
  CHECK(pool.outstanding() == 0);
}

TEST_CASE("tls reload: a connection keeps the context it started with") {
  auto ctx = load_ok(standard_settings());
  Session s(ctx, {.sni = "pool1.example.com"});
  std::weak_ptr<const TlsContext> weak = ctx;
  ctx = load_ok(standard_settings());  // the swap a reload does
  CHECK_FALSE(weak.expired());         // still held by the engine
  s.pump();
  REQUIRE(s.established());
  s.client.write("ping");
  s.pump();
  CHECK(s.server_received == "ping");
}

// ---- client side (toward pool servers) -------------------------------------------------------

namespace {

struct KeptSession {
  SSL_SESSION* session = nullptr;
  int issued = 0;
  ~KeptSession() { SSL_SESSION_free(session); }
  static void sink(void* owner, SSL_SESSION* s) noexcept {
    auto* self = static_cast<KeptSession*>(owner);
    SSL_SESSION_free(self->session);
    self->session = s;
    ++self->issued;
  }
};

// A client engine and a server engine joined by memory.
struct EnginePair {
  BufferPool pool{16 * 1024, 64};
  TlsEngine client;
  TlsEngine server;
  TlsStatus client_status = TlsStatus::ok;
  std::string client_received, server_received;

  EnginePair(std::shared_ptr<const TlsClientContext> c, std::shared_ptr<const TlsContext> s, KeptSession* kept)
      : client(std::move(c), pool, kept ? kept->session : nullptr), server(std::move(s), pool) {
    if (kept && client.native_handle()) TlsClientContext::set_session_sink(client.native_handle(), &KeptSession::sink, kept);
  }

  void pump() {
    for (int round = 0; round < 100; ++round) {
      bool moved = false;
      client_status = client.handshake();
      for (;;) {
        Slice plain;
        TlsStatus st = client.read_plaintext(plain);
        if (st != TlsStatus::ok) {
          if (st != TlsStatus::want_io) client_status = st;
          break;
        }
        client_received.append(plain.data(), plain.size());
      }
      std::string bytes;
      client.take_ciphertext(bytes);
      if (!bytes.empty()) server.feed_ciphertext(bytes.data(), bytes.size()), moved = true;
      for (;;) {
        Slice plain;
        if (server.read_plaintext(plain) != TlsStatus::ok) break;
        server_received.append(plain.data(), plain.size());
      }
      bytes.clear();
      server.take_ciphertext(bytes);
      if (!bytes.empty()) client.feed_ciphertext(bytes.data(), bytes.size()), moved = true;
      if (!moved) return;
    }
    FAIL("pump did not settle");
  }
};

std::shared_ptr<const TlsClientContext> client_ok(TlsClientSettings s) {
  TlsClientLoadResult r = TlsClientContext::load(s);
  INFO(r.error);
  REQUIRE(r.ok());
  return r.context;
}

TlsClientSettings client_settings(std::string sni) {
  TlsClientSettings s;
  s.server_id = "pool1";
  s.host = "10.0.0.1";
  s.sni = std::move(sni);
  s.ca_file = pki().ca_bundle;
  return s;
}

}  // namespace

TEST_CASE("tls client: verifies chain and name, sends SNI, exchanges data, resumes with the kept session") {
  auto server_ctx = load_ok(standard_settings());
  auto client_ctx = client_ok(client_settings("pool1.example.com"));
  CHECK(client_ctx->sni() == "pool1.example.com");
  KeptSession kept;
  for (int max : {TLS1_3_VERSION, TLS1_2_VERSION}) {
    CAPTURE(max);
    SSL_SESSION_free(kept.session);
    kept.session = nullptr;
    for (int attempt = 0; attempt < 2; ++attempt) {
      EnginePair p(client_ctx, server_ctx, &kept);
      SSL_set_max_proto_version(p.client.native_handle(), max);
      p.pump();
      INFO(p.client.error());
      REQUIRE(p.client.handshake_done());
      CHECK(p.server.sni() == "pool1.example.com");
      CHECK(p.client.session_reused() == (attempt == 1));
      REQUIRE(p.client.write_plaintext("GET / HTTP/1.1\r\n\r\n") == TlsStatus::ok);
      REQUIRE(p.server.write_plaintext("HTTP/1.1 200 OK\r\n\r\n") == TlsStatus::ok);
      p.pump();
      CHECK(p.server_received == "GET / HTTP/1.1\r\n\r\n");
      // TLS 1.3 tickets arrive after the handshake; they are read without producing bytes.
      CHECK(p.client_received == "HTTP/1.1 200 OK\r\n\r\n");
      CHECK(kept.session != nullptr);
    }
  }
}

TEST_CASE("tls client: a wrong name, an unknown CA or an IP address not in the certificate fail the handshake") {
  auto server_ctx = load_ok(standard_settings());
  struct Case {
    TlsClientSettings settings;
    const char* reason;
  };
  TlsClientSettings wrong_name = client_settings("pool1.example.org");
  TlsClientSettings unknown_ca = client_settings("pool1.example.com");
  unknown_ca.ca_file = pki().wild_ec;  // a leaf, not the CA
  TlsClientSettings ip = client_settings("");
  ip.host = "127.0.0.1";
  for (const Case& c : {Case{wrong_name, "hostname mismatch"}, Case{unknown_ca, "certificate verify failed"},
                        Case{ip, "IP address mismatch"}}) {
    EnginePair p(client_ok(c.settings), server_ctx, nullptr);
    p.pump();
    INFO(c.reason, " / ", p.client.error());
    CHECK_FALSE(p.client.handshake_done());
    CHECK(p.client.status() == TlsStatus::error);
    CHECK(contains(p.client.error(), c.reason));
  }
  // Without verification the same server is accepted.
  TlsClientSettings off = client_settings("pool1.example.org");
  off.verify = false;
  EnginePair p(client_ok(off), server_ctx, nullptr);
  p.pump();
  CHECK(p.client.handshake_done());
}

TEST_CASE("tls client: IP literals are verified but never sent as SNI; bad settings are refused") {
  TlsClientSettings ip = client_settings("");
  ip.host = "127.0.0.1";
  CHECK(client_ok(ip)->sni().empty());
  CHECK(client_ok(ip)->verify_name() == "127.0.0.1");
  TlsClientSettings missing = client_settings("x");
  missing.ca_file = pki().dir + "/nope.pem";
  CHECK(contains(TlsClientContext::load(missing).error, "nope.pem"));
  TlsClientSettings half = client_settings("x");
  half.client_cert = pki().wild_ec;
  CHECK(contains(TlsClientContext::load(half).error, "client_key"));
  TlsClientSettings version = client_settings("x");
  version.min_version = "1.1";
  CHECK(contains(TlsClientContext::load(version).error, "min_version"));
}

TEST_CASE("tls resumption: a session made for one certificate's names is not resumed under another's") {
  // RFC 6066 3. pool1.example.com has its own certificate; www.example.com gets the wildcard.
  auto ctx = load_ok(standard_settings());
  for (int max_version : {TLS1_2_VERSION, TLS1_3_VERSION}) {
    for (bool no_ticket : {false, true}) {
      if (max_version == TLS1_3_VERSION && no_ticket) continue;  // 1.3 resumes by ticket only
      CAPTURE(max_version);
      CAPTURE(no_ticket);
      for (const char* first : {"pool1.example.com", "www.example.com"}) {
        CAPTURE(first);
        const char* other = std::string_view(first) == "www.example.com" ? "pool1.example.com" : "www.example.com";
        SSL_SESSION* session =
            handshake_and_keep_session(ctx, {.sni = first, .max_version = max_version, .no_ticket = no_ticket});
        {
          Session s(ctx, {.sni = other, .max_version = max_version, .no_ticket = no_ticket, .session = session});
          s.pump();
          REQUIRE(s.established());
          CHECK_FALSE(s.server.session_reused());
        }
        {
          Session s(ctx, {.sni = first, .max_version = max_version, .no_ticket = no_ticket, .session = session});
          s.pump();
          REQUIRE(s.established());
          CHECK(s.server.session_reused());  // the same name still resumes
        }
        {
          // Another name of the same certificate set resumes too (one wildcard certificate).
          if (std::string_view(first) == "www.example.com") {
            Session s(ctx, {.sni = "mail.example.com", .max_version = max_version, .no_ticket = no_ticket,
                            .session = session});
            s.pump();
            REQUIRE(s.established());
            CHECK(s.server.session_reused());
          }
        }
        SSL_SESSION_free(session);
      }
    }
  }
}
