// Strict chunked framing (RFC 9112 7.1) read next to llhttp, whose loose build skips the two
// bytes after chunk data and takes any byte after a CR in a size line: a body that a strict
// reader frames otherwise is refused rather than passed on as llhttp read it. Shared by the
// request and the response parser; no socket, no llhttp.
#pragma once

#include <cstddef>
#include <cstdint>

namespace sprayer::proxy {

class ChunkScanner {
 public:
  enum class Error : uint8_t {
    none,
    bad_chunk,            // a size line, a data end or a trailer line that is not strict
    extension_too_large,  // the chunk extensions of one size line, over the limit
    trailer_too_large,    // the trailer section, over the limit
  };
  struct Scan {
    size_t good = 0;  // the bytes before the refused one (all of them when error is none)
    Error error = Error::none;
  };

  static const char* name(Error error);  // for the logs

  void start() {
    state_ = State::size_first;
    remaining_ = 0;
    digits_ = 0;
    extension_bytes_ = 0;
    trailer_bytes_ = 0;
  }
  bool active() const { return state_ != State::done; }
  // Reads up to the end of the chunked body (the CRLF after the trailers).
  Scan scan(const char* data, size_t len, uint32_t max_extension, uint32_t max_trailer);

 private:
  enum class State : uint8_t {
    size_first, size, extension, size_lf, data, data_cr, data_lf, trailer_start, trailer, trailer_lf, final_lf,
    done,
  };
  Error step(char c, uint32_t max_extension, uint32_t max_trailer);

  State state_ = State::done;
  uint64_t remaining_ = 0;
  uint8_t digits_ = 0;
  uint32_t extension_bytes_ = 0;
  uint32_t trailer_bytes_ = 0;
};

}  // namespace sprayer::proxy
