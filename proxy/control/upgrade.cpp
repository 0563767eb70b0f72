// The binary upgrade's hand-over: the environment that describes inherited sockets, and the
// old process's watch over the new one until it is ready.
#include "proxy/control/upgrade.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>

#include "proxy/log.h"

extern char** environ;

namespace sprayer::proxy {
namespace {

constexpr char kFds[] = "SPRAYER_UPGRADE_FDS";
constexpr char kAdmin[] = "SPRAYER_UPGRADE_ADMIN";
constexpr char kReady[] = "SPRAYER_UPGRADE_READY";
constexpr char kParent[] = "SPRAYER_UPGRADE_PARENT";
constexpr char kPrefix[] = "SPRAYER_UPGRADE_";
constexpr char kReadyWord[] = "ready\n";
constexpr size_t kMaxPipeText = 64;
// The child's descriptors: 0-2 as ours, then the pipe, then the sockets.
constexpr int kFirstFd = 3;

bool parse_fd(const std::string& text, int& fd) {
  if (text.empty() || text.size() > 9) return false;
  char* end = nullptr;
  long value = std::strtol(text.c_str(), &end, 10);
  if (*end != '\0' || value < kFirstFd) return false;
  fd = static_cast<int>(value);
  return true;
}

// "ADDRESS=FD": the address may hold ':' and brackets, never '='.
bool parse_entry(const std::string& entry, HandedSocket& out) {
  size_t eq = entry.rfind('=');
  if (eq == std::string::npos || eq == 0) return false;
  out.address = entry.substr(0, eq);
  return parse_fd(entry.substr(eq + 1), out.fd);
}

bool is_socket(int fd) {
  struct stat st{};
  return fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
}

std::string take_env(const char* name) {
  const char* value = std::getenv(name);
  std::string out = value ? value : "";
  unsetenv(name);
  return out;
}

}  // namespace

size_t InheritedSockets::count() const {
  size_t n = admin.fd >= 0 ? 1 : 0;
  for (const auto& [address, fds] : listeners) n += fds.size();
  return n;
}

InheritedSockets take_inherited_sockets(std::string& error) {
  InheritedSockets out;
  const std::string fds = take_env(kFds), admin = take_env(kAdmin), ready = take_env(kReady),
                    parent = take_env(kParent);
  if (ready.empty()) return out;
  out.upgrade = true;
  out.parent = static_cast<pid_t>(std::atol(parent.c_str()));
  auto adopt = [&](int fd) {
    if (!is_socket(fd)) {
      error = "binary upgrade: inherited descriptor " + std::to_string(fd) + " is not a socket";
      return false;
    }
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    return true;
  };
  if (!parse_fd(ready, out.ready_fd)) {
    error = "binary upgrade: bad " + std::string(kReady) + "=" + ready;
    return out;
  }
  fcntl(out.ready_fd, F_SETFD, FD_CLOEXEC);
  size_t start = 0;
  while (start < fds.size()) {
    size_t comma = fds.find(',', start);
    std::string entry = fds.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    start = comma == std::string::npos ? fds.size() : comma + 1;
    HandedSocket socket;
    if (!parse_entry(entry, socket)) {
      error = "binary upgrade: bad entry in " + std::string(kFds) + ": " + entry;
      return out;
    }
    if (!adopt(socket.fd)) return out;
    out.listeners[socket.address].push_back(socket.fd);
  }
  if (!admin.empty()) {
    if (!parse_entry(admin, out.admin)) {
      error = "binary upgrade: bad " + std::string(kAdmin) + "=" + admin;
      return out;
    }
    if (!adopt(out.admin.fd)) return out;
  }
  return out;
}

void announce_ready(InheritedSockets& inherited) {
  if (inherited.ready_fd < 0) return;
  ssize_t n;
  do {
    n = ::write(inherited.ready_fd, kReadyWord, sizeof kReadyWord - 1);
  } while (n < 0 && errno == EINTR);
  if (n < 0) LOG_WARN("binary upgrade: cannot tell the old process we are ready: %s", std::strerror(errno));
  ::close(inherited.ready_fd);
  inherited.ready_fd = -1;
}

OwnCommand read_own_command() {
  OwnCommand out;
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t start = 0;
  while (start < all.size()) {
    size_t nul = all.find('\0', start);
    if (nul == std::string::npos) nul = all.size();
    out.args.push_back(all.substr(start, nul - start));
    start = nul + 1;
  }
  char resolved[PATH_MAX];
  // argv[0] without a slash was found on PATH: /proc/self/exe names that file.
  if (!out.args.empty() && out.args[0].find('/') != std::string::npos && realpath(out.args[0].c_str(), resolved))
    out.path = resolved;
  else if (ssize_t n = readlink("/proc/self/exe", resolved, sizeof resolved - 1); n > 0)
    out.path.assign(resolved, static_cast<size_t>(n));
  return out;
}

UpgradeChild* UpgradeChild::start(uv_loop_t* loop, const OwnCommand& command, const std::vector<HandedSocket>& listeners,
                                  const HandedSocket* admin, std::chrono::milliseconds ready_bound, Done done,
                                  std::string& error) {
  if (command.path.empty() || command.args.empty()) {
    error = "cannot tell which binary this process was started from";
    return nullptr;
  }
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) != 0) {
    error = std::string("pipe: ") + std::strerror(errno);
    return nullptr;
  }
  std::vector<uv_stdio_container_t> stdio;
  for (int fd : {0, 1, 2, pipe_fds[1]}) {
    uv_stdio_container_t c{};
    c.flags = UV_INHERIT_FD;
    c.data.fd = fd;
    stdio.push_back(c);
  }
  auto pass = [&stdio](int fd) {
    uv_stdio_container_t c{};
    c.flags = UV_INHERIT_FD;
    c.data.fd = fd;
    stdio.push_back(c);
    return std::to_string(stdio.size() - 1);
  };
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e)
    if (std::strncmp(*e, kPrefix, sizeof kPrefix - 1) != 0) env.emplace_back(*e);
  env.push_back(std::string(kReady) + "=" + std::to_string(kFirstFd));
  env.push_back(std::string(kParent) + "=" + std::to_string(getpid()));
  if (admin) env.push_back(std::string(kAdmin) + "=" + admin->address + "=" + pass(admin->fd));
  std::string fds;
  for (const auto& l : listeners) fds += (fds.empty() ? "" : ",") + l.address + "=" + pass(l.fd);
  env.push_back(std::string(kFds) + "=" + fds);

  std::vector<char*> argv, envp;
  for (const auto& a : command.args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (const auto& e : env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);

  auto* self = new UpgradeChild(loop, std::move(done));
  self->bound_ = ready_bound;
  uv_process_options_t options{};
  options.file = command.path.c_str();
  options.args = argv.data();
  options.env = envp.data();
  options.stdio_count = static_cast<int>(stdio.size());
  options.stdio = stdio.data();
  options.exit_cb = [](uv_process_t* p, int64_t status, int signal) noexcept {
    static_cast<UpgradeChild*>(p->data)->on_exit(status, signal);
  };
  self->process_.data = self;
  int rc = uv_spawn(loop, &self->process_, &options);
  ::close(pipe_fds[1]);  // only the child holds the write end: its death is EOF here
  if (rc != 0) {
    error = "cannot start " + command.path + ": " + uv_strerror(rc);
    ::close(pipe_fds[0]);
    // uv_spawn initialised the handle even when it failed: it must be closed.
    self->open_handles_ = 1;
    uv_close(reinterpret_cast<uv_handle_t*>(&self->process_), [](uv_handle_t* h) noexcept {
      delete static_cast<UpgradeChild*>(h->data);
    });
    return nullptr;
  }
  self->pid_ = self->process_.pid;
  self->open_handles_ = 3;
  uv_pipe_init(loop, &self->pipe_, 0);
  self->pipe_.data = self;
  uv_pipe_open(&self->pipe_, pipe_fds[0]);
  uv_read_start(
      reinterpret_cast<uv_stream_t*>(&self->pipe_),
      [](uv_handle_t* h, size_t, uv_buf_t* buf) noexcept {
        auto* me = static_cast<UpgradeChild*>(h->data);
        *buf = uv_buf_init(me->buffer_, sizeof me->buffer_);
      },
      [](uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) noexcept {
        static_cast<UpgradeChild*>(s->data)->on_read(nread, buf);
      });
  uv_timer_init(loop, &self->timer_);
  self->timer_.data = self;
  uv_timer_start(&self->timer_, [](uv_timer_t* t) noexcept { static_cast<UpgradeChild*>(t->data)->on_timeout(); },
                 static_cast<uint64_t>(ready_bound.count()), 0);
  return self;
}

