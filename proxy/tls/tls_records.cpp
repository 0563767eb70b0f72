// Keys and nonces by the book: key = HKDF-Expand-Label(secret, "key", "", key_len), iv likewise
// with "iv" (RFC 8446 7.3); the nonce is the iv XOR the 64-bit sequence number, left-padded
// (5.3); the record is header || AEAD(content || type), the header being the AAD (5.2).
#include "proxy/tls/tls_records.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include <cstring>

namespace sprayer::proxy {

namespace {

struct Suite {
  uint16_t id;
  const char* cipher;
  const char* digest;
  size_t key_len;
  size_t hash_len;
};

constexpr Suite kSuites[] = {
    {0x1301, "AES-128-GCM", "SHA256", 16, 32},
    {0x1302, "AES-256-GCM", "SHA384", 32, 48},
    {0x1303, "ChaCha20-Poly1305", "SHA256", 32, 32},
};

// Fetched once per process (a fetch takes a lock and a lookup), kept for its lifetime.
struct Algorithms {
  EVP_CIPHER* cipher[3] = {};
  EVP_MD* digest[3] = {};
  EVP_MAC* hmac = nullptr;
  Algorithms() {
    for (size_t i = 0; i < 3; ++i) {
      cipher[i] = EVP_CIPHER_fetch(nullptr, kSuites[i].cipher, nullptr);
      digest[i] = EVP_MD_fetch(nullptr, kSuites[i].digest, nullptr);
    }
    hmac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  }
};

const Algorithms& algorithms() {
  static const Algorithms all;
  return all;
}

// One HMAC context per digest and worker thread, its digest set once: re-keying it is all a
// derivation needs (a fresh KDF context per call cost ~24,000 instructions, a fifth of this
// file's work per handshake).
class HmacContexts {
 public:
  ~HmacContexts() {
    for (EVP_MAC_CTX* c : ctx_) EVP_MAC_CTX_free(c);
  }
  EVP_MAC_CTX* get(const EVP_MD* digest) {
    size_t slot = EVP_MD_get_size(digest) == 48 ? 1 : 0;
    if (!ctx_[slot] && algorithms().hmac) {
      EVP_MAC_CTX* c = EVP_MAC_CTX_new(algorithms().hmac);
      OSSL_PARAM params[] = {
          OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, const_cast<char*>(EVP_MD_get0_name(digest)), 0),
          OSSL_PARAM_construct_end(),
      };
      if (c && EVP_MAC_CTX_set_params(c, params) != 1) {
        EVP_MAC_CTX_free(c);
        c = nullptr;
      }
      ctx_[slot] = c;
    }
    return ctx_[slot];
  }

 private:
  EVP_MAC_CTX* ctx_[2] = {};
};

HmacContexts& hmac_contexts() {
  thread_local HmacContexts contexts;
  return contexts;
}

// HKDF-Expand-Label(secret, label, "", out_len) (RFC 8446 7.1). Every output here fits one
// HKDF-Expand block (RFC 5869 2.3): T(1) = HMAC(secret, HkdfLabel || 0x01). A null `secret`
// reuses the key of the previous call on this thread (HMAC's padded key blocks are kept).
bool expand_label(const EVP_MD* digest, const unsigned char* secret, size_t secret_len, std::string_view label,
                  unsigned char* out, size_t out_len) {
  EVP_MAC_CTX* mac = hmac_contexts().get(digest);
  if (!mac || out_len > size_t(EVP_MD_get_size(digest)) || label.size() > 32) return false;
  unsigned char info[2 + 1 + 6 + 32 + 1 + 1];
  size_t n = 0;
  info[n++] = static_cast<unsigned char>(out_len >> 8);
  info[n++] = static_cast<unsigned char>(out_len);
  info[n++] = static_cast<unsigned char>(6 + label.size());
  std::memcpy(info + n, "tls13 ", 6);
  n += 6;
  std::memcpy(info + n, label.data(), label.size());
  n += label.size();
  info[n++] = 0;  // empty context
  info[n++] = 1;  // the block counter
  unsigned char block[EVP_MAX_MD_SIZE];
  size_t block_len = 0;
  bool ok = EVP_MAC_init(mac, secret, secret ? secret_len : 0, nullptr) == 1 && EVP_MAC_update(mac, info, n) == 1 &&
            EVP_MAC_final(mac, block, &block_len, sizeof block) == 1 && block_len >= out_len;
  if (ok) std::memcpy(out, block, out_len);
  OPENSSL_cleanse(block, sizeof block);
  return ok;
}

// Re-keys this thread's HMAC context with a dummy key, so no traffic secret stays in it (as
// the key, or as the padded key blocks HMAC keeps) once a derivation is over.
void forget_hmac_key(const EVP_MD* digest) {
  static const unsigned char kDummy[1] = {0};
  if (EVP_MAC_CTX* mac = hmac_contexts().get(digest)) EVP_MAC_init(mac, kDummy, sizeof kDummy, nullptr);
}

// A record's nonce. AES-GCM takes it whole as its "fixed IV" (EVP_CTRL_GCM_SET_IV_FIXED with
// length -1 restores the whole IV): EVP_CipherInit_ex with only an IV asks the provider for
// the IV length through its parameters every time, a third of a small record's EVP overhead.
bool set_nonce(EVP_CIPHER_CTX* ctx, bool gcm, unsigned char* iv, int encrypt) {
  if (gcm) return EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IV_FIXED, -1, iv) == 1;
  return EVP_CipherInit_ex(ctx, nullptr, nullptr, nullptr, iv, encrypt) == 1;
}

}  // namespace

