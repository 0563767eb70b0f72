// Session-ticket keys, shared through one file by both members of an active/standby pair so a
// device that fails over resumes its TLS session instead of paying for a full handshake.
#pragma once

#include <array>
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace sprayer::proxy {

// One key as stored in the file: 80 bytes = name (16) | HMAC-SHA256 key (32) | AES-256 key (32),
// the layout nginx uses, so an existing nginx key file works unchanged.
struct TlsTicketKey {
  static constexpr size_t kSize = 80;
  std::array<unsigned char, 16> name{};
  std::array<unsigned char, 32> hmac_key{};
  std::array<unsigned char, 32> aes_key{};
};

// Keys in order of use: keys[0] encrypts new tickets, every key decrypts. Never empty once
// loaded. Wiped from memory when the last user lets go.
struct TlsTicketKeys {
  std::vector<TlsTicketKey> keys;

  TlsTicketKeys() = default;
  TlsTicketKeys(const TlsTicketKeys&) = delete;
  TlsTicketKeys& operator=(const TlsTicketKeys&) = delete;
  ~TlsTicketKeys();

  // Index of the key with this 16-byte name, or npos.
  size_t find(const unsigned char* name) const;
  static constexpr size_t npos = static_cast<size_t>(-1);
};

// Ticket key file format. Either
//  - binary: the concatenation of one or more 80-byte keys (`openssl rand 80 > ticket.key`), or
//  - text: base64 of each 80-byte key (108 characters). A key may sit on one line or be wrapped
//    over several (`openssl rand -base64 80` wraps at 64); blank lines and lines starting with
//    '#' are ignored.
// A file is text when every byte is printable ASCII or whitespace (80 random bytes never are).
// The FIRST key encrypts; all keys decrypt. Rotate by prepending a new key, keeping the previous
// one or two for as long as tickets live (session_timeout), and pushing the same file to both
// members before reloading. Returns false with the reason ("line 3: ...") in error.
bool parse_ticket_keys(std::string_view content, std::vector<TlsTicketKey>& out, std::string& error);

// Reads and parses a key file; errors name the file.
bool read_ticket_key_file(const std::string& path, std::vector<TlsTicketKey>& out, std::string& error);

// A fresh random key (OpenSSL's CSPRNG: key material is never taken from an injected generator).
bool random_ticket_key(TlsTicketKey& out);

// Reads a whole (small) file; errors carry the path and errno text.
bool read_small_file(const std::string& path, std::string& out, std::string& error, size_t limit = 4 << 20);

}  // namespace sprayer::proxy
