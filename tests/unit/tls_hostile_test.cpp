// The own TLS 1.3 record layer against a hostile client: records forged with the client's keys
// (a mirror TlsRecords made from the key log of a real OpenSSL client) reach every bound and
// alert of RFC 8446 section 5 and 6; the answers are opened by the same mirror. Also the
// take-over's allow-list (max_fragment_length) and what stays behind after a connection.
#include <doctest/doctest.h>
#include <openssl/ssl.h>

#include <cstring>
#include <memory>
#include <string>

#include "proxy/tls/tls_records.h"
#include "tls_session.h"

using namespace sprayer::proxy;
using namespace sprayer::test::tls;

namespace {

constexpr char kKeyUpdateRequested[5] = {24, 0, 0, 1, 1};
constexpr char kKeyUpdateNotRequested[5] = {24, 0, 0, 1, 0};

// An established own-records connection whose client is replaced by a forger: it seals records
// under the client's key and opens what the server sends.
struct Forged {
  Session s;
  std::unique_ptr<TlsRecords> mirror;  // writes as the client, reads the server
  struct Record {
    uint8_t type = 0;
    std::string content;
  };

  explicit Forged(std::shared_ptr<const TlsContext> ctx, ClientOptions o = {.sni = "pool1.example.com"})
      : s(std::move(ctx), o) {
    s.pump();
    REQUIRE(s.established());
    REQUIRE(s.server.own_records());
    uint16_t suite = SSL_CIPHER_get_protocol_id(SSL_get_current_cipher(s.client.ssl));
    std::string error;
    mirror = TlsRecords::create(suite, s.client.server_secret, s.client.client_secret, 0, error);
    REQUIRE_MESSAGE(mirror, error);
    // The server's tickets were sent (and read by the client) under its first key.
    mirror->set_sequence_for_test(s.server.records_for_test()->write_seq(), 0);
  }

  void send(uint8_t type, std::string_view inner, bool oversized = false) {
    std::string wire(TlsRecords::sealed_size(inner.size()), '\0');
    size_t n = oversized ? mirror->seal_oversized_for_test(type, inner.data(), inner.size(), wire.data())
                         : mirror->seal(type, inner.data(), inner.size(), wire.data());
    REQUIRE(n == wire.size());
    s.server.feed_ciphertext(wire.data(), n);
  }
  // Reads what the server makes of its input: plaintext appended, the status returned.
  TlsStatus read(std::string* plain = nullptr) {
    TlsStatus status;
    for (;;) {
      Slice out;
      status = s.server.read_plaintext(out);
      if (status != TlsStatus::ok) break;
      if (plain) plain->append(out.data(), out.size());
    }
    return status;
  }
  // Every record the server has sent since the last call, opened (following its KeyUpdates).
  std::vector<Record> answers() {
    std::string wire;
    s.server.take_ciphertext(wire);
    std::vector<Record> records;
    size_t at = 0;
    while (at + TlsRecords::kHeader <= wire.size()) {
      size_t len = TlsRecords::record_length(reinterpret_cast<const unsigned char*>(wire.data() + at));
      REQUIRE(len > 0);
      REQUIRE(at + len <= wire.size());
      Record r;
      char* content = nullptr;
      size_t content_len = 0;
      REQUIRE(mirror->open(wire.data() + at, len, r.type, content, content_len));
      r.content.assign(content, content_len);
      if (r.type == TlsRecords::kHandshake && r.content == std::string(kKeyUpdateNotRequested, 5))
        REQUIRE(mirror->update_read_key());
      records.push_back(std::move(r));
      at += len;
    }
    CHECK(at == wire.size());
    return records;
  }
  // The description of the fatal alert the server sent last, or -1.
  int alert() {
    int description = -1;
    for (const Record& r : answers())
      if (r.type == TlsRecords::kAlert && r.content.size() == 2 && r.content[0] == 2) description = uint8_t(r.content[1]);
    return description;
  }
};

std::shared_ptr<const TlsContext> context() {
  static auto ctx = load_ok(standard_settings());
  return ctx;
}

}  // namespace

