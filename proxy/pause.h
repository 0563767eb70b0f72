// Why a connection stopped reading; reading resumes only when no reason is left.
#pragma once

#include <cstdint>

namespace sprayer::proxy {

enum PauseReason : uint8_t {
  kPausePeerFull = 1 << 0,      // the other side's write queue is over the high watermark
  kPauseNotConnected = 1 << 1,  // upstream not connected yet and held bytes are over the mark
  kPausePipeline = 1 << 2,      // a pipelined request waits for the current response
  kPauseClosing = 1 << 3,
  kPauseOwnWrites = 1 << 4,     // this side's own write queue is over the high watermark (TLS
                                // output its records provoke: it must read before it sends more)
  kPausePeerClosed = 1 << 5,    // the client's close_notify: nothing more is read from it
};

}  // namespace sprayer::proxy
