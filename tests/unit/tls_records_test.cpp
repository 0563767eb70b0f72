// TlsRecords on its own: a server's records opened by a mirror (its secrets swapped), for every
// suite; sequence numbers, tampering, key updates on one side and both, the rekey threshold.
// The engine tests drive the same code against a real OpenSSL client.
#include <doctest/doctest.h>

#include <string>

#include "proxy/tls/tls_records.h"

using sprayer::proxy::TlsRecords;

namespace {

struct Pair {
  std::unique_ptr<TlsRecords> server, peer;  // peer reads what server writes, and the reverse
  Pair(uint16_t suite, size_t hash_len, uint64_t server_seq = 0) {
    std::string a(hash_len, 'a'), b(hash_len, 'b');
    for (size_t i = 0; i < hash_len; ++i) a[i] = char(i * 7 + 1), b[i] = char(i * 13 + 5);
    std::string error;
    server = TlsRecords::create(suite, a, b, server_seq, error);
    REQUIRE_MESSAGE(server, error);
    peer = TlsRecords::create(suite, b, a, 0, error);
    REQUIRE_MESSAGE(peer, error);
  }
};

// Seals with `from`, opens with `to`; the content on success, "<failed>" otherwise.
std::string round_trip(TlsRecords& from, TlsRecords& to, const std::string& content, uint8_t type = 23,
                       size_t flip = std::string::npos) {
  std::string wire(TlsRecords::sealed_size(content.size()), '\0');
  size_t n = from.seal(type, content.data(), content.size(), wire.data());
  REQUIRE(n == wire.size());
  REQUIRE(TlsRecords::record_length(reinterpret_cast<const unsigned char*>(wire.data())) == n);
  if (flip != std::string::npos) wire[flip] ^= 1;
  uint8_t got_type = 0;
  char* data = nullptr;
  size_t len = 0;
  if (!to.open(wire.data(), n, got_type, data, len)) return "<failed>";
  CHECK(got_type == type);
  return std::string(data, len);
}

}  // namespace

TEST_CASE("tls records: every suite seals what its mirror opens, in sequence, up to a full record") {
  for (auto [suite, hash] : {std::pair{uint16_t(0x1301), size_t(32)}, std::pair{uint16_t(0x1302), size_t(48)},
                             std::pair{uint16_t(0x1303), size_t(32)}}) {
    CAPTURE(suite);
    Pair p(suite, hash);
    CHECK(round_trip(*p.server, *p.peer, "") == "");
    CHECK(round_trip(*p.server, *p.peer, "hello") == "hello");
    CHECK(round_trip(*p.peer, *p.server, "GET / HTTP/1.1\r\n\r\n") == "GET / HTTP/1.1\r\n\r\n");
    std::string full(TlsRecords::kMaxContent, 'x');
    CHECK(round_trip(*p.server, *p.peer, full) == full);
    CHECK(round_trip(*p.server, *p.peer, std::string(2, '\0'), 21) == std::string(2, '\0'));  // an alert
    CHECK(p.server->write_seq() == 4);
    CHECK(p.peer->read_seq() == 4);
    std::string too_big(TlsRecords::kMaxContent + 1, 'x');
    std::string out(TlsRecords::sealed_size(too_big.size()), '\0');
    CHECK(p.server->seal(23, too_big.data(), too_big.size(), out.data()) == 0);
  }
}

