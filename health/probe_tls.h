// TLS for HTTPS health checks, injected: health/ holds no TLS code and does not depend on
// proxy/, which supplies sessions built from each server's backend TLS settings (the same CA,
// SNI, verification and client certificate as the data path). A session does no I/O: the
// checker moves the ciphertext, so tests can use a fake.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace sprayer::health {

class ProbeTls {
 public:
  enum class Status { ok, want_io, closed, error };

  virtual ~ProbeTls() = default;
  // Advances the handshake with what was fed; ok once it is complete (verification passed).
  virtual Status handshake() = 0;
  virtual void feed(const char* data, size_t len) = 0;       // ciphertext from the socket
  virtual Status read(std::string& plaintext) = 0;           // appends what is decrypted
  virtual Status write(std::string_view plaintext) = 0;      // after the handshake only
  virtual std::string take_output() = 0;                     // ciphertext to send
  virtual std::string error() const = 0;                     // why handshake/read failed
};

// A session for the server with this id, or null when it cannot be made (counts as a failed
// connect).
using ProbeTlsFactory = std::function<std::unique_ptr<ProbeTls>(const std::string& server_id)>;

}  // namespace sprayer::health
