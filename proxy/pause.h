// Why a connection stopped reading; reading resumes only when no reason is left.
#pragma once

#include <cstdint>

namespace sprayer::proxy {

enum class PauseReason : uint8_t {
  peer_full = 1 << 0,      // the other side's write queue is over the high watermark
  not_connected = 1 << 1,  // upstream not connected yet and held bytes are over the mark
  pipeline = 1 << 2,       // a pipelined request waits for the current response
  // This side's own write queue is over the high watermark, whatever filled it: a response
  // the client does not read, or TLS output its own records provoke. Nothing more is read or
  // parsed (held pipelined requests included) until it falls below the low one.
  own_writes = 1 << 3,
  peer_closed = 1 << 4,    // the client's close_notify: nothing more is read from it
};

// A set of pause reasons (a bitmask).
class PauseReasons {
 public:
  constexpr PauseReasons() = default;
  constexpr PauseReasons(PauseReason reason) : bits_(static_cast<uint8_t>(reason)) {}  // NOLINT: implicit on purpose
  constexpr PauseReasons operator|(PauseReasons other) const { return PauseReasons(bits_ | other.bits_); }
  void add(PauseReasons reasons) { bits_ |= reasons.bits_; }
  void remove(PauseReasons reasons) { bits_ &= static_cast<uint8_t>(~reasons.bits_); }
  constexpr bool has(PauseReason reason) const { return (bits_ & static_cast<uint8_t>(reason)) != 0; }
  constexpr bool empty() const { return bits_ == 0; }
  void clear() { bits_ = 0; }

 private:
  constexpr explicit PauseReasons(int bits) : bits_(static_cast<uint8_t>(bits)) {}
  uint8_t bits_ = 0;
};

constexpr PauseReasons operator|(PauseReason a, PauseReason b) { return PauseReasons(a) | PauseReasons(b); }

}  // namespace sprayer::proxy
