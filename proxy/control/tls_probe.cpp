// A TlsEngine in client mode behind the health::ProbeTls interface.
#include "proxy/control/tls_probe.h"

#include "proxy/log.h"
#include "proxy/tls/tls_engine.h"

namespace sprayer::proxy {

namespace {

health::ProbeTls::Status convert(TlsStatus status) {
  switch (status) {
    case TlsStatus::ok: return health::ProbeTls::Status::ok;
    case TlsStatus::want_io: return health::ProbeTls::Status::want_io;
    case TlsStatus::closed: return health::ProbeTls::Status::closed;
    case TlsStatus::error: return health::ProbeTls::Status::error;
  }
  return health::ProbeTls::Status::error;
}

class EngineProbe final : public health::ProbeTls {
 public:
  EngineProbe(TlsProbeFactory& owner, std::string id, std::shared_ptr<const TlsClientContext> context,
              BufferPool& pool)
      : owner_(owner), id_(std::move(id)), engine_(std::move(context), pool, nullptr) {}

  Status handshake() override {
    TlsStatus s = engine_.handshake();
    if (s == TlsStatus::ok) owner_.report(id_, "");
    if (s == TlsStatus::error || s == TlsStatus::closed)
      owner_.report(id_, engine_.error().empty() ? "the server closed the connection" : std::string(engine_.error()));
    return convert(s);
  }
  void feed(const char* data, size_t len) override { engine_.feed_ciphertext(data, len); }
  Status read(std::string& plaintext) override {
    for (;;) {
      Slice out;
      TlsStatus s = engine_.read_plaintext(out);
      if (s != TlsStatus::ok) return convert(s);
      plaintext.append(out.data(), out.size());
    }
  }
  Status write(std::string_view plaintext) override { return convert(engine_.write_plaintext(plaintext)); }
  std::string take_output() override {
    std::string out;
    engine_.take_ciphertext(out);
    return out;
  }
  std::string error() const override { return std::string(engine_.error()); }

 private:
  TlsProbeFactory& owner_;
  std::string id_;
  TlsEngine engine_;
};

}  // namespace

std::unique_ptr<health::ProbeTls> TlsProbeFactory::make(const std::string& server_id) {
  for (const ServerTarget& s : servers_) {
    if (s.id != server_id || !s.tls) continue;
    auto probe = std::make_unique<EngineProbe>(*this, server_id, s.tls->context.load(), buffers_);
    if (!probe->error().empty()) return nullptr;  // out of memory at creation
    return probe;
  }
  return nullptr;
}

void TlsProbeFactory::report(const std::string& server_id, const std::string& error) {
  std::string& last = last_error_[server_id];
  if (last == error) return;
  if (!error.empty())
    LOG_WARN("health check of %s: TLS handshake failed: %s", server_id.c_str(), error.c_str());
  else if (!last.empty())
    LOG_INFO("health check of %s: TLS handshake succeeds again", server_id.c_str());
  last = error;
}

}  // namespace sprayer::proxy
