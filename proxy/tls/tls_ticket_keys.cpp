// Ticket key file parsing (binary or base64 text) and key hygiene (wiped on release).
#include "proxy/tls/tls_ticket_keys.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>

namespace sprayer::proxy {

namespace {

constexpr size_t kBase64KeyChars = 108;  // 4 * ceil(80 / 3)

int base64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

// Strict decoding of one padded block of base64; false on any stray character.
bool decode_base64(std::string_view text, std::string& out) {
  out.clear();
  if (text.size() % 4 != 0) return false;
  for (size_t i = 0; i < text.size(); i += 4) {
    int v[4];
    int pad = 0;
    for (int j = 0; j < 4; ++j) {
      char c = text[i + j];
      if (c == '=' && i + 4 == text.size() && j >= 2) {
        v[j] = 0;
        ++pad;
        continue;
      }
      if (pad > 0) return false;  // data after padding
      v[j] = base64_value(c);
      if (v[j] < 0) return false;
    }
    uint32_t n = (uint32_t(v[0]) << 18) | (uint32_t(v[1]) << 12) | (uint32_t(v[2]) << 6) | uint32_t(v[3]);
    out.push_back(char(n >> 16));
    if (pad < 2) out.push_back(char((n >> 8) & 0xff));
    if (pad < 1) out.push_back(char(n & 0xff));
  }
  return true;
}

TlsTicketKey key_from_bytes(const unsigned char* p) {
  TlsTicketKey key;
  std::memcpy(key.name.data(), p, 16);
  std::memcpy(key.hmac_key.data(), p + 16, 32);
  std::memcpy(key.aes_key.data(), p + 48, 32);
  return key;
}

bool is_text(std::string_view content) {
  for (unsigned char c : content)
    if (!(c == '\n' || c == '\r' || c == '\t' || (c >= 0x20 && c < 0x7f))) return false;
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

bool parse_text(std::string_view content, std::vector<TlsTicketKey>& out, std::string& error) {
  std::string pending;  // base64 of the key being assembled (it may be wrapped over lines)
  std::string bytes;
  size_t line_no = 0;
  size_t key_line = 0;
  while (!content.empty()) {
    ++line_no;
    size_t eol = content.find('\n');
    std::string_view line = trim(content.substr(0, eol));
    content.remove_prefix(eol == std::string_view::npos ? content.size() : eol + 1);
    if (line.empty() || line.front() == '#') continue;
    if (pending.empty()) key_line = line_no;
    pending.append(line);
    if (pending.size() < kBase64KeyChars) continue;
    bool ok = pending.size() == kBase64KeyChars && decode_base64(pending, bytes) && bytes.size() == TlsTicketKey::kSize;
    OPENSSL_cleanse(pending.data(), pending.size());
    if (!ok) {
      OPENSSL_cleanse(bytes.data(), bytes.size());
      error = "line " + std::to_string(key_line) + ": not the base64 of one 80-byte key";
      return false;
    }
    out.push_back(key_from_bytes(reinterpret_cast<const unsigned char*>(bytes.data())));
    OPENSSL_cleanse(bytes.data(), bytes.size());
    pending.clear();
  }
  if (!pending.empty()) {
    OPENSSL_cleanse(pending.data(), pending.size());
    error = "line " + std::to_string(key_line) + ": incomplete key at end of file";
    return false;
  }
  return true;
}

}  // namespace

TlsTicketKeys::~TlsTicketKeys() {
  if (!keys.empty()) OPENSSL_cleanse(keys.data(), keys.size() * sizeof(TlsTicketKey));
}

size_t TlsTicketKeys::find(const unsigned char* name) const {
  for (size_t i = 0; i < keys.size(); ++i)
    if (CRYPTO_memcmp(keys[i].name.data(), name, keys[i].name.size()) == 0) return i;
  return npos;
}

bool parse_ticket_keys(std::string_view content, std::vector<TlsTicketKey>& out, std::string& error) {
  out.clear();
  out.reserve(content.size() / TlsTicketKey::kSize + 1);  // no reallocation leaves key copies behind
  if (is_text(content)) {
    if (!parse_text(content, out, error)) {
      out.clear();
      return false;
    }
  } else {
    if (content.size() % TlsTicketKey::kSize != 0) {
      error = "binary key file must hold a multiple of 80 bytes, found " + std::to_string(content.size());
      return false;
    }
    const auto* p = reinterpret_cast<const unsigned char*>(content.data());
    for (size_t off = 0; off < content.size(); off += TlsTicketKey::kSize) out.push_back(key_from_bytes(p + off));
  }
  if (out.empty()) {
    error = "no key found";
    return false;
  }
  return true;
}

bool read_small_file(const std::string& path, std::string& out, std::string& error, size_t limit) {
  out.clear();
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) {
    error = path + ": cannot open: " + std::strerror(errno);
    return false;
  }
  char buf[16 * 1024];
  bool ok = true;
  for (;;) {
    size_t n = std::fread(buf, 1, sizeof buf, f);
    out.append(buf, n);
    if (out.size() > limit) {
      error = path + ": larger than " + std::to_string(limit) + " bytes";
      ok = false;
      break;
    }
    if (n < sizeof buf) {
      if (std::ferror(f)) {
        error = path + ": cannot read: " + std::strerror(errno);
        ok = false;
      }
      break;
    }
  }
  std::fclose(f);
  OPENSSL_cleanse(buf, sizeof buf);
  return ok;
}

bool read_ticket_key_file(const std::string& path, std::vector<TlsTicketKey>& out, std::string& error) {
  std::string content;
  if (!read_small_file(path, content, error, 64 * 1024)) return false;
  bool ok = parse_ticket_keys(content, out, error);
  OPENSSL_cleanse(content.data(), content.size());
  if (!ok) error = path + ": " + error;
  return ok;
}

bool random_ticket_key(TlsTicketKey& out) {
  return RAND_bytes(out.name.data(), int(out.name.size())) == 1 &&
         RAND_bytes(out.hmac_key.data(), int(out.hmac_key.size())) == 1 &&
         RAND_bytes(out.aes_key.data(), int(out.aes_key.size())) == 1;
}

}  // namespace sprayer::proxy
