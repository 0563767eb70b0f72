// The binary upgrade's environment: what a new process reads from SPRAYER_UPGRADE_*, what it
// refuses, and that nothing of it is left for a later upgrade.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "proxy/control/upgrade.h"

using sprayer::proxy::InheritedSockets;
using sprayer::proxy::take_inherited_sockets;

namespace {

struct SocketPair {
  int fds[2] = {-1, -1};
  SocketPair() { REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0); }
  ~SocketPair() {
    ::close(fds[0]);
    ::close(fds[1]);
  }
};

bool cloexec(int fd) { return (fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0; }

void clear_env() {
  for (const char* name : {"SPRAYER_UPGRADE_FDS", "SPRAYER_UPGRADE_ADMIN", "SPRAYER_UPGRADE_READY",
                           "SPRAYER_UPGRADE_PARENT"})
    unsetenv(name);
}

}  // namespace

TEST_CASE("a normal start inherits nothing") {
  clear_env();
  std::string error;
  InheritedSockets got = take_inherited_sockets(error);
  CHECK(error.empty());
  CHECK_FALSE(got.upgrade);
  CHECK(got.count() == 0);
}

TEST_CASE("listeners by address, one per old worker, the admin socket and the pipe; the variables are gone after") {
  SocketPair a, b, pipe_end;
  const std::string ready = std::to_string(pipe_end.fds[0]);
  const std::string fds = "127.0.0.1:8080=" + std::to_string(a.fds[0]) + ",127.0.0.1:8080=" +
                          std::to_string(a.fds[1]) + ",[::1]:8443=" + std::to_string(b.fds[0]);
  const std::string admin = "127.0.0.1:9100=" + std::to_string(b.fds[1]);
  setenv("SPRAYER_UPGRADE_READY", ready.c_str(), 1);
  setenv("SPRAYER_UPGRADE_FDS", fds.c_str(), 1);
  setenv("SPRAYER_UPGRADE_ADMIN", admin.c_str(), 1);
  setenv("SPRAYER_UPGRADE_PARENT", "4242", 1);
  std::string error;
  InheritedSockets got = take_inherited_sockets(error);
  REQUIRE(error.empty());
  CHECK(got.upgrade);
  CHECK(got.parent == 4242);
  CHECK(got.ready_fd == pipe_end.fds[0]);
  REQUIRE(got.listeners.size() == 2);
  CHECK(got.listeners["127.0.0.1:8080"] == std::vector<int>{a.fds[0], a.fds[1]});
  CHECK(got.listeners["[::1]:8443"] == std::vector<int>{b.fds[0]});
  CHECK(got.admin.address == "127.0.0.1:9100");
  CHECK(got.admin.fd == b.fds[1]);
  CHECK(got.count() == 4);
  // Not passed on to anything this process starts, except on purpose by the next upgrade.
  CHECK(cloexec(a.fds[0]));
  CHECK(cloexec(b.fds[1]));
  CHECK(std::getenv("SPRAYER_UPGRADE_FDS") == nullptr);
  CHECK(std::getenv("SPRAYER_UPGRADE_READY") == nullptr);
  CHECK(std::getenv("SPRAYER_UPGRADE_ADMIN") == nullptr);
  CHECK(std::getenv("SPRAYER_UPGRADE_PARENT") == nullptr);
}

TEST_CASE("a descriptor that is not a socket, or a malformed entry, is refused") {
  SocketPair pipe_end;
  int file = ::open("/dev/null", O_RDONLY);
  REQUIRE(file >= 3);
  const std::string ready = std::to_string(pipe_end.fds[0]);
  std::string error;

  setenv("SPRAYER_UPGRADE_READY", ready.c_str(), 1);
  setenv("SPRAYER_UPGRADE_FDS", ("127.0.0.1:8080=" + std::to_string(file)).c_str(), 1);
  take_inherited_sockets(error);
  CHECK(error.find("is not a socket") != std::string::npos);

  for (const char* bad : {"127.0.0.1:8080", "=5", "127.0.0.1:8080=x", "127.0.0.1:8080=1"}) {
    CAPTURE(bad);
    error.clear();
    setenv("SPRAYER_UPGRADE_READY", ready.c_str(), 1);
    setenv("SPRAYER_UPGRADE_FDS", bad, 1);
    take_inherited_sockets(error);
    CHECK(error.find("bad entry") != std::string::npos);
  }
  ::close(file);
  clear_env();
}