std::unique_ptr<TlsRecords> TlsRecords::create(uint16_t suite, std::string_view client_secret,
                                               std::string_view server_secret, uint64_t write_seq,
                                               std::string& error) {
  size_t index = 0;
  while (index < 3 && kSuites[index].id != suite) ++index;
  if (index == 3) {
    error = "cipher suite not handled by the record layer";
    return nullptr;
  }
  const Suite& s = kSuites[index];
  if (client_secret.size() != s.hash_len || server_secret.size() != s.hash_len) {
    error = "traffic secret of the wrong length";
    return nullptr;
  }
  std::unique_ptr<TlsRecords> records(new TlsRecords());
  records->cipher_ = algorithms().cipher[index];
  records->digest_ = algorithms().digest[index];
  records->hash_len_ = s.hash_len;
  records->key_len_ = s.key_len;
  records->gcm_ = suite != 0x1303;
  if (!records->cipher_ || !records->digest_) {
    error = std::string(s.cipher) + " is not available from OpenSSL";
    return nullptr;
  }
  std::memcpy(records->read_.secret, client_secret.data(), s.hash_len);  // the client writes what we read
  std::memcpy(records->write_.secret, server_secret.data(), s.hash_len);
  if (!records->install(records->read_, false) || !records->install(records->write_, true)) {
    error = "cannot set up the record keys";
    return nullptr;
  }
  records->write_.seq = write_seq;
  return records;
}

std::string TlsRecords::kept_hmac_output_for_test(uint16_t suite) {
  size_t index = 0;
  while (index < 3 && kSuites[index].id != suite) ++index;
  if (index == 3 || !algorithms().digest[index]) return {};
  unsigned char out[16];
  if (!expand_label(algorithms().digest[index], nullptr, 0, "probe", out, sizeof out)) return {};
  return std::string(reinterpret_cast<const char*>(out), sizeof out);
}

TlsRecords::~TlsRecords() {
  for (Direction* d : {&read_, &write_}) {
    EVP_CIPHER_CTX_free(d->ctx);
    OPENSSL_cleanse(d->secret, sizeof d->secret);
    OPENSSL_cleanse(d->iv, sizeof d->iv);
  }
}

bool TlsRecords::install(Direction& d, bool encrypt) {
  unsigned char key[32];
  bool ok = expand_label(digest_, d.secret, hash_len_, "key", key, key_len_) &&
            expand_label(digest_, nullptr, 0, "iv", d.iv, sizeof d.iv);  // same secret
  forget_hmac_key(digest_);
  if (ok && !d.ctx) ok = (d.ctx = EVP_CIPHER_CTX_new()) != nullptr;
  // The default nonce length of both AEADs is the 12 bytes TLS 1.3 uses.
  if (ok) ok = EVP_CipherInit_ex(d.ctx, cipher_, nullptr, key, nullptr, encrypt ? 1 : 0) == 1;
  OPENSSL_cleanse(key, sizeof key);
  d.seq = 0;
  return ok;
}

bool TlsRecords::rebuild(Direction& d, bool encrypt) {
  uint64_t seq = d.seq;
  bool ok = install(d, encrypt);
  d.seq = seq;
  return ok;
}

void TlsRecords::rest() {
  for (Direction* d : {&read_, &write_}) {
    EVP_CIPHER_CTX_free(d->ctx);  // cleanses the key schedule
    d->ctx = nullptr;
  }
}

bool TlsRecords::next_secret(Direction& d) {
  unsigned char next[48];
  bool ok = expand_label(digest_, d.secret, hash_len_, "traffic upd", next, hash_len_);
  forget_hmac_key(digest_);
  if (!ok) return false;
  std::memcpy(d.secret, next, hash_len_);
  OPENSSL_cleanse(next, sizeof next);
  return true;
}

