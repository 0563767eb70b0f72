// Accept loop of one worker: bounded batch per wake-up so one busy listener cannot starve
// the connections already accepted.
#include "proxy/listener.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "proxy/downstream_connection.h"
#include "proxy/log.h"
#include "proxy/port_owner.h"
#include "proxy/worker.h"

namespace sprayer::proxy {
namespace {

constexpr int kAcceptBatch = 64;

bool make_sockaddr(const conf::Endpoint& ep, sockaddr_storage& ss, socklen_t& len) {
  std::memset(&ss, 0, sizeof ss);
  auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
  if (inet_pton(AF_INET, ep.host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(ep.port);
    len = sizeof(sockaddr_in);
    return true;
  }
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
  if (inet_pton(AF_INET6, ep.host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(ep.port);
    len = sizeof(sockaddr_in6);
    return true;
  }
  return false;
}

// Options set once on the listening socket that take effect on every socket it accepts
// (Linux), instead of a setsockopt per connection:
//  - TCP_NODELAY (inherited): responses go out as they are written (the writer batches them);
//  - TCP_QUICKACK off: the request is acknowledged by the response instead of by a pure ACK
//    of its own (a new connection starts in quick-ACK mode), one segment less per
//    connection for the client's kernel and ours (HAProxy's tcp-smart-accept does the same). A client that waits for that ACK (a head
//    and a body written apart under Nagle) gets it with the delayed-ACK timer, as on any
//    connection after its first exchanges.
void set_inherited_options(int fd) {
  int one = 1;
  int zero = 0;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &zero, sizeof zero);
}

}  // namespace

int probe_listener(const conf::ListenerConfig& config, std::string& error) {
  sockaddr_storage ss;
  socklen_t len = 0;
  if (!make_sockaddr(config.address, ss, len)) {
    error = "listener " + config.name + ": not a numeric address: " + config.address.host;
    return -EINVAL;
  }
  int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    int err = errno;
    error = "listener " + config.name + ": socket: " + std::strerror(err);
    return -err;
  }
  int one = 1;
  // SO_REUSEADDR: connections of an earlier run in TIME_WAIT do not count as taken.
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (ss.ss_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  // A standby's VIP is not on this host yet: the probe binds it the way the listener will.
  if (config.freebind) setsockopt(fd, IPPROTO_IP, IP_FREEBIND, &one, sizeof one);
  int rc = ::bind(fd, reinterpret_cast<sockaddr*>(&ss), len);
  int err = errno;
  ::close(fd);
  if (rc == 0) return 0;
  if (err == EADDRINUSE) {
    std::string owner = describe_port_owner(config.address.port);
    error = "listener " + config.name + ": cannot listen on " + config.address.to_string() + ": already in use" +
            (owner.empty() ? std::string() : " by " + owner) +
            "; sprayer does not share a port with another process (stop that one, or use another address)";
  } else {
    error = "listener " + config.name + ": cannot listen on " + config.address.to_string() + ": " + std::strerror(err);
  }
  return -err;
}

Listener::Listener(Worker& worker, const conf::ListenerConfig& config, std::shared_ptr<const TlsContext> tls,
                   uint16_t slot)
    : worker_(worker),
      config_(config),
      tls_(std::move(tls)),
      name_(config.name),
      address_(config.address),
      backlog_(config.backlog),
      slot_(slot) {}

int Listener::open(std::string& error) {
  int rc = inherited_fd_ >= 0 ? take_inherited(error) : bind_socket(error);
  if (rc != 0) return rc;
  rc = uv_poll_init(worker_.loop(), &poll_, fd_);
  if (rc != 0) {
    error = "listener " + name_ + ": uv_poll_init: " + uv_strerror(rc);
    ::close(fd_);
    fd_ = -1;
    return rc;
  }
  poll_.data = this;
  resume();
  return 0;
}

int Listener::take_inherited(std::string& error) {
  fd_ = inherited_fd_;
  inherited_fd_ = -1;
  int flags = fcntl(fd_, F_GETFL);
  if (flags < 0 || fcntl(fd_, F_SETFL, flags | O_NONBLOCK) != 0 || fcntl(fd_, F_SETFD, FD_CLOEXEC) != 0 ||
      ::listen(fd_, static_cast<int>(backlog_)) != 0) {
    int err = errno;
    error = "listener " + name_ + ": inherited socket for " + address_.to_string() + ": " + std::strerror(err);
    ::close(fd_);
    fd_ = -1;
    return -err;
  }
  set_inherited_options(fd_);  // the process that handed it over may not have set them
  return 0;
}

int Listener::bind_socket(std::string& error) {
  sockaddr_storage ss;
  socklen_t len = 0;
  if (!make_sockaddr(address_, ss, len)) {
    error = "listener " + name_ + ": not a numeric address: " + address_.host;
    return -EINVAL;
  }
  fd_ = ::socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd_ < 0) {
    int err = errno;
    error = "listener " + name_ + ": socket: " + std::strerror(err);
    return -err;
  }
  int one = 1;
  setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  setsockopt(fd_, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  if (ss.ss_family == AF_INET6) setsockopt(fd_, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  // The standby of a pair listens on the virtual IP before keepalived gives it the address;
  // IP_FREEBIND (per socket, IPv4 and IPv6) lets bind() accept it, with no system-wide sysctl.
  if (config_.freebind && setsockopt(fd_, IPPROTO_IP, IP_FREEBIND, &one, sizeof one) != 0) {
    int err = errno;
    error = "listener " + name_ + ": IP_FREEBIND: " + std::strerror(err);
    ::close(fd_);
    fd_ = -1;
    return -err;
  }
  if (::bind(fd_, reinterpret_cast<sockaddr*>(&ss), len) != 0 || ::listen(fd_, static_cast<int>(backlog_)) != 0) {
    int err = errno;
    error = "listener " + name_ + ": cannot listen on " + address_.to_string() + ": " + std::strerror(err);
    ::close(fd_);
    fd_ = -1;
    return -err;
  }
  set_inherited_options(fd_);
  return 0;
}

void Listener::reconfigure(const conf::ListenerConfig& config, std::shared_ptr<const TlsContext> tls, uint16_t slot) {
  config_ = config;
  tls_ = std::move(tls);
  name_ = config.name;
  slot_ = slot;
  if (config.backlog != backlog_ && fd_ >= 0 && !closing_) {
    backlog_ = config.backlog;
    ::listen(fd_, static_cast<int>(backlog_));  // Linux applies a new backlog to a listening socket
  }
}

void Listener::pause() {
  if (paused_ || closing_) return;
  paused_ = true;
  uv_poll_stop(&poll_);
}

void Listener::resume() {
  if (!paused_ || closing_ || fd_ < 0) return;
  paused_ = false;
  uv_poll_start(&poll_, UV_READABLE, &Listener::on_poll);
}

void Listener::close() {
  if (closing_) return;
  closing_ = true;
  if (fd_ < 0) {
    delete this;
    return;
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&poll_), &Listener::on_close);
}

void Listener::on_close(uv_handle_t* handle) noexcept {
  auto* self = static_cast<Listener*>(handle->data);
  ::close(self->fd_);
  delete self;
}

void Listener::on_poll(uv_poll_t* handle, int status, int events) noexcept {
  auto* self = static_cast<Listener*>(handle->data);
  if (status < 0) {
    LOG_WARN("listener %s: poll error: %s", self->name_.c_str(), uv_strerror(status));
    return;
  }
  self->on_readable();
}

void Listener::on_readable() {
  for (int i = 0; i < kAcceptBatch && !paused_ && !closing_; ++i) {
    if (!worker_.may_accept()) {
      // The worker's tick resumes us once connections close anywhere in the process, or
      // memory is back under the budget's resume mark.
      WorkerStats::add(worker_.stats().accept_paused);
      pause();
      return;
    }
    sockaddr_storage peer;
    socklen_t peer_len = sizeof peer;
    int fd = ::accept4(fd_, reinterpret_cast<sockaddr*>(&peer), &peer_len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      int err = errno;
      if (err == EAGAIN || err == EWOULDBLOCK) return;
      if (err == EINTR || err == ECONNABORTED || err == EPROTO) continue;
      if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
        LOG_WARN("listener %s: accept: %s; pausing accept until descriptors free up", name_.c_str(),
                 std::strerror(err));
        WorkerStats::add(worker_.stats().accept_paused);
        pause();
        return;
      }
      LOG_WARN("listener %s: accept: %s", name_.c_str(), std::strerror(err));
      return;
    }
    DownstreamConnection::accept(worker_, fd, peer, config_, tls_, slot_);
  }
}

}  // namespace sprayer::proxy
