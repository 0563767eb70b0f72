// Why a connection stopped reading; reading resumes only when no reason is left.
#pragma once

#include <cstdint>

namespace sprayer::proxy {

enum PauseReason : uint8_t {
  kPausePeerFull = 1 << 0,      // the other side's write queue is over the high watermark
  kPauseNotConnected = 1 << 1,  // upstream not connected yet and held bytes are over the mark
  kPausePipeline = 1 << 2,      // a pipelined request waits for the current response
  kPauseClosing = 1 << 3,
};

}  // namespace sprayer::proxy
