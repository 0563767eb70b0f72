// The head's line endings; unit-tested through both parsers.
#include "proxy/http/head_scanner.h"

namespace sprayer::proxy {

size_t HeadScanner::scan(const char* data, size_t len) {
  for (size_t i = 0; i < len && state_ != State::done; ++i) {
    const char c = data[i];
    switch (state_) {
      case State::before:  // empty lines before a start line are skipped, as llhttp does
        state_ = c == '\r' ? State::before_cr : c == '\n' ? State::before : State::line;
        break;
      case State::line:
        if (c == '\r') state_ = State::line_cr;
        else if (c == '\n') state_ = State::line_start;
        break;
      case State::line_start:
        state_ = c == '\r' ? State::end_cr : c == '\n' ? State::done : State::line;
        break;
      case State::before_cr:
      case State::line_cr:
      case State::end_cr:
        if (c != '\n') return i;
        state_ = state_ == State::before_cr ? State::before : state_ == State::line_cr ? State::line_start : State::done;
        break;
      case State::done:
        break;
    }
  }
  return len;
}

}  // namespace sprayer::proxy
