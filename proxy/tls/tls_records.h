// TLS 1.3 record protection (RFC 8446 section 5) for a server connection whose handshake
// OpenSSL has finished. A parked TLS connection then costs two cipher contexts and a few keys
// instead of a whole SSL object (about 12 KB with OpenSSL 3.0): tens of thousands of phones
// sit in ActiveSync Ping for up to 30 minutes each.
//
// It does no I/O and no handshake: it seals and opens records with keys derived from the
// connection's traffic secrets (section 7.1: HKDF-Expand-Label), counts sequence numbers
// (section 5.3 nonces), and follows KeyUpdate both ways (section 4.6.3). The AEAD itself is
// OpenSSL's (EVP).
#pragma once

#include <openssl/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace sprayer::proxy {

class TlsRecords {
 public:
  static constexpr size_t kHeader = 5;
  static constexpr size_t kTag = 16;
  static constexpr size_t kMaxContent = 16384;                       // 2^14
  static constexpr size_t kMaxCiphertext = kMaxContent + 256;        // section 5.2 limit
  static constexpr size_t kMaxRecord = kHeader + kMaxCiphertext;
  static constexpr uint8_t kAlert = 21, kHandshake = 22, kApplicationData = 23;

  // `suite` is the TLS 1.3 cipher suite (0x1301 AES-128-GCM-SHA256, 0x1302 AES-256-GCM-SHA384,
  // 0x1303 CHACHA20-POLY1305-SHA256); the secrets are the first application traffic secrets;
  // `write_seq` counts the records the server already sent under its secret (tickets). Null
  // with `error` set when the suite is not one of those or OpenSSL fails.
  static std::unique_ptr<TlsRecords> create(uint16_t suite, std::string_view client_secret,
                                            std::string_view server_secret, uint64_t write_seq,
                                            std::string& error);
  ~TlsRecords();
  TlsRecords(const TlsRecords&) = delete;
  TlsRecords& operator=(const TlsRecords&) = delete;

  // The length of the record starting with `header` (5 bytes), or 0 when the header is not
  // an application_data record of TLS 1.2 form within the size limit (a fatal error).
  static size_t record_length(const unsigned char* header);

  // Seals `len` bytes (at most kMaxContent) of content `type` into `out`, which must have room
  // for sealed_size(len). Returns the bytes written, 0 when OpenSSL fails.
  static size_t sealed_size(size_t len) { return kHeader + len + 1 + kTag; }
  size_t seal(uint8_t type, const char* data, size_t len, char* out) {
    return len > kMaxContent ? 0 : seal_any(type, data, len, out);
  }
  // Tests only: seals up to kMaxCiphertext - kTag - 1 bytes, as a client breaking the limit would.
  size_t seal_oversized_for_test(uint8_t type, const char* data, size_t len, char* out) {
    return len + 1 + kTag > kMaxCiphertext ? 0 : seal_any(type, data, len, out);
  }

  // Why a record did not open; each has its alert (RFC 8446 5.2, 5.4).
  enum class Open {
    ok,
    bad_tag,          // bad_record_mac
    no_content_type,  // all-zero inner plaintext: unexpected_message
    overflow,         // inner content over 2^14: record_overflow
  };
  // Opens the whole record at `record` (header included), decrypting into `out`, which has
  // room for record_len - kHeader - kTag bytes (`out` may be record + kHeader: in place). On
  // ok, `type` and the content (at `out`, `content_len` bytes) are set. Whatever was decrypted
  // from a record that fails is wiped: unauthenticated plaintext never stays behind.
  Open open_into(const char* record, size_t record_len, char* out, uint8_t& type, size_t& content_len);
  // In place; true when open_into() says ok.
  bool open(char* record, size_t record_len, uint8_t& type, char*& content, size_t& content_len) {
    content = record + kHeader;
    return open_into(record, record_len, content, type, content_len) == Open::ok;
  }

  // KeyUpdate (section 4.6.3): the next read or write key, derived from the current secret.
  bool update_read_key();
  bool update_write_key();
  // Writes are rekeyed long before AES-GCM's safety margin (section 5.5): when this is true
  // the caller sends a KeyUpdate and then calls update_write_key().
  bool write_key_worn() const { return write_.seq >= kRekeyAfter; }
  // For a connection that waits long (a parked Ping): frees both cipher contexts, the bulk of
  // the record layer's memory; the next record rebuilds its direction's context from the
  // traffic secret kept here (sequence numbers stay).
  void rest();
  bool resting() const { return !read_.ctx && !write_.ctx; }

  uint64_t read_seq() const { return read_.seq; }
  uint64_t write_seq() const { return write_.seq; }

  // Tests only: what this thread's HMAC context derives when re-used without a new key (it
  // must not depend on any secret a record layer derived from before).
  static std::string kept_hmac_output_for_test(uint16_t suite);
  // Tests only: moves both sequence numbers (a record layer near its 2^24-record rekey).
  void set_sequence_for_test(uint64_t read_seq, uint64_t write_seq) {
    read_.seq = read_seq;
    write_.seq = write_seq;
  }

 private:
  static constexpr uint64_t kRekeyAfter = uint64_t(1) << 24;

  struct Direction {
    EVP_CIPHER_CTX* ctx = nullptr;
    unsigned char secret[48] = {};
    unsigned char iv[12] = {};
    uint64_t seq = 0;
  };

  TlsRecords() = default;
  size_t seal_any(uint8_t type, const char* data, size_t len, char* out);
  bool install(Direction& d, bool encrypt);
  bool rebuild(Direction& d, bool encrypt);  // install, keeping the sequence number
  bool next_secret(Direction& d);
  void nonce(const Direction& d, unsigned char out[12]) const;

  const EVP_CIPHER* cipher_ = nullptr;  // fetched once per process, never freed
  const EVP_MD* digest_ = nullptr;
  size_t hash_len_ = 0;
  size_t key_len_ = 0;
  bool gcm_ = false;  // AES-GCM, not ChaCha20-Poly1305
  Direction read_, write_;
};

}  // namespace sprayer::proxy
