// Line endings in a message head, read next to llhttp, whose loose build takes a CR followed
// by any byte as a line end (the head's last one included): in a head every CR is followed by
// LF (a bare LF is let through, RFC 9112 2.2). Shared by the request and the response parser.
#pragma once

#include <cstddef>
#include <cstdint>

namespace sprayer::proxy {

class HeadScanner {
 public:
  void start() { state_ = State::before; }
  bool active() const { return state_ != State::done; }
  // Scans up to the end of the head: the offset of the byte that follows a CR and is not
  // LF, or len if there is none.
  size_t scan(const char* data, size_t len);

 private:
  enum class State : uint8_t { before, before_cr, line, line_cr, line_start, end_cr, done };
  State state_ = State::before;
};

}  // namespace sprayer::proxy
