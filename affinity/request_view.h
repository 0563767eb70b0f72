// A borrowed, parser-independent view of one request head: what user extraction reads.
// The proxy fills it from llhttp's pieces; nothing here owns or copies the bytes.
#pragma once

#include <cstddef>
#include <optional>
#include <span>
#include <string_view>

namespace sprayer::affinity {

struct Header {
  std::string_view name;
  std::string_view value;
};

struct RequestView {
  std::string_view method;
  std::string_view target;  // origin-form "path?query" as received (not decoded)
  std::span<const Header> headers;
};

// ASCII-only case folding: header names, parameter names and paths are ASCII, and
// locale-dependent tolower() has no place on the data path.
constexpr char ascii_lower(char c) noexcept {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

constexpr bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
  }
  return true;
}

// First header named `name` (case-insensitive, RFC 9110 5.1), or nullopt.
constexpr std::optional<std::string_view> find_header(const RequestView& request,
                                                      std::string_view name) noexcept {
  for (const Header& header : request.headers) {
    if (iequals(header.name, name)) return header.value;
  }
  return std::nullopt;
}

}  // namespace sprayer::affinity
