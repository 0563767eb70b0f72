// The admin listener on the control loop: /healthz, /metrics (and, later, /status and the
// JSON API). Small and separate from the data path: one request per connection.
#pragma once

#include <llhttp.h>
#include <uv.h>

#include <functional>
#include <string>

#include "conf/config.h"

namespace sprayer::proxy {

struct AdminResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  std::string extra_headers{};  // "Name: value\r\n" lines added to the head
};

struct AdminRequest {
  std::string method;
  std::string target;
  std::string authorization;
  std::string body;
  // What the CSRF rules look at (proxy/control/admin_auth.h).
  std::string origin;
  std::string host;
  std::string content_type;
  std::string admin_header;  // X-Sprayer-Admin
  std::string client;        // the peer's address, for the log of refused calls
};

class AdminServer {
 public:
  using Handler = std::function<AdminResponse(const AdminRequest&)>;

  AdminServer(uv_loop_t* loop, Handler handler) : loop_(loop), handler_(std::move(handler)) {}
  // inherited_fd >= 0: that listening socket, handed over by a binary upgrade, not a new bind.
  int listen(const conf::Endpoint& address, std::string& error, int inherited_fd = -1);
  int fd() const;  // the listening socket, -1 when not listening
  void close(uv_close_cb done = nullptr);

 private:
  static void on_connection(uv_stream_t* server, int status) noexcept;

  uv_loop_t* loop_;
  Handler handler_;
  uv_tcp_t tcp_{};
  bool open_ = false;
};

}  // namespace sprayer::proxy
