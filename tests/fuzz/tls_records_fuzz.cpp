// libFuzzer target for the server's own TLS 1.3 record layer. Each input starts from a real
// handshake with an OpenSSL client (memory BIOs); the input then becomes a series of records
// sealed under the client's key (any inner plaintext: content, content type, padding, so the
// parsing behind the AEAD is reached), raw bytes, writes and closes. The mirror (the client's
// record layer) follows the KeyUpdates it sends, so states after one are reached, and opens
// everything the server sends, following the server's KeyUpdates. Invariants trap: the engine
// took over, never hands out more than it was given, gives every chunk back; every record it
// sends opens under the client's keys, its application data is exactly what was written, and
// nothing follows its close_notify.
//
// Differential mode (SPRAYER_FUZZ_DIFFERENTIAL=1 in the environment): every input also runs
// against a second connection on OpenSSL's record layer (`record_layer: openssl`), each record
// sealed for it with its own client keys; while both connections are still healthy they must
// have delivered exactly the same application data. (Once either fails or closes, their
// policies may differ: OpenSSL also checks the alert level that RFC 8446 lets a receiver ignore.)
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

#include "proxy/buffer_pool.h"
#include "proxy/tls/tls_context.h"
#include "proxy/tls/tls_engine.h"
#include "proxy/tls/tls_records.h"

namespace {

using namespace sprayer::proxy;

#define CHECK_OR_TRAP(cond) \
  do {                      \
    if (!(cond)) __builtin_trap(); \
  } while (0)

struct Secrets {
  std::string client, server;
};
Secrets* capture = nullptr;  // the client's secrets, filled by its key-log callback

void on_client_keylog(const SSL*, const char* line) {
  std::string text(line);
  std::string* out = nullptr;
  if (text.rfind("CLIENT_TRAFFIC_SECRET_0 ", 0) == 0) out = &capture->client;
  if (text.rfind("SERVER_TRAFFIC_SECRET_0 ", 0) == 0) out = &capture->server;
  if (!out) return;
  std::string hex = text.substr(text.rfind(' ') + 1);
  out->clear();
  for (size_t i = 0; i + 1 < hex.size(); i += 2) out->push_back(char(std::stoi(hex.substr(i, 2), nullptr, 16)));
}

struct Setup {
  std::shared_ptr<const TlsContext> server;
  std::shared_ptr<const TlsContext> reference;  // record_layer: openssl, for the differential mode
  SSL_CTX* client = nullptr;

  Setup() {
    char dir[] = "/tmp/sprayer-fuzz-XXXXXX";
    CHECK_OR_TRAP(mkdtemp(dir));
    EVP_PKEY* key = EVP_EC_gen("P-256");
    X509* cert = X509_new();
    X509_set_version(cert, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
    X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
    X509_gmtime_adj(X509_getm_notAfter(cert), 3600L * 24 * 365);
    X509_set_pubkey(cert, key);
    X509_NAME* name = X509_get_subject_name(cert);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("fuzz.example"), -1,
                               -1, 0);
    X509_set_issuer_name(cert, name);
    CHECK_OR_TRAP(X509_sign(cert, key, EVP_sha256()) > 0);
    std::string cert_path = std::string(dir) + "/cert.pem", key_path = std::string(dir) + "/key.pem";
    FILE* f = std::fopen(cert_path.c_str(), "w");
    PEM_write_X509(f, cert);
    std::fclose(f);
    f = std::fopen(key_path.c_str(), "w");
    PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr);
    std::fclose(f);
    X509_free(cert);
    EVP_PKEY_free(key);

    TlsSettings settings;
    settings.certificates.push_back(TlsCertificateFiles{cert_path, key_path});
    TlsLoadResult loaded = TlsContext::load(settings, std::chrono::system_clock::now());
    CHECK_OR_TRAP(loaded.ok());
    server = loaded.context;
    if (getenv("SPRAYER_FUZZ_DIFFERENTIAL")) {
      settings.own_records = false;
      TlsLoadResult ref = TlsContext::load(settings, std::chrono::system_clock::now());
      CHECK_OR_TRAP(ref.ok());
      reference = ref.context;
    }
    unlink(cert_path.c_str());
    unlink(key_path.c_str());
    rmdir(dir);

    client = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(client, TLS1_3_VERSION);
    SSL_CTX_set_keylog_callback(client, on_client_keylog);
    capture = new Secrets;
  }
};