TEST_CASE("tls hostile: KeyUpdate requests are answered once, before the next data, and capped") {
  Forged f(context());
  for (int i = 0; i < 32; ++i) {
    f.send(TlsRecords::kHandshake, std::string_view(kKeyUpdateRequested, 5));
    REQUIRE(f.mirror->update_write_key());  // the forger's next records go under its next key
  }
  CHECK(f.read() == TlsStatus::want_io);
  CHECK(f.s.server.pending_ciphertext() == 0);  // a flood of requests makes no output
  std::string plain;
  f.send(TlsRecords::kApplicationData, "GET / HTTP/1.1\r\n\r\n");
  CHECK(f.read(&plain) == TlsStatus::want_io);
  CHECK(plain == "GET / HTTP/1.1\r\n\r\n");
  REQUIRE(f.s.server.write_plaintext("answer") == TlsStatus::ok);
  auto records = f.answers();
  REQUIRE(records.size() == 2);  // one KeyUpdate covers all 32 requests, then the data
  CHECK(records[0].type == TlsRecords::kHandshake);
  CHECK(records[0].content == std::string(kKeyUpdateNotRequested, 5));
  CHECK(records[1].content == "answer");
  REQUIRE(f.s.server.write_plaintext("more") == TlsStatus::ok);
  records = f.answers();
  REQUIRE(records.size() == 1);
  CHECK(records[0].content == "more");

  // Application data resets the count; 33 in a row end the connection.
  for (int i = 0; i < 33; ++i) {
    f.send(TlsRecords::kHandshake, std::string_view(kKeyUpdateNotRequested, 5));
    REQUIRE(f.mirror->update_write_key());
  }
  CHECK(f.read() == TlsStatus::error);
  CHECK(contains(f.s.server.error(), "too many KeyUpdates"));
  CHECK(f.alert() == 10);  // unexpected_message
}

TEST_CASE("tls hostile: a KeyUpdate split across records is followed; two in one record are not") {
  {
    Forged f(context());
    f.send(TlsRecords::kHandshake, std::string_view(kKeyUpdateRequested, 3));
    f.send(TlsRecords::kHandshake, std::string_view(kKeyUpdateRequested + 3, 2));
    REQUIRE(f.mirror->update_write_key());
    std::string plain;
    f.send(TlsRecords::kApplicationData, "after");
    CHECK(f.read(&plain) == TlsStatus::want_io);
    CHECK(plain == "after");
    REQUIRE(f.s.server.write_plaintext("x") == TlsStatus::ok);
    auto records = f.answers();
    REQUIRE(records.size() == 2);
    CHECK(records[1].content == "x");
  }
  {
    Forged f(context());
    f.send(TlsRecords::kHandshake, std::string(kKeyUpdateRequested, 5) + std::string(kKeyUpdateRequested, 5));
    CHECK(f.read() == TlsStatus::error);
    CHECK(f.alert() == 10);
  }
  {
    Forged f(context());  // data in the middle of a handshake message
    f.send(TlsRecords::kHandshake, std::string_view(kKeyUpdateRequested, 2));
    f.send(TlsRecords::kApplicationData, "x");
    CHECK(f.read() == TlsStatus::error);
    CHECK(contains(f.s.server.error(), "interrupted"));
    CHECK(f.alert() == 10);
  }
}

