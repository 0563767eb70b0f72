// Binary upgrade (SIGUSR2): the listening sockets handed to the binary on disk as inherited
// descriptors named in SPRAYER_UPGRADE_* variables, and the pipe on which it says "ready".
#pragma once

#include <sys/types.h>
#include <uv.h>

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace sprayer::proxy {

// A listening socket handed over: its address as conf::Endpoint::to_string() and its descriptor.
struct HandedSocket {
  std::string address;
  int fd = -1;
};

// What a new process got from the process it replaces (empty when started normally).
struct InheritedSockets {
  bool upgrade = false;
  pid_t parent = 0;
  int ready_fd = -1;  // write "ready\n" here once serving
  std::map<std::string, std::vector<int>> listeners;  // by address, one per worker of the old process
  HandedSocket admin;
  size_t count() const;
};

// Reads SPRAYER_UPGRADE_* and removes them from the environment (a later upgrade builds its
// own). Descriptors that are not sockets are refused with `error`.
InheritedSockets take_inherited_sockets(std::string& error);

// The ready pipe: the new process serves from now on.
void announce_ready(InheritedSockets& inherited);

// How this process was started: the binary's real path (resolved at start, so a later
// `cd` or a replaced file does not matter) and the arguments from /proc/self/cmdline.
struct OwnCommand {
  std::string path;
  std::vector<std::string> args;  // args[0] included
};
OwnCommand read_own_command();

// The old process's side of one upgrade attempt. Inheritance rather than a socket transfer
// over a unix socket: the new process is our child, so fork+exec carries the descriptors with
// no extra listener or permission to secure, and the pipe's EOF says at once that it died.
// Frees itself once finished: `done` is
// called once, with ready = true when the new process is serving, or false and why not
// (it exited, or was not ready within the bound and was killed).
class UpgradeChild {
 public:
  using Done = std::function<void(bool ready, const std::string& why)>;
  // Spawns the command; null with `error` when it could not even start.
  static UpgradeChild* start(uv_loop_t* loop, const OwnCommand& command, const std::vector<HandedSocket>& listeners,
                             const HandedSocket* admin, std::chrono::milliseconds ready_bound, Done done,
                             std::string& error);
  pid_t pid() const { return pid_; }
  // The control loop stops: stop watching; `kill`: and kill the new process if not ready yet.
  void abandon(bool kill);

 private:
  UpgradeChild(uv_loop_t* loop, Done done) : loop_(loop), done_(std::move(done)) {}
  ~UpgradeChild() = default;
  void on_read(ssize_t nread, const uv_buf_t* buf);
  void on_exit(int64_t status, int signal);
  void on_timeout();
  void finish(bool ready, const std::string& why);
  void close_handles();

  uv_loop_t* loop_;
  Done done_;
  uv_process_t process_{};
  uv_pipe_t pipe_{};
  uv_timer_t timer_{};
  pid_t pid_ = 0;
  std::chrono::milliseconds bound_{0};
  std::string seen_;  // what came on the pipe, bounded
  char buffer_[64];
  bool exited_ = false;
  bool finished_ = false;
  bool killed_ = false;
  int open_handles_ = 0;
};

}  // namespace sprayer::proxy
