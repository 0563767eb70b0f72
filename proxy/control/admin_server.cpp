// Admin HTTP: parse one request (bounded), call the handler, answer, close.
#include "proxy/control/admin_server.h"

#include <netinet/in.h>

#include <cstring>

#include "proxy/http/http_head.h"
#include "proxy/log.h"

namespace sprayer::proxy {
namespace {

constexpr size_t kMaxAdminRequest = 64 * 1024;
constexpr uint64_t kAdminTimeoutMs = 10000;

struct AdminConnection {
  uv_tcp_t tcp{};
  uv_timer_t timer{};
  llhttp_t parser{};
  AdminServer::Handler* handler = nullptr;
  AdminRequest request;
  std::string field;
  bool in_value = false;
  bool done = false;
  size_t received = 0;
  int open_handles = 0;

  static AdminConnection* of(llhttp_t* p) { return static_cast<AdminConnection*>(p->data); }

  // The request field a header goes to; null for headers the admin API ignores.
  std::string* header_target() {
    if (iequals(field, "authorization")) return &request.authorization;
    if (iequals(field, "origin")) return &request.origin;
    if (iequals(field, "host")) return &request.host;
    if (iequals(field, "content-type")) return &request.content_type;
    if (iequals(field, "x-sprayer-admin")) return &request.admin_header;
    return nullptr;
  }

  void respond(const AdminResponse& r) {
    auto* out = new std::string();
    char head[256];
    int n = std::snprintf(head, sizeof head,
                          "HTTP/1.1 %d %.*s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                          "Cache-Control: no-store\r\nConnection: close\r\n",
                          r.status, static_cast<int>(status_reason(r.status).size()), status_reason(r.status).data(),
                          r.content_type.c_str(), r.body.size());
    out->assign(head, static_cast<size_t>(n));
    out->append(r.extra_headers);
    out->append("\r\n");
    out->append(r.body);
    auto* req = new uv_write_t;
    req->data = out;
    uv_buf_t buf = uv_buf_init(out->data(), static_cast<unsigned>(out->size()));
    done = true;
    uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp));
    int rc = uv_write(req, reinterpret_cast<uv_stream_t*>(&tcp), &buf, 1, [](uv_write_t* w, int) noexcept {
      auto* self = static_cast<AdminConnection*>(w->handle->data);
      delete static_cast<std::string*>(w->data);
      delete w;
      self->close();
    });
    if (rc != 0) {
      delete out;
      delete req;
      close();
    }
  }

  void close() {
    for (auto* h : {reinterpret_cast<uv_handle_t*>(&tcp), reinterpret_cast<uv_handle_t*>(&timer)})
      if (!uv_is_closing(h))
        uv_close(h, [](uv_handle_t* handle) noexcept {
          auto* self = static_cast<AdminConnection*>(handle->data);
          if (--self->open_handles == 0) delete self;
        });
  }
};

const llhttp_settings_t admin_settings = [] {
  llhttp_settings_t s;
  llhttp_settings_init(&s);
  s.on_url = [](llhttp_t* p, const char* at, size_t len) noexcept {
    AdminConnection::of(p)->request.target.append(at, len);
    return 0;
  };
  s.on_header_field = [](llhttp_t* p, const char* at, size_t len) noexcept {
    auto* c = AdminConnection::of(p);
    if (c->in_value) c->field.clear();
    c->in_value = false;
    c->field.append(at, len);
    return 0;
  };
  s.on_header_value = [](llhttp_t* p, const char* at, size_t len) noexcept {
    auto* c = AdminConnection::of(p);
    std::string* target = c->header_target();
    // A repeated header replaces the earlier one rather than joining it.
    if (!c->in_value && target) target->clear();
    c->in_value = true;
    if (target) target->append(at, len);
    return 0;
  };
  s.on_body = [](llhttp_t* p, const char* at, size_t len) noexcept {
    AdminConnection::of(p)->request.body.append(at, len);
    return 0;
  };
  s.on_message_complete = [](llhttp_t* p) noexcept {
    auto* c = AdminConnection::of(p);
    c->request.method = llhttp_method_name(static_cast<llhttp_method_t>(p->method));
    c->respond((*c->handler)(c->request));
    return static_cast<int>(HPE_PAUSED);
  };
  return s;
}();

}  // namespace

