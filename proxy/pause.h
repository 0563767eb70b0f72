// Why a connection stopped reading; reading resumes only when no reason is left.
#pragma once

#include <cstdint>

namespace sprayer::proxy {

enum class PauseReason : uint8_t {
  peer_full = 1 << 0,      // the other side's write queue is over the high watermark
  not_connected = 1 << 1,  // upstream not connected yet and held bytes are over the mark
  pipeline = 1 << 2,       // a pipelined request waits for the current response
  own_writes = 1 << 4,     // this side's own write queue is over the high watermark (TLS
                           // output its records provoke: it must read before it sends more)
  peer_closed = 1 << 5,    // the client's close_notify: nothing more is read from it
  // The bytes queued towards this client are over the high watermark: no further request
  // is read or parsed (pipelined ones included) until they fall below the low one.
  client_full = 1 << 3,
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
