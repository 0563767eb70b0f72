// Text and hashing helpers for poolsim's request handlers: query parsing, percent and base64
// decoding, FNV-1a 64, JSON escaping, durations. Pure functions, no I/O.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace poolsim {

constexpr uint64_t kFnvOffset = 0xcbf29ce484222325ULL;
constexpr uint64_t kFnvPrime = 0x100000001b3ULL;

inline uint64_t fnv1a64_update(uint64_t hash, const char* data, size_t len) {
  for (size_t i = 0; i < len; ++i) {
    hash ^= static_cast<unsigned char>(data[i]);
    hash *= kFnvPrime;
  }
  return hash;
}

// 16 lowercase hex digits, zero-padded, so tests can compare with f"{h:016x}".
std::string hex64(uint64_t value);

bool iequals(std::string_view a, std::string_view b);
bool istarts_with(std::string_view text, std::string_view prefix);

// RFC 3986 percent-decoding; '+' stays '+' (ActiveSync clients encode a space as %20).
// Malformed escapes are kept literally rather than rejected: poolsim reports what it saw.
std::string percent_decode(std::string_view text);

// Standard alphabet, padding optional; nullopt on a character outside the alphabet.
std::optional<std::string> base64_decode(std::string_view text);

// Raw (still encoded) value of the first `name=value` pair whose name matches
// case-insensitively; a bare `name` yields an empty value.
std::optional<std::string_view> query_param(std::string_view query, std::string_view name);

// Appends `text` as a quoted JSON string.
void append_json_string(std::string& out, std::string_view text);
void append_uint(std::string& out, uint64_t value);
void append_hex(std::string& out, uint64_t value);  // no padding, for chunk sizes

// A header value must never let request bytes inject a header: control characters become '?'.
std::string header_safe(std::string_view text);

// "500ms", "30s", "2m", "1h", "1m30s", "0"; milliseconds out.
bool parse_duration_ms(std::string_view text, uint64_t& out);
bool parse_uint(std::string_view text, uint64_t& out);
// Optional leading '-', then digits.
bool parse_int(std::string_view text, int64_t& out);

// The key a user is filed under in user_owner, by sprayer's default rules (affinity/user_key.h):
// trim, "CN=Jane Doe/O=Acme" -> "Jane Doe", "DOMAIN\user" -> "user", "user@domain" -> "user",
// ASCII lower case. Kept here so poolsim does not link sprayer's libraries.
std::string normalise_user(std::string_view raw);

}  // namespace poolsim