void UpgradeChild::on_read(ssize_t nread, const uv_buf_t* buf) {
  if (nread < 0) {
    // EOF without "ready": the exit callback says how it ended.
    uv_read_stop(reinterpret_cast<uv_stream_t*>(&pipe_));
    return;
  }
  if (seen_.size() < kMaxPipeText) seen_.append(buf->base, std::min(static_cast<size_t>(nread), kMaxPipeText));
  if (seen_.find(kReadyWord) != std::string::npos) finish(true, "");
}

void UpgradeChild::on_exit(int64_t status, int signal) {
  exited_ = true;
  if (killed_) {
    finish(false, "not ready within " + std::to_string(bound_.count() / 1000) + " s; it was killed");
  } else if (signal) {
    finish(false, "killed by signal " + std::to_string(signal) + " (" + strsignal(signal) + ") before it was ready");
  } else {
    finish(false, "exited with status " + std::to_string(status) +
                      " before it was ready (its reasons are in the log lines above)");
  }
  close_handles();
}

void UpgradeChild::on_timeout() {
  if (finished_ || exited_) return;
  // Nothing was accepted by it yet: nothing is lost by killing it.
  killed_ = true;
  uv_process_kill(&process_, SIGKILL);
}

void UpgradeChild::finish(bool ready, const std::string& why) {
  if (finished_) return;
  finished_ = true;
  Done done = std::move(done_);
  if (ready) close_handles();
  if (done) done(ready, why);
}

void UpgradeChild::abandon(bool kill) {
  if (kill && !exited_ && !finished_) uv_process_kill(&process_, SIGKILL);
  done_ = nullptr;
  finished_ = true;
  close_handles();
}

void UpgradeChild::close_handles() {
  auto closed = [](uv_handle_t* h) noexcept {
    auto* self = static_cast<UpgradeChild*>(h->data);
    if (--self->open_handles_ == 0) delete self;
  };
  for (auto* h : {reinterpret_cast<uv_handle_t*>(&process_), reinterpret_cast<uv_handle_t*>(&pipe_),
                  reinterpret_cast<uv_handle_t*>(&timer_)})
    if (!uv_is_closing(h)) uv_close(h, closed);
}

}  // namespace sprayer::proxy