bool TlsRecords::update_read_key() { return next_secret(read_) && install(read_, false); }
bool TlsRecords::update_write_key() { return next_secret(write_) && install(write_, true); }

void TlsRecords::nonce(const Direction& d, unsigned char out[12]) const {
  std::memcpy(out, d.iv, 12);
  for (int i = 0; i < 8; ++i) out[11 - i] ^= static_cast<unsigned char>(d.seq >> (8 * i));
}

size_t TlsRecords::record_length(const unsigned char* header) {
  if (header[0] != kApplicationData) return 0;  // after the handshake every record is protected
  size_t len = (size_t(header[3]) << 8) | header[4];
  if (len < 1 + kTag || len > kMaxCiphertext) return 0;
  return kHeader + len;
}

size_t TlsRecords::seal_any(uint8_t type, const char* data, size_t len, char* out) {
  auto* o = reinterpret_cast<unsigned char*>(out);
  size_t inner = len + 1 + kTag;
  o[0] = kApplicationData;
  o[1] = 3;
  o[2] = 3;
  o[3] = static_cast<unsigned char>(inner >> 8);
  o[4] = static_cast<unsigned char>(inner);
  if (!write_.ctx && !rebuild(write_, true)) return 0;
  unsigned char iv[12];
  nonce(write_, iv);
  EVP_CIPHER_CTX* ctx = write_.ctx;
  int n = 0;
  size_t produced = 0;
  if (!set_nonce(ctx, gcm_, iv, 1)) return 0;
  if (EVP_EncryptUpdate(ctx, nullptr, &n, o, kHeader) != 1) return 0;
  // Content and type encrypted in place by one call: an EVP call costs more than the copy of
  // a typical response record, and the type byte alone took one.
  if (len > 0 && o + kHeader != reinterpret_cast<const unsigned char*>(data)) std::memmove(o + kHeader, data, len);
  o[kHeader + len] = type;
  // A failure leaves no plaintext in `out` (an output chunk, back in the pool soon).
  auto wipe = [&] {
    OPENSSL_cleanse(o + kHeader, len + 1);
    return size_t(0);
  };
  if (EVP_EncryptUpdate(ctx, o + kHeader, &n, o + kHeader, static_cast<int>(len + 1)) != 1) return wipe();
  produced += size_t(n);
  if (EVP_EncryptFinal_ex(ctx, o + kHeader + produced, &n) != 1) return wipe();
  produced += size_t(n);
  if (produced != len + 1) return wipe();
  if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, static_cast<int>(kTag), o + kHeader + produced) != 1) return wipe();
  ++write_.seq;
  return kHeader + inner;
}

TlsRecords::Open TlsRecords::open_into(const char* record, size_t record_len, char* out, uint8_t& type,
                                       size_t& content_len) {
  if (record_len < kHeader + 1 + kTag) return Open::bad_tag;
  const auto* r = reinterpret_cast<const unsigned char*>(record);
  auto* o = reinterpret_cast<unsigned char*>(out);
  size_t sealed = record_len - kHeader - kTag;
  if (!read_.ctx && !rebuild(read_, false)) return Open::bad_tag;
  unsigned char iv[12];
  nonce(read_, iv);
  EVP_CIPHER_CTX* ctx = read_.ctx;
  int n = 0;
  size_t produced = 0;
  if (!set_nonce(ctx, gcm_, iv, 0)) return Open::bad_tag;
  if (EVP_DecryptUpdate(ctx, nullptr, &n, r, kHeader) != 1) return Open::bad_tag;
  bool ok = EVP_DecryptUpdate(ctx, o, &n, r + kHeader, static_cast<int>(sealed)) == 1;
  if (ok) {
    produced = size_t(n);
    // The tag is checked only after the whole body was decrypted into `out`.
    ok = EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, static_cast<int>(kTag),
                             const_cast<unsigned char*>(r + kHeader + sealed)) == 1 &&
         EVP_DecryptFinal_ex(ctx, o + produced, &n) == 1;
    if (ok) produced += size_t(n);
  }
  if (!ok || produced != sealed) {
    OPENSSL_cleanse(o, sealed);  // forged: what it decrypted to is nobody's business
    return Open::bad_tag;
  }
  ++read_.seq;
  // TLSInnerPlaintext: content, the type, then zero padding (5.4).
  size_t end = sealed;
  while (end > 0 && o[end - 1] == 0) --end;
  if (end == 0) return Open::no_content_type;
  type = o[end - 1];
  content_len = end - 1;
  return content_len <= kMaxContent ? Open::ok : Open::overflow;
}

}  // namespace sprayer::proxy