// Moves bytes between the client and the server until both are quiet (bounded).
void pump(SSL* client, BIO* to_client, BIO* from_client, TlsEngine& server) {
  for (int round = 0; round < 20; ++round) {
    bool moved = false;
    if (!SSL_is_init_finished(client)) SSL_do_handshake(client);
    char buf[16384];
    for (;;) {
      size_t n = 0;
      if (SSL_read_ex(client, buf, sizeof buf, &n) != 1) break;
    }
    int n;
    while ((n = BIO_read(from_client, buf, sizeof buf)) > 0) {
      server.feed_ciphertext(buf, size_t(n));
      moved = true;
    }
    Slice plain;
    while (server.read_plaintext(plain) == TlsStatus::ok) plain.reset();
    std::string out;
    if (server.take_ciphertext(out) > 0) {
      BIO_write(to_client, out.data(), int(out.size()));
      moved = true;
    }
    if (!moved) return;
  }
}

// A client's record layer as the fuzzer drives it: seals records under the client's keys and
// follows the KeyUpdates it sends once they are whole (as the server reassembles them).
struct Forger {
  std::unique_ptr<TlsRecords> records;
  std::string handshake;

  size_t seal(uint8_t type, const char* bytes, size_t len, std::string& wire, uint8_t inner_type,
              std::string_view inner_content) {
    wire.resize(TlsRecords::sealed_size(len));
    size_t n = records->seal(type, bytes, len, wire.data());
    CHECK_OR_TRAP(n == wire.size());
    if (inner_type == TlsRecords::kHandshake) {
      handshake.append(inner_content);
      while (handshake.size() >= 5 && handshake.compare(0, 4, "\x18\x00\x00\x01", 4) == 0) {
        handshake.erase(0, 5);
        records->update_write_key();
      }
    } else if (inner_type != 0) {
      handshake.clear();
    }
    return n;
  }
};

// The same input's twin on OpenSSL's record layer (differential mode).
struct Reference {
  TlsEngine engine;
  SSL* client;
  BIO* to_client;
  BIO* from_client;
  Forger forger;
  std::string plain;

