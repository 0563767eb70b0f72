// TLS pieces with no handshake: the ticket key file format, SNI name matching, plain-HTTP
// sniffing, and the ciphertext buffers behind the engine's BIO.
#include <doctest/doctest.h>

#include <cstring>
#include <string>
#include <vector>

#include "proxy/tls/tls_bio.h"
#include "proxy/tls/tls_engine.h"
#include "proxy/tls/tls_names.h"
#include "proxy/tls/tls_ticket_keys.h"

using namespace sprayer::proxy;

namespace {

std::string key_bytes(unsigned char seed) {
  std::string key(TlsTicketKey::kSize, '\0');
  for (size_t i = 0; i < key.size(); ++i) key[i] = static_cast<char>(seed + i * 7);
  return key;
}

std::string base64(std::string_view bytes) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    uint32_t n = (uint8_t(bytes[i]) << 16) | (uint8_t(bytes[i + 1]) << 8) | uint8_t(bytes[i + 2]);
    for (int s = 18; s >= 0; s -= 6) out.push_back(kAlphabet[(n >> s) & 63]);
  }
  if (bytes.size() - i == 1) {
    uint32_t n = uint8_t(bytes[i]) << 16;
    out += {kAlphabet[n >> 18], kAlphabet[(n >> 12) & 63], '=', '='};
  } else if (bytes.size() - i == 2) {
    uint32_t n = (uint8_t(bytes[i]) << 16) | (uint8_t(bytes[i + 1]) << 8);
    out += {kAlphabet[n >> 18], kAlphabet[(n >> 12) & 63], kAlphabet[(n >> 6) & 63], '='};
  }
  return out;
}

bool same(const TlsTicketKey& key, const std::string& bytes) {
  return std::string(reinterpret_cast<const char*>(key.name.data()), 16) == bytes.substr(0, 16) &&
         std::string(reinterpret_cast<const char*>(key.hmac_key.data()), 32) == bytes.substr(16, 32) &&
         std::string(reinterpret_cast<const char*>(key.aes_key.data()), 32) == bytes.substr(48, 32);
}

}  // namespace

TEST_CASE("tls ticket keys: binary file of 80-byte keys, first one first") {
  std::string k1 = key_bytes(1), k2 = key_bytes(2);
  k1[0] = '\x01';  // make sure the content is not mistaken for text
  std::vector<TlsTicketKey> keys;
  std::string error;
  REQUIRE(parse_ticket_keys(k1 + k2, keys, error));
  REQUIRE(keys.size() == 2);
  CHECK(same(keys[0], k1));
  CHECK(same(keys[1], k2));

  CHECK_FALSE(parse_ticket_keys(k1 + k2.substr(0, 79), keys, error));
  CHECK(error.find("multiple of 80 bytes, found 159") != std::string::npos);
  CHECK(keys.empty());
}

TEST_CASE("tls ticket keys: base64 text, one key a line or wrapped, comments ignored") {
  std::string k1 = key_bytes(10), k2 = key_bytes(20);
  std::string b1 = base64(k1), b2 = base64(k2);
  REQUIRE(b1.size() == 108);
  std::vector<TlsTicketKey> keys;
  std::string error;

  std::string one_per_line = "# rotated 2024-05-01\n" + b1 + "\n\n" + b2 + "\r\n";
  REQUIRE(parse_ticket_keys(one_per_line, keys, error));
  REQUIRE(keys.size() == 2);
  CHECK(same(keys[0], k1));
  CHECK(same(keys[1], k2));

  // `openssl rand -base64 80` wraps at 64 columns.
  std::string wrapped = b1.substr(0, 64) + "\n" + b1.substr(64) + "\n" + b2.substr(0, 64) + "\n" + b2.substr(64);
  REQUIRE(parse_ticket_keys(wrapped, keys, error));
  REQUIRE(keys.size() == 2);
  CHECK(same(keys[1], k2));
}

