// poolsim: a stand-in for one HCL Traveler pool server, for integration tests, the demo and
// benchmarks. One single-threaded libuv loop; exits 0 on SIGTERM/SIGINT once every handle is closed.
#include <uv.h>

#include <csignal>
#include <cstdio>
#include <string>

#include "tests/poolsim/options.h"
#include "tests/poolsim/pool_server.h"

int main(int argc, char** argv) {
  // A client that disconnects mid-write must cost an EPIPE, not the process.
  std::signal(SIGPIPE, SIG_IGN);

  poolsim::Options options;
  std::string message;
  switch (poolsim::parse_options(argc, argv, options, message)) {
    case poolsim::ParseOutcome::help:
      std::fputs(poolsim::usage().c_str(), stdout);
      return 0;
    case poolsim::ParseOutcome::error:
      std::fprintf(stderr, "poolsim: %s\n%s", message.c_str(), poolsim::usage().c_str());
      return 2;
    case poolsim::ParseOutcome::run:
      break;
  }

  uv_loop_t loop;
  if (int rc = uv_loop_init(&loop); rc != 0) {
    std::fprintf(stderr, "poolsim: uv_loop_init: %s\n", uv_strerror(rc));
    return 1;
  }
  int exit_code = 0;
  {
    poolsim::PoolServer server(&loop, options);
    if (!server.start(message)) {
      std::fprintf(stderr, "poolsim %s: %s\n", options.id.c_str(), message.c_str());
      server.shutdown();
      exit_code = 1;
    }
    uv_run(&loop, UV_RUN_DEFAULT);
  }
  // A non-zero result here means a handle leaked: make it visible to the tests.
  if (int rc = uv_loop_close(&loop); rc != 0) {
    std::fprintf(stderr, "poolsim %s: handles still open at exit: %s\n", options.id.c_str(), uv_strerror(rc));
    return 3;
  }
  return exit_code;
}
