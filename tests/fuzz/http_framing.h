// What the HTTP parser fuzz targets share: where a head that a strict reader accepts ends,
// a strict chunked decoder (the oracles, written apart from the parsers' scanners), and the
// ways a stream is cut into reads.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

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

// A strict chunked decoder (RFC 9112 7.1) of the bytes after a head, which must end exactly
// with the body: size lines of hex digits and extensions after `;` or whitespace, every line
// and every chunk's data ended by CRLF, no other CR or LF in a size or trailer line. False if
// the bytes are not such a body.
inline bool strict_dechunk(std::string_view in, std::string& out) {
  size_t p = 0;
  auto line = [&](std::string_view& l) {
    size_t crlf = in.find("\r\n", p);
    if (crlf == std::string_view::npos) return false;
    l = in.substr(p, crlf - p);
    p = crlf + 2;
    return l.find_first_of("\r\n") == std::string_view::npos;
  };
  for (;;) {
    std::string_view size_line;
    if (!line(size_line)) return false;
    uint64_t size = 0;
    size_t digits = 0;
    while (digits < size_line.size() && hex_digit(size_line[digits]) >= 0) {
      if (digits == 16) return false;
      size = size * 16 + uint64_t(hex_digit(size_line[digits++]));
    }
    if (digits == 0) return false;
    if (digits < size_line.size() && std::string_view(";\t ").find(size_line[digits]) == std::string_view::npos)
      return false;
    if (size == 0) break;
    if (in.size() - p < size + 2 || in.substr(p + size, 2) != "\r\n") return false;
    out.append(in.substr(p, size));
    p += size + 2;
  }
  for (;;) {  // trailers up to the empty line
    std::string_view trailer;
    if (!line(trailer)) return false;
    if (trailer.empty()) return p == in.size();
  }
}

// xorshift32: the cuts a stream gets follow from the input alone, so a finding replays.
inline uint32_t next_random(uint32_t& state) {
  state ^= state << 13;
  state ^= state >> 17;
  state ^= state << 5;
  return state;
}

// Calls run(sizes) for each way of reading `stream_size` bytes that a target checks against
// the whole stream: in two at every offset (short streams) or at 32 chosen ones; one byte at
// a time; and pieces of sizes chosen by `size_byte` (small ones, around framing boundaries).
template <typename Run>
void for_each_split(size_t stream_size, uint32_t seed, uint8_t size_byte, Run run) {
  if (stream_size <= 256) {
    for (size_t cut = 1; cut < stream_size; ++cut) run(std::vector<size_t>{cut});
  } else {
    for (int i = 0; i < 32; ++i) run(std::vector<size_t>{1 + next_random(seed) % (stream_size - 1)});
  }
  if (stream_size <= 4096) run(std::vector<size_t>(stream_size, 1));
  std::vector<size_t> sizes;
  for (size_t total = 0; total < stream_size;) {
    size_t n = 1 + next_random(seed) % ((size_byte & 0x0f) + 2);
    sizes.push_back(n);
    total += n;
  }
  run(sizes);
}

}  // namespace sprayer::fuzz
