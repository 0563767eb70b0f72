// A listening socket of one worker (SO_REUSEPORT, so every worker owns one per address).
// Accepts with accept4 on a uv_poll so that accepting can be paused and resumed exactly:
// at max_connections, and on EMFILE/ENFILE until descriptors free up. SO_REUSEPORT would
// also let a second process join silently: probe_listener refuses an address taken.
#pragma once

#include <uv.h>

#include <memory>
#include <string>

#include "conf/config.h"

namespace sprayer::proxy {

class Worker;
class TlsContext;

// Before this process's workers bind `config`: binds it once without SO_REUSEPORT, which
// fails when any other socket listens there (another sprayer's workers included). 0, or a
// negative errno with the reason in `error` (the address, and who holds it when findable).
int probe_listener(const conf::ListenerConfig& config, std::string& error);

class Listener {
 public:
  // slot: the listener's row in the per-listener stats (Runtime::listener_slots).
  Listener(Worker& worker, const conf::ListenerConfig& config, std::shared_ptr<const TlsContext> tls, uint16_t slot);
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  // Before open(): use this listening socket, handed over by the process this one replaces
  // (binary upgrade), instead of binding one. It stays the same kernel socket, in the same
  // SO_REUSEPORT group, so the hand-over refuses no connection.
  void adopt(int fd) { inherited_fd_ = fd; }
  int open(std::string& error);  // 0 or a negative errno
  int fd() const { return fd_; }
  void pause();
  void resume();
  bool paused() const { return paused_; }
  void close();  // idempotent; deletes itself after libuv's close callback

  const std::string& name() const { return name_; }
  // New connections get the new certificates; established ones keep the context they have.
  void set_tls(std::shared_ptr<const TlsContext> tls) { if (tls_ && tls) tls_ = std::move(tls); }
  // Reload kept this listener's address (so its socket): new settings and TLS (null = plain)
  // for the connections accepted from now on.
  void reconfigure(const conf::ListenerConfig& config, std::shared_ptr<const TlsContext> tls, uint16_t slot);
  const conf::Endpoint& address() const { return address_; }

 private:
  ~Listener() = default;
  static void on_poll(uv_poll_t* handle, int status, int events) noexcept;
  static void on_close(uv_handle_t* handle) noexcept;
  void on_readable();
  int bind_socket(std::string& error);
  int take_inherited(std::string& error);

  Worker& worker_;
  conf::ListenerConfig config_;  // a copy: the Config it came from may be replaced by a reload
  std::shared_ptr<const TlsContext> tls_;
  std::string name_;
  conf::Endpoint address_;
  uint32_t backlog_;
  uint16_t slot_;
  uv_poll_t poll_{};
  int fd_ = -1;
  int inherited_fd_ = -1;
  bool paused_ = true;
  bool closing_ = false;
};

}  // namespace sprayer::proxy