  Reference(const std::shared_ptr<const TlsContext>& ctx, SSL_CTX* client_ctx, BufferPool& pool)
      : engine(ctx, pool), client(SSL_new(client_ctx)) {
    to_client = BIO_new(BIO_s_mem());
    from_client = BIO_new(BIO_s_mem());
    SSL_set_bio(client, to_client, from_client);
    SSL_set_connect_state(client);
    *capture = Secrets{};
    pump(client, to_client, from_client, engine);
    CHECK_OR_TRAP(engine.handshake_done() && !engine.own_records());
    std::string error;
    uint16_t suite = SSL_CIPHER_get_protocol_id(SSL_get_current_cipher(client));
    forger.records = TlsRecords::create(suite, capture->server, capture->client, 0, error);
    CHECK_OR_TRAP(forger.records);
  }
  ~Reference() { SSL_free(client); }
  void read() {
    Slice out;
    for (int i = 0; i < 4096 && engine.read_plaintext(out) == TlsStatus::ok; ++i) {
      plain.append(out.data(), out.size());
      out.reset();
    }
    std::string discard;
    engine.take_ciphertext(discard);
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Setup setup;
  BufferPool pool(16 * 1024, 8);
  {
    TlsEngine server(setup.server, pool);
    SSL* client = SSL_new(setup.client);
    BIO* to_client = BIO_new(BIO_s_mem());
    BIO* from_client = BIO_new(BIO_s_mem());
    SSL_set_bio(client, to_client, from_client);
    SSL_set_connect_state(client);
    *capture = Secrets{};
    pump(client, to_client, from_client, server);
    CHECK_OR_TRAP(server.handshake_done() && server.own_records());

    std::string error;
    uint16_t suite = SSL_CIPHER_get_protocol_id(SSL_get_current_cipher(client));
    // The client's mirror: it writes under the client's secret, from sequence number 0.
    Forger forger;
    forger.records = TlsRecords::create(suite, capture->server, capture->client, 0, error);
    TlsRecords* mirror = forger.records.get();
    CHECK_OR_TRAP(mirror);
    std::unique_ptr<Reference> reference;
    if (setup.reference) reference = std::make_unique<Reference>(setup.reference, setup.client, pool);
    std::string own_plain;

    mirror->set_sequence_for_test(server.records_for_test()->write_seq(), 0);  // after the tickets

    size_t fed_plain = 0, got_plain = 0;
    std::string written, answered;  // application data the server accepted, and what it sent
    bool server_closed = false;
    // Opens every record the server sent (whole records: the engine emits them whole).
    auto check_output = [&] {
      std::string out;
      server.take_ciphertext(out);
      size_t at = 0;
      while (at < out.size()) {
        CHECK_OR_TRAP(out.size() - at >= TlsRecords::kHeader);
        size_t n = TlsRecords::record_length(reinterpret_cast<const unsigned char*>(out.data() + at));
        CHECK_OR_TRAP(n > 0 && at + n <= out.size());
        CHECK_OR_TRAP(!server_closed);  // nothing after close_notify
        uint8_t type = 0;
        char* content = nullptr;
        size_t content_len = 0;
        CHECK_OR_TRAP(mirror->open(out.data() + at, n, type, content, content_len));
        std::string_view c(content, content_len);
        if (type == TlsRecords::kApplicationData) answered.append(c);
        if (type == TlsRecords::kHandshake) {
          CHECK_OR_TRAP(c == std::string_view("\x18\x00\x00\x01\x00", 5));  // only KeyUpdate, not requested
          CHECK_OR_TRAP(mirror->update_read_key());
        }
        if (type == TlsRecords::kAlert) {
          CHECK_OR_TRAP(content_len == 2);
          if (c[1] == 0) server_closed = true;
        }
        at += n;
      }
    };
    size_t at = 0;
    std::string wire;
    while (at < size) {
      uint8_t op = data[at++];
      size_t len = at < size ? data[at++] : 0;
      if (op & 0x80) len = (len << 6) | (op & 0x3f);  // up to ~16 KB
      if (len > size - at) len = size - at;
      const char* bytes = reinterpret_cast<const char*>(data + at);
      at += len;
      switch (op & 0x03) {
        case 0:  // raw bytes, as a broken or hostile client would send
          server.feed_ciphertext(bytes, len);
          if (reference) reference->engine.feed_ciphertext(bytes, len);
          break;
        case 1:
        case 2: {  // a sealed record; its last input byte is the inner content type (0 = padding)
          if (len == 0 || len - 1 > TlsRecords::kMaxContent) break;
          uint8_t type = static_cast<uint8_t>(bytes[len - 1]);
          std::string inner(bytes, len - 1);  // what the server finds inside: content, type, zeros
          inner.push_back(static_cast<char>(type));
          while (!inner.empty() && inner.back() == 0) inner.pop_back();
          uint8_t inner_type = inner.empty() ? 0 : static_cast<uint8_t>(inner.back());
          std::string_view inner_content(inner.data(), inner.empty() ? 0 : inner.size() - 1);
          if (inner_type == TlsRecords::kApplicationData) fed_plain += inner.size() - 1;
          // A whole KeyUpdate the server will follow: the forger's next records use the next key.
          size_t n = forger.seal(type, bytes, len - 1, wire, inner_type, inner_content);
          server.feed_ciphertext(wire.data(), n);
          if (reference) {
            n = reference->forger.seal(type, bytes, len - 1, wire, inner_type, inner_content);
            reference->engine.feed_ciphertext(wire.data(), n);
          }
          break;
        }
        case 3:  // the proxy answers, or closes
          if (len == 0) server.shutdown();
          else if (server.write_plaintext(bytes, len) == TlsStatus::ok) written.append(bytes, len);
          if (reference && len == 0) reference->engine.shutdown();
          else if (reference) reference->engine.write_plaintext(bytes, len);
          break;
      }
      Slice plain;
      for (int i = 0; i < 4096 && server.read_plaintext(plain) == TlsStatus::ok; ++i) {
        CHECK_OR_TRAP(!plain.empty() && plain.size() <= pool.chunk_size());
        got_plain += plain.size();
        if (reference) own_plain.append(plain.data(), plain.size());
        plain.reset();
      }
      check_output();
      if (reference) {
        reference->read();
        // Both still healthy: the same application data came out of both record layers.
        if (server.status() == TlsStatus::ok && reference->engine.status() == TlsStatus::ok)
          CHECK_OR_TRAP(own_plain == reference->plain);
      }
    }
    // What the server sent as application data is exactly what it accepted to write.
    CHECK_OR_TRAP(answered == written);
    // Application data comes out at most once, and only from records that carried it.
    CHECK_OR_TRAP(got_plain <= fed_plain);
    SSL_free(client);
  }
  CHECK_OR_TRAP(pool.outstanding() == 0);
  return 0;
}
