// What the HTTP parser fuzz targets share: where a head that a strict reader accepts ends.
#pragma once

#include <string_view>

namespace sprayer::fuzz {

// A hex digit's value, or -1 (chunk sizes).
inline int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The offset just past the empty line that ends a head whose lines all end in CRLF (empty
// lines before the start line skipped), or npos when a line ends otherwise: a bare LF
// (RFC 9112 2.2 lets a recipient accept it) or a CR followed by another byte.
inline size_t crlf_head_end(std::string_view bytes) {
  bool started = false;
  size_t line = 0;
  for (size_t i = 0; i < bytes.size(); ++i) {
    if (bytes[i] == '\r' && (i + 1 >= bytes.size() || bytes[i + 1] != '\n')) return std::string_view::npos;
    if (bytes[i] != '\n') continue;
    if (i == 0 || bytes[i - 1] != '\r') return std::string_view::npos;
    if (i - line == 1) {
      if (started) return i + 1;
    } else {
      started = true;
    }
    line = i + 1;
  }
  return std::string_view::npos;
}

}  // namespace sprayer::fuzz