TEST_CASE("tls hostile: empty records, empty handshake records and user_canceled are bounded like OpenSSL") {
  {
    Forged f(context());
    for (int i = 0; i < 32; ++i) f.send(TlsRecords::kApplicationData, "");
    f.send(TlsRecords::kApplicationData, "x");  // resets the count
    for (int i = 0; i < 32; ++i) f.send(TlsRecords::kApplicationData, "");
    std::string plain;
    CHECK(f.read(&plain) == TlsStatus::want_io);
    CHECK(plain == "x");
    f.send(TlsRecords::kApplicationData, "");
    CHECK(f.read() == TlsStatus::error);
    CHECK(contains(f.s.server.error(), "too many empty records"));
    CHECK(f.alert() == 10);
  }
  {
    Forged f(context());
    f.send(TlsRecords::kHandshake, "");
    CHECK(f.read() == TlsStatus::error);
    CHECK(contains(f.s.server.error(), "empty handshake record"));
    CHECK(f.alert() == 10);
  }
  {
    Forged f(context());
    const std::string user_canceled("\x01\x5a", 2);
    for (int i = 0; i < 5; ++i) f.send(TlsRecords::kAlert, user_canceled);
    CHECK(f.read() == TlsStatus::want_io);
    f.send(TlsRecords::kAlert, user_canceled);
    CHECK(f.read() == TlsStatus::error);
    CHECK(contains(f.s.server.error(), "user_canceled"));
    CHECK(f.alert() == 10);
  }
}

