// The chunked framing state machine; unit-tested through both parsers
// (tests/unit/http_request_parser_test.cpp, tests/unit/http_response_parser_test.cpp).
#include "proxy/http/chunk_scanner.h"

#include <algorithm>

namespace sprayer::proxy {
namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

const char* ChunkScanner::name(Error error) {
  switch (error) {
    case Error::none: return "none";
    case Error::bad_chunk: return "bad_chunk";
    case Error::extension_too_large: return "chunk_extension_too_large";
    case Error::trailer_too_large: return "trailer_too_large";
  }
  return "unknown";
}

ChunkScanner::Scan ChunkScanner::scan(const char* data, size_t len, uint32_t max_extension, uint32_t max_trailer) {
  size_t i = 0;
  while (i < len && state_ != State::done) {
    if (state_ == State::data) {
      // Chunk data is skipped whole, not read byte by byte.
      const uint64_t take = std::min<uint64_t>(remaining_, len - i);
      i += static_cast<size_t>(take);
      remaining_ -= take;
      if (remaining_ == 0) state_ = State::data_cr;
      continue;
    }
    const State before = state_;
    Error e = step(data[i], max_extension, max_trailer);
    if (e != Error::none) return Scan{i, e};
    // A size or trailer line's first byte is looked at again in the state it leads to.
    const bool reread = (before == State::size && state_ == State::extension) ||
                        (before == State::trailer_start && state_ == State::trailer);
    if (!reread) ++i;
  }
  return Scan{len, Error::none};
}

ChunkScanner::Error ChunkScanner::step(char c, uint32_t max_extension, uint32_t max_trailer) {
  switch (state_) {
    case State::size_first:
    case State::size: {
      const int v = hex_value(c);
      if (v >= 0) {
        if (++digits_ > 16) return Error::bad_chunk;  // over 64 bits
        remaining_ = remaining_ * 16 + static_cast<uint64_t>(v);
        state_ = State::size;
      } else if (state_ == State::size && c == '\r') {
        state_ = State::size_lf;
      } else if (state_ == State::size && (c == ';' || c == ' ' || c == '\t')) {
        state_ = State::extension;  // counted there
      } else {
        return Error::bad_chunk;
      }
      return Error::none;
    }
    case State::extension:
      if (c == '\r') state_ = State::size_lf;
      else if (c == '\n') return Error::bad_chunk;
      else if (++extension_bytes_ > max_extension) return Error::extension_too_large;
      return Error::none;
    case State::size_lf:
      if (c != '\n') return Error::bad_chunk;
      digits_ = 0;
      state_ = remaining_ != 0 ? State::data : State::trailer_start;
      return Error::none;
    case State::data_cr:
      if (c != '\r') return Error::bad_chunk;
      state_ = State::data_lf;
      return Error::none;
    case State::data_lf:
      if (c != '\n') return Error::bad_chunk;
      state_ = State::size_first;
      return Error::none;
    case State::trailer_start:
      state_ = c == '\r' ? State::final_lf : State::trailer;  // a trailer's bytes are counted there
      return Error::none;
    case State::trailer:
      if (c == '\r') state_ = State::trailer_lf;
      else if (c == '\n') return Error::bad_chunk;
      else if (++trailer_bytes_ > max_trailer) return Error::trailer_too_large;
      return Error::none;
    case State::trailer_lf:
      if (c != '\n') return Error::bad_chunk;
      state_ = State::trailer_start;
      return Error::none;
    case State::final_lf:
      if (c != '\n') return Error::bad_chunk;
      state_ = State::done;
      return Error::none;
    case State::data:
    case State::done:
      return Error::none;
  }
  return Error::none;
}

}  // namespace sprayer::proxy