int AdminServer::fd() const {
  uv_os_fd_t fd = -1;
  if (!open_ || uv_fileno(reinterpret_cast<const uv_handle_t*>(&tcp_), &fd) != 0) return -1;
  return fd;
}

int AdminServer::listen(const conf::Endpoint& address, std::string& error, int inherited_fd) {
  sockaddr_storage ss{};
  int rc = uv_ip4_addr(address.host.c_str(), address.port, reinterpret_cast<sockaddr_in*>(&ss));
  if (rc != 0) rc = uv_ip6_addr(address.host.c_str(), address.port, reinterpret_cast<sockaddr_in6*>(&ss));
  if (rc != 0) {
    error = "admin: not a numeric address: " + address.host;
    return rc;
  }
  uv_tcp_init(loop_, &tcp_);
  tcp_.data = this;
  open_ = true;
  rc = inherited_fd >= 0 ? uv_tcp_open(&tcp_, inherited_fd) : uv_tcp_bind(&tcp_, reinterpret_cast<sockaddr*>(&ss), 0);
  if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(&tcp_), 128, &AdminServer::on_connection);
  if (rc != 0) error = "admin: cannot listen on " + address.to_string() + ": " + uv_strerror(rc);
  return rc;
}

void AdminServer::close(uv_close_cb done) {
  if (!open_) return;
  open_ = false;
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), done);
}

void AdminServer::on_connection(uv_stream_t* server, int status) noexcept {
  auto* self = static_cast<AdminServer*>(server->data);
  if (status != 0) return;
  auto* c = new AdminConnection;
  c->handler = &self->handler_;
  uv_tcp_init(self->loop_, &c->tcp);
  c->tcp.data = c;
  ++c->open_handles;
  uv_timer_init(self->loop_, &c->timer);
  c->timer.data = c;
  ++c->open_handles;
  if (uv_accept(server, reinterpret_cast<uv_stream_t*>(&c->tcp)) != 0) {
    c->close();
    return;
  }
  sockaddr_storage peer{};
  int peer_len = sizeof peer;
  if (uv_tcp_getpeername(&c->tcp, reinterpret_cast<sockaddr*>(&peer), &peer_len) == 0) {
    char ip[INET6_ADDRSTRLEN] = "";
    if (peer.ss_family == AF_INET)
      uv_ip4_name(reinterpret_cast<sockaddr_in*>(&peer), ip, sizeof ip);
    else
      uv_ip6_name(reinterpret_cast<sockaddr_in6*>(&peer), ip, sizeof ip);
    c->request.client = ip;
  }
  llhttp_init(&c->parser, HTTP_REQUEST, &admin_settings);
  c->parser.data = c;
  uv_timer_start(&c->timer, [](uv_timer_t* t) noexcept { static_cast<AdminConnection*>(t->data)->close(); },
                 kAdminTimeoutMs, 0);
  uv_read_start(
      reinterpret_cast<uv_stream_t*>(&c->tcp),
      [](uv_handle_t*, size_t, uv_buf_t* buf) noexcept {
        static thread_local char scratch[16384];
        *buf = uv_buf_init(scratch, sizeof scratch);
      },
      [](uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) noexcept {
        auto* c = static_cast<AdminConnection*>(stream->data);
        if (c->done) return;
        if (nread < 0) {
          c->close();
          return;
        }
        c->received += static_cast<size_t>(nread);
        if (c->received > kMaxAdminRequest) {
          c->respond(AdminResponse{413, "text/plain", "request too large\n"});
          return;
        }
        llhttp_errno_t err = llhttp_execute(&c->parser, buf->base, static_cast<size_t>(nread));
        if (err != HPE_OK && err != HPE_PAUSED && !c->done) c->respond(AdminResponse{400, "text/plain", "bad request\n"});
      });
}

}  // namespace sprayer::proxy