TEST_CASE("tls hostile: each malformed record gets the alert RFC 8446 names") {
  {
    Forged f(context());  // all-zero inner plaintext: no content type (5.4)
    f.send(0, std::string(20, '\0'));
    CHECK(f.read() == TlsStatus::error);
    CHECK(contains(f.s.server.error(), "without a content type"));
    CHECK(f.alert() == 10);  // unexpected_message
  }
  {
    Forged f(context());  // content over 2^14 (5.1)
    f.send(TlsRecords::kApplicationData, std::string(TlsRecords::kMaxContent + 1, 'x'), true);
    CHECK(f.read() == TlsStatus::error);
    CHECK(contains(f.s.server.error(), "over 2^14"));
    CHECK(f.alert() == 22);  // record_overflow
  }
  {
    Forged f(context());  // a ciphertext with no room for a tag and a type
    const char tiny[] = {23, 3, 3, 0, 10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    f.s.server.feed_ciphertext(tiny, sizeof tiny);
    CHECK(f.read() == TlsStatus::error);
    CHECK(contains(f.s.server.error(), "too short"));
    CHECK(f.alert() == 20);  // bad_record_mac
  }
  {
    Forged f(context());  // an alert of three bytes
    f.send(TlsRecords::kAlert, std::string("\x02\x28\x00", 3));
    CHECK(f.read() == TlsStatus::error);
    CHECK(f.alert() == 50);  // decode_error
  }
}

TEST_CASE("tls hostile: padding up to the record limit is removed, also past a 16 KiB chunk") {
  {
    Forged f(context());
    std::string content(16000, 'p');
    content.back() = '!';
    std::string inner = content + char(TlsRecords::kApplicationData) + std::string(200, '\0');
    f.send(0, inner);  // type 0 last: the real type and the zeros before it are the padding
    std::string most = content.substr(0, 100) + char(TlsRecords::kApplicationData) +
                       std::string(TlsRecords::kMaxCiphertext - TlsRecords::kTag - 101 - 1, '\0');
    f.send(0, most, true);  // 2^14 + 256 bytes of ciphertext, nearly all padding
    std::string plain;
    CHECK(f.read(&plain) == TlsStatus::want_io);
    CHECK(plain == content + content.substr(0, 100));
    CHECK(f.s.pool.outstanding() == 0);
  }
}

TEST_CASE("tls hostile: client alerts: a fatal one ends the connection without an answer; close_notify") {
  {
    Forged f(context());
    f.send(TlsRecords::kAlert, std::string("\x02\x28", 2));  // handshake_failure
    CHECK(f.read() == TlsStatus::error);
    CHECK(contains(f.s.server.error(), "alert 40"));
    CHECK(f.s.server.pending_ciphertext() == 0);
  }
  {
    Forged f(context());
    f.send(TlsRecords::kAlert, std::string("\x01\x5a", 2));  // user_canceled, then close_notify
    f.send(TlsRecords::kAlert, std::string("\x01\x00", 2));
    CHECK(f.read() == TlsStatus::closed);
    // The answer to a request is still allowed after the client's close_notify; ours ends it.
    REQUIRE(f.s.server.write_plaintext("last answer") == TlsStatus::ok);
    REQUIRE(f.s.server.shutdown() == TlsStatus::ok);
    auto records = f.answers();
    REQUIRE(records.size() == 2);
    CHECK(records[0].content == "last answer");
    CHECK(records[1].type == TlsRecords::kAlert);
    CHECK(records[1].content == std::string("\x01\x00", 2));
    // Nothing goes out after our close_notify.
    CHECK(f.s.server.write_plaintext("too late") == TlsStatus::error);
    CHECK(f.s.server.shutdown() != TlsStatus::ok);
    CHECK(f.s.server.pending_ciphertext() == 0);
  }
}

TEST_CASE("tls hostile: the write key is updated after 2^24 records, and the client follows") {
  Forged f(context());
  constexpr uint64_t kLimit = uint64_t(1) << 24;
  f.s.server.records_for_test()->set_sequence_for_test(0, kLimit - 1);
  f.mirror->set_sequence_for_test(kLimit - 1, 0);
  REQUIRE(f.s.server.write_plaintext("last under the first key") == TlsStatus::ok);
  REQUIRE(f.s.server.write_plaintext("first under the next") == TlsStatus::ok);
  auto records = f.answers();
  REQUIRE(records.size() == 3);
  CHECK(records[0].content == "last under the first key");
  CHECK(records[1].content == std::string(kKeyUpdateNotRequested, 5));
  CHECK(records[2].content == "first under the next");
  CHECK(f.s.server.records_for_test()->write_seq() == 1);
}

TEST_CASE("tls hostile: max_fragment_length keeps the connection on OpenSSL, which honours it both ways") {
  Session s(context(), {.sni = "pool1.example.com", .max_fragment = TLSEXT_max_fragment_length_512});
  s.pump();
  REQUIRE(s.established());
  CHECK_FALSE(s.server.own_records());
  std::string body(5000, 'b');
  REQUIRE(s.server.write_plaintext(body) == TlsStatus::ok);
  std::string wire;
  s.server.take_ciphertext(wire);
  // Every record the server sent fits the negotiated 512 bytes (plus type, tag and header).
  for (size_t at = 0; at + 5 <= wire.size();) {
    size_t len = (size_t(uint8_t(wire[at + 3])) << 8) | uint8_t(wire[at + 4]);
    CHECK(len <= 512 + 1 + 16);
    at += 5 + len;
  }
  REQUIRE(BIO_write(s.client.in, wire.data(), int(wire.size())) == int(wire.size()));
  s.pump();
  CHECK(s.client.received == body);
  CHECK_FALSE(s.client.failed);
  s.client.write(std::string(2000, 'u'));
  s.pump();
  CHECK(s.server_received == std::string(2000, 'u'));
  // Without the extension the same client is taken over.
  Session plain(context(), {.sni = "pool1.example.com"});
  plain.pump();
  CHECK(plain.server.own_records());
  // Early data is never enabled, so the take-over never has to handle it.
  CHECK(SSL_CTX_get_max_early_data(context()->session_ctx()) == 0);
}

TEST_CASE("tls hostile: a failed connection evicts its session from the cache, as OpenSSL does") {
  TlsSettings settings = standard_settings();
  auto ctx = load_ok(settings);
  // Stateful TLS 1.3 tickets put the session in the server's cache.
  SSL_CTX_set_options(ctx->session_ctx(), SSL_OP_NO_TICKET);
  SSL_CTX_set_num_tickets(ctx->session_ctx(), 1);
  long before = SSL_CTX_sess_number(ctx->session_ctx());
  {
    Forged f(ctx);
    CHECK(SSL_CTX_sess_number(ctx->session_ctx()) == before + 1);
    f.send(TlsRecords::kHandshake, std::string("\x01\x00\x00\x00", 4));  // a ClientHello after the handshake
    CHECK(f.read() == TlsStatus::error);
  }
  CHECK(SSL_CTX_sess_number(ctx->session_ctx()) == before);
  {
    Forged f(ctx);  // a clean end keeps it
    f.send(TlsRecords::kAlert, std::string("\x01\x00", 2));
    CHECK(f.read() == TlsStatus::closed);
  }
  CHECK(SSL_CTX_sess_number(ctx->session_ctx()) == before + 1);
}

TEST_CASE("tls hostile: no secret and no forged plaintext stays behind") {
  // The per-thread HMAC context forgets each traffic secret once its keys are derived.
  std::string error;
  auto a = TlsRecords::create(0x1301, std::string(32, 'a'), std::string(32, 'b'), 0, error);
  REQUIRE(a);
  std::string after_a = TlsRecords::kept_hmac_output_for_test(0x1301);
  auto b = TlsRecords::create(0x1301, std::string(32, 'c'), std::string(32, 'd'), 0, error);
  REQUIRE(b);
  REQUIRE(b->update_write_key());
  CHECK_FALSE(after_a.empty());
  CHECK(TlsRecords::kept_hmac_output_for_test(0x1301) == after_a);
  // A forged record's decryption is wiped before open_into() returns.
  auto peer = TlsRecords::create(0x1301, std::string(32, 'b'), std::string(32, 'a'), 0, error);
  REQUIRE(peer);
  std::string secret_request = "GET / HTTP/1.1\r\nAuthorization: Basic dXNlcjpwYXNz\r\n\r\n";
  std::string wire(TlsRecords::sealed_size(secret_request.size()), '\0');
  REQUIRE(a->seal(23, secret_request.data(), secret_request.size(), wire.data()) == wire.size());
  wire.back() ^= 1;  // the tag
  std::string out(wire.size(), 'z');
  uint8_t type = 0;
  size_t len = 0;
  CHECK(peer->open_into(wire.data(), wire.size(), out.data(), type, len) == TlsRecords::Open::bad_tag);
  CHECK(out.substr(0, secret_request.size() + 1) == std::string(secret_request.size() + 1, '\0'));
}

TEST_CASE("tls hostile: on OpenSSL's record layer too, KeyUpdates without data are capped") {
  TlsSettings settings = standard_settings();
  settings.own_records = false;
  Session s(load_ok(settings), {.sni = "pool1.example.com"});
  s.pump();
  REQUIRE(s.established());
  REQUIRE_FALSE(s.server.own_records());
  std::string flood;
  for (int i = 0; i < 40; ++i) {
    REQUIRE(SSL_key_update(s.client.ssl, SSL_KEY_UPDATE_REQUESTED) == 1);
    REQUIRE(SSL_do_handshake(s.client.ssl) == 1);
    char buf[256];
    int n;
    while ((n = BIO_read(s.client.out, buf, sizeof buf)) > 0) flood.append(buf, size_t(n));
  }
  s.server.feed_ciphertext(flood.data(), flood.size());
  Slice plain;
  CHECK(s.server.read_plaintext(plain) == TlsStatus::error);
  CHECK(contains(s.server.error(), "too many KeyUpdates"));
  // OpenSSL reads (and answers) whatever one read_plaintext() call was fed before the engine
  // can look at the count: the answers never outgrow the flood that provoked them.
  CHECK(s.server.pending_ciphertext() <= flood.size());
  // With data in between, the count starts again.
  Session t(load_ok(settings), {.sni = "pool1.example.com"});
  t.pump();
  REQUIRE(t.established());
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 30; ++i) {
      REQUIRE(SSL_key_update(t.client.ssl, SSL_KEY_UPDATE_REQUESTED) == 1);
      REQUIRE(SSL_do_handshake(t.client.ssl) == 1);
    }
    t.client.write("x");
    t.pump();
  }
  CHECK(t.server_received == "xxx");
  CHECK(t.server.status() == TlsStatus::ok);
}