TEST_CASE("tls ticket keys: malformed text is refused with the line") {
  std::string b1 = base64(key_bytes(10));
  std::vector<TlsTicketKey> keys;
  std::string error;

  CHECK_FALSE(parse_ticket_keys("", keys, error));
  CHECK(error == "no key found");
  CHECK_FALSE(parse_ticket_keys("# only a comment\n\n", keys, error));

  std::string bad = b1;
  bad[10] = '!';
  CHECK_FALSE(parse_ticket_keys("\n" + bad + "\n", keys, error));
  CHECK(error == "line 2: not the base64 of one 80-byte key");

  CHECK_FALSE(parse_ticket_keys(b1 + "\n" + b1.substr(0, 50) + "\n", keys, error));
  CHECK(error == "line 2: incomplete key at end of file");

  CHECK_FALSE(parse_ticket_keys(b1 + "AAAA\n", keys, error));  // one line, too long
  CHECK(error.find("line 1") == 0);

  CHECK_FALSE(parse_ticket_keys(base64(key_bytes(1).substr(0, 79)) + "AAAA", keys, error));
}

TEST_CASE("tls ticket keys: lookup by name, missing file named in the error") {
  TlsTicketKeys keys;
  keys.keys.resize(2);
  keys.keys[0].name.fill(1);
  keys.keys[1].name.fill(2);
  unsigned char name[16];
  std::fill(std::begin(name), std::end(name), 2);
  CHECK(keys.find(name) == 1);
  name[15] = 3;
  CHECK(keys.find(name) == TlsTicketKeys::npos);

  std::vector<TlsTicketKey> out;
  std::string error;
  CHECK_FALSE(read_ticket_key_file("/nonexistent/ticket.key", out, error));
  CHECK(error == "/nonexistent/ticket.key: cannot open: No such file or directory");

  TlsTicketKey a, b;
  REQUIRE(random_ticket_key(a));
  REQUIRE(random_ticket_key(b));
  CHECK(a.name != b.name);
}

TEST_CASE("tls names: exact beats wildcard, wildcard is one label deep, case-insensitive") {
  TlsNameTable names;
  CHECK(names.add("*.example.com", 0));
  CHECK(names.add("example.com", 0));
  CHECK(names.add("Pool1.Example.com", 1));
  CHECK(names.add("*.pool.example.com", 2));
  CHECK_FALSE(names.add("pool1.example.com", 3));  // first claim wins
  CHECK_FALSE(names.add("w*.example.com", 3));     // partial wildcard
  CHECK_FALSE(names.add("*", 3));
  CHECK_FALSE(names.add("", 3));

  CHECK(names.find("pool1.example.com") == 1);
  CHECK(names.find("POOL1.EXAMPLE.COM") == 1);
  CHECK(names.find("pool1.example.com.") == 1);
  CHECK(names.find("pool2.example.com") == 0);
  CHECK(names.find("example.com") == 0);
  CHECK(names.find("a.pool.example.com") == 2);
  CHECK(names.find("a.b.example.com") == TlsNameTable::npos);
  CHECK(names.find("x.other.com") == TlsNameTable::npos);
  CHECK(names.find(".example.com") == TlsNameTable::npos);
  CHECK(names.find("com") == TlsNameTable::npos);
  CHECK(names.find("") == TlsNameTable::npos);
  CHECK(names.find(std::string(300, 'a')) == TlsNameTable::npos);
}