TEST_CASE("tls records: a resting side rebuilds its keys at the next record, sequence numbers kept") {
  for (auto [suite, hash] : {std::pair{uint16_t(0x1301), size_t(32)}, std::pair{uint16_t(0x1302), size_t(48)},
                             std::pair{uint16_t(0x1303), size_t(32)}}) {
    CAPTURE(suite);
    Pair p(suite, hash);
    CHECK(round_trip(*p.peer, *p.server, "POST /ping") == "POST /ping");
    CHECK(round_trip(*p.server, *p.peer, "100 Continue") == "100 Continue");
    p.server->rest();
    CHECK(p.server->resting());
    p.server->rest();  // twice is harmless
    CHECK(p.server->write_seq() == 1);
    CHECK(p.server->read_seq() == 1);
    // Both directions, in either order: the peer still opens (its sequence numbers moved on).
    CHECK(round_trip(*p.server, *p.peer, "HTTP/1.1 200 OK") == "HTTP/1.1 200 OK");
    CHECK_FALSE(p.server->resting());
    CHECK(round_trip(*p.peer, *p.server, "next request") == "next request");
    CHECK(p.server->write_seq() == 2);
    CHECK(p.server->read_seq() == 2);
    // A key update after a rest starts the new key at sequence 0 on both sides.
    p.server->rest();
    REQUIRE(p.server->update_write_key());
    REQUIRE(p.peer->update_read_key());
    CHECK(round_trip(*p.server, *p.peer, "after the update") == "after the update");
    CHECK(p.server->write_seq() == 1);
    // A forged record to a resting side fails as it would otherwise.
    p.server->rest();
    CHECK(round_trip(*p.peer, *p.server, "forged", 23, 7) == "<failed>");
  }
}

TEST_CASE("tls records: a flipped bit anywhere fails the record") {
  Pair p(0x1301, 32);
  std::string content = "the response";
  size_t sealed = TlsRecords::sealed_size(content.size());
  for (size_t at : {size_t(3), size_t(5), sealed / 2, sealed - 1}) {  // header (AAD), body, tag
    CAPTURE(at);
    Pair q(0x1301, 32);
    CHECK(round_trip(*q.server, *q.peer, content, 23, at) == "<failed>");
  }
  // A record out of order (its sequence number is not the next one) fails too.
  std::string first(TlsRecords::sealed_size(1), '\0'), second(TlsRecords::sealed_size(1), '\0');
  p.server->seal(23, "1", 1, first.data());
  p.server->seal(23, "2", 1, second.data());
  uint8_t type;
  char* data;
  size_t len;
  CHECK_FALSE(p.peer->open(second.data(), second.size(), type, data, len));
}

TEST_CASE("tls records: key updates take effect on the side that made them, and the peer must follow") {
  Pair p(0x1302, 48);
  CHECK(round_trip(*p.server, *p.peer, "before") == "before");
  REQUIRE(p.server->update_write_key());
  CHECK(p.server->write_seq() == 0);
  {
    Pair lagging(0x1302, 48);  // a peer that did not follow sees garbage
    REQUIRE(lagging.server->update_write_key());
    CHECK(round_trip(*lagging.server, *lagging.peer, "after") == "<failed>");
  }
  REQUIRE(p.peer->update_read_key());
  CHECK(round_trip(*p.server, *p.peer, "after") == "after");
  CHECK(round_trip(*p.peer, *p.server, "other way unchanged") == "other way unchanged");
}

TEST_CASE("tls records: writes ask for a new key before AES-GCM's margin; record headers are checked") {
  Pair worn(0x1301, 32, (uint64_t(1) << 24) - 1);
  CHECK_FALSE(worn.server->write_key_worn());
  std::string out(TlsRecords::sealed_size(1), '\0');
  REQUIRE(worn.server->seal(23, "x", 1, out.data()) > 0);
  CHECK(worn.server->write_key_worn());

  auto length = [](std::initializer_list<int> bytes) {
    unsigned char h[5];
    int i = 0;
    for (int b : bytes) h[i++] = static_cast<unsigned char>(b);
    return TlsRecords::record_length(h);
  };
  CHECK(length({23, 3, 3, 0, 17}) == 22);
  CHECK(length({23, 3, 1, 0x41, 0x00}) == 5 + 16640);  // the legacy version is not checked
  CHECK(length({23, 3, 3, 0x41, 0x01}) == 0);          // over 2^14 + 256
  CHECK(length({23, 3, 3, 0, 16}) == 0);               // no room for a tag and a type
  CHECK(length({22, 3, 3, 0, 40}) == 0);               // unprotected after the handshake
  std::string error;
  CHECK_FALSE(TlsRecords::create(0x1304, std::string(32, 'a'), std::string(32, 'b'), 0, error));  // CCM
  CHECK(error.find("cipher suite") != std::string::npos);
  CHECK_FALSE(TlsRecords::create(0x1301, std::string(48, 'a'), std::string(48, 'b'), 0, error));
}
