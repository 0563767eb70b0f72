// The decoders user extraction shares: percent-decoding, query parameters, base64 (RFC
// 4648), and the UTF-8 and control-character check of a user. Every loop is bounded by its
// input's length. Inline: they sit on the per-request path of extract.cpp alone.
#pragma once

#include <array>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "affinity/request_view.h"

namespace sprayer::affinity::decode {

// ---- percent-decoding ------------------------------------------------------------

constexpr int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Decodes the character at in[i] (a plain byte, "%XX", or '+' when plus_as_space) and
// advances i past it. False on a broken escape.
inline bool decode_one(std::string_view in, std::size_t& i, bool plus_as_space, char& out) noexcept {
  const char c = in[i];
  if (c == '%') {
    if (in.size() - i < 3) return false;
    const int hi = hex_value(in[i + 1]);
    const int lo = hex_value(in[i + 2]);
    if (hi < 0 || lo < 0) return false;
    out = static_cast<char>((hi << 4) | lo);
    i += 3;
    return true;
  }
  out = (plus_as_space && c == '+') ? ' ' : c;
  i += 1;
  return true;
}

constexpr bool needs_decoding(char c, bool plus_as_space) noexcept {
  return c == '%' || (plus_as_space && c == '+');
}

enum class DecodeError { ok, bad_escape, too_long };

// Copies runs of plain characters in one go; only escapes go byte by byte.
inline DecodeError percent_decode(std::string_view in, bool plus_as_space, std::size_t max_out,
                           std::string& out) {
  out.clear();
  std::size_t i = 0;
  while (i < in.size()) {
    std::size_t run = i;
    while (run < in.size() && !needs_decoding(in[run], plus_as_space)) ++run;
    if (run - i > max_out - out.size()) return DecodeError::too_long;
    out.append(in.data() + i, run - i);
    i = run;
    if (i == in.size()) break;
    char c;
    if (!decode_one(in, i, plus_as_space, c)) return DecodeError::bad_escape;
    if (out.size() == max_out) return DecodeError::too_long;
    out.push_back(c);
  }
  return DecodeError::ok;
}

// Compares a raw (possibly encoded) query parameter name with a plain one, ignoring
// ASCII case, without allocating.
inline bool name_equals(std::string_view raw, std::string_view want) noexcept {
  if (raw.size() == want.size() && iequals(raw, want)) return true;  // the usual case
  if (raw.find('%') == std::string_view::npos && raw.find('+') == std::string_view::npos) return false;
  std::size_t j = 0;
  for (std::size_t i = 0; i < raw.size();) {
    char c;
    if (!decode_one(raw, i, true, c)) return false;
    if (j == want.size() || ascii_lower(c) != ascii_lower(want[j])) return false;
    ++j;
  }
  return j == want.size();
}

// Calls f(name, value) with the raw pieces of each "name=value" pair of a query, in
// order, until f returns false.
template <class F>
void for_each_param(std::string_view query, F&& f) {
  while (true) {
    const std::size_t amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    if (!pair.empty()) {
      const std::size_t eq = pair.find('=');
      const std::string_view name = pair.substr(0, eq);
      const std::string_view value = eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1);
      if (!f(name, value)) return;
    }
    if (amp == std::string_view::npos) return;
    query.remove_prefix(amp + 1);
  }
}

// ---- base64 (RFC 4648 standard alphabet) ----------------------------------------

constexpr std::array<signed char, 256> make_base64_table() {
  std::array<signed char, 256> table{};
  for (auto& v : table) v = -1;
  constexpr std::string_view alphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  for (std::size_t i = 0; i < alphabet.size(); ++i) {
    table[static_cast<unsigned char>(alphabet[i])] = static_cast<signed char>(i);
  }
  return table;
}

inline constexpr std::array<signed char, 256> kBase64 = make_base64_table();

inline int base64_value(char c) noexcept { return kBase64[static_cast<unsigned char>(c)]; }

// Number of data characters (before the '=' padding) if `in` is base64 with optional
// padding, else nullopt. Missing padding is tolerated; misplaced padding is not.
inline std::optional<std::size_t> base64_data_length(std::string_view in) noexcept {
  std::size_t n = in.size();
  std::size_t pad = 0;
  while (n > 0 && in[n - 1] == '=' && pad < 2) {
    --n;
    ++pad;
  }
  if (n % 4 == 1) return std::nullopt;
  if (pad > 0 && (n + pad) % 4 != 0) return std::nullopt;
  for (std::size_t i = 0; i < n; ++i) {
    if (base64_value(in[i]) < 0) return std::nullopt;
  }
  return n;
}

// Decodes data characters already checked by base64_data_length.
inline std::string base64_decode(std::string_view data) {
  std::string out;
  out.reserve(data.size() / 4 * 3 + 2);
  std::uint32_t acc = 0;
  int bits = 0;
  for (char c : data) {
    acc = (acc << 6) | static_cast<std::uint32_t>(base64_value(c));
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xFF));
      acc &= (1u << bits) - 1;
    }
  }
  return out;
}

// ---- user and device field checks ------------------------------------------------

// Empty if `s` is valid UTF-8 without control characters (C0, DEL, C1), else why not.
inline std::string_view check_text(std::string_view s) noexcept {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  for (std::size_t i = 0; i < n;) {
    const unsigned char c = p[i];
    if (c < 0x80) {
      if (c < 0x20 || c == 0x7F) return "control character in user";
      ++i;
      continue;
    }
    std::size_t len;
    unsigned char lo = 0x80;
    unsigned char hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;  // overlong
      if (c == 0xED) hi = 0x9F;  // UTF-16 surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;  // overlong
      if (c == 0xF4) hi = 0x8F;  // above U+10FFFF
    } else {
      return "invalid UTF-8 in user";
    }
    if (n - i < len) return "invalid UTF-8 in user";
    if (p[i + 1] < lo || p[i + 1] > hi) return "invalid UTF-8 in user";
    for (std::size_t k = 2; k < len; ++k) {
      if (p[i + k] < 0x80 || p[i + k] > 0xBF) return "invalid UTF-8 in user";
    }
    if (c == 0xC2 && p[i + 1] <= 0x9F) return "control character in user";  // C1
    i += len;
  }
  return {};
}

}  // namespace sprayer::affinity::decode