TEST_CASE("tls looks_like_http: methods and their prefixes, never a TLS record") {
  auto http = [](std::string_view s) { return TlsEngine::looks_like_http(s.data(), s.size()); };
  CHECK(http("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
  CHECK(http("OPTIONS /Microsoft-Server-ActiveSync HTTP/1.1\r\n"));
  CHECK(http("POST /traveler HTTP/1.1"));
  CHECK(http("M-SEARCH * HTTP/1.1"));
  CHECK(http("G"));    // the first byte alone is enough to know it is not TLS
  CHECK(http("PROPF"));
  CHECK_FALSE(http(""));
  CHECK_FALSE(http(std::string_view("\x16\x03\x01\x02\x00\x01", 6)));
  CHECK_FALSE(http(std::string_view("\x80\x2e\x01", 3)));  // SSLv2-style hello
  CHECK_FALSE(http("get / HTTP/1.1"));
  CHECK_FALSE(http(" GET /"));
  CHECK_FALSE(http("GET/ HTTP/1.1"));
  CHECK_FALSE(http(std::string(40, 'A')));
}

TEST_CASE("tls bio buffers: input is read across slices and released once consumed") {
  BufferPool pool(64, 4);
  {
    TlsBioBuffers buffers(pool);
    buffers.push_input_copy("hello ", 6);
    buffers.push_input_copy(std::string(100, 'x').data(), 100);  // spans two chunks
    CHECK(buffers.input_bytes() == 106);
    CHECK(pool.outstanding() == 3);
    char out[80];
    CHECK(buffers.read_input(out, 10) == 10);
    CHECK(std::string(out, 10) == "hello xxxx");
    CHECK(pool.outstanding() == 2);  // the first chunk went back
    CHECK(buffers.read_input(out, 80) == 80);
    CHECK(buffers.read_input(out, 80) == 16);
    CHECK(buffers.read_input(out, 80) == 0);
    CHECK(pool.outstanding() == 0);
  }
  CHECK(pool.outstanding() == 0);
}

TEST_CASE("tls bio buffers: output fills chunks and is handed out as ordered slices") {
  BufferPool pool(64, 4);
  TlsBioBuffers buffers(pool);
  std::string data;
  for (int i = 0; i < 150; ++i) data.push_back(static_cast<char>('a' + i % 26));
  buffers.write_output(data.data(), 100);
  buffers.write_output(data.data() + 100, 50);
  CHECK(buffers.output_bytes() == 150);
  std::vector<Slice> slices;
  CHECK(buffers.take_output([&](Slice s) { slices.push_back(std::move(s)); }) == 150);
  CHECK(buffers.output_bytes() == 0);
  REQUIRE(slices.size() == 3);
  std::string joined;
  for (const Slice& s : slices) joined.append(s.data(), s.size());
  CHECK(joined == data);
  CHECK(pool.outstanding() == 3);  // held by the slices only
  slices.clear();
  CHECK(pool.outstanding() == 0);
}

TEST_CASE("tls bio buffers: space for a record is contiguous, after what is there or in a new chunk") {
  BufferPool pool(64, 4);
  TlsBioBuffers buffers(pool);
  const char first[] = {23, 3, 3, 0, 20};  // a record header: 5 + 20 bytes
  char* a = buffers.output_space(25);
  REQUIRE(a);
  std::memcpy(a, first, 5);
  std::memset(a + 5, 'x', 20);
  buffers.commit_output(a, 25);
  char* b = buffers.output_space(39);  // exactly what the chunk has left
  CHECK(b == a + 25);
  char* unused = buffers.output_space(40);  // does not fit: a new chunk, left empty
  CHECK(unused != nullptr);
  CHECK(buffers.output_space(65) == nullptr);  // no chunk holds it
  CHECK(buffers.output_bytes() == 25);
  CHECK(buffers.output_records() == 1);
  CHECK(buffers.output_at_record_boundary());
  std::vector<Slice> slices;
  CHECK(buffers.take_output([&](Slice s) { slices.push_back(std::move(s)); }) == 25);
  REQUIRE(slices.size() == 1);  // the empty chunk is not handed out
  CHECK(std::string(slices[0].data(), slices[0].size()) == std::string(first, 5) + std::string(20, 'x'));
  slices.clear();
  CHECK(pool.outstanding() == 0);
}
