// sprayer's command line: run, check a config (-t), version, help.
#include <sys/resource.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>

#include "conf/config.h"

#include "proxy/control/tls_loading.h"
#include "proxy/config_adapters.h"
#include "proxy/log.h"
#include "proxy/runtime.h"
#include "proxy/control/control_loop.h"
#include "proxy/tls/tls_context.h"

namespace {

void usage(FILE* out) {
  std::fprintf(out,
               "usage: sprayer [-c FILE] [-t]\n"
               "  -c, --config FILE  configuration file (default /etc/sprayer/sprayer.yaml)\n"
               "  -t, --test         check the configuration and exit (0 = valid, 1 = not)\n"
               "  -v, --version      print the version and exit\n"
               "  -h, --help         this text\n");
}

// Each parked long-poll holds two descriptors (client and server side).
void raise_descriptor_limit(const sprayer::conf::Config& config) {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
  if (limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
    getrlimit(RLIMIT_NOFILE, &limit);
  }
  uint64_t needed = static_cast<uint64_t>(config.limits.max_connections) * 2 + 64;
  if (limit.rlim_cur != RLIM_INFINITY && needed > limit.rlim_cur)
    LOG_WARN("limits.max_connections=%u needs about %llu descriptors but the limit is %llu: accepting will pause "
             "when descriptors run out; raise LimitNOFILE or lower max_connections",
             config.limits.max_connections, static_cast<unsigned long long>(needed),
             static_cast<unsigned long long>(limit.rlim_cur));
}

}  // namespace

int main(int argc, char** argv) {
  std::string path = "/etc/sprayer/sprayer.yaml";
  bool test_only = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if ((arg == "-c" || arg == "--config") && i + 1 < argc) {
      path = argv[++i];
    } else if (arg == "-t" || arg == "--test") {
      test_only = true;
    } else if (arg == "-v" || arg == "--version") {
      std::printf("sprayer %s\n", SPRAYER_VERSION);
      return 0;
    } else if (arg == "-h" || arg == "--help") {
      usage(stdout);
      return 0;
    } else {
      std::fprintf(stderr, "sprayer: unknown argument: %s\n", arg.c_str());
      usage(stderr);
      return 2;
    }
  }

  auto loaded = sprayer::conf::load_file(path);
  if (!loaded.ok()) {
    for (const auto& e : loaded.errors) std::fprintf(stderr, "%s\n", e.to_string().c_str());
    std::fprintf(stderr, "sprayer: configuration %s is invalid (%zu error%s)\n", path.c_str(), loaded.errors.size(),
                 loaded.errors.size() == 1 ? "" : "s");
    return 1;
  }
  if (test_only) {
    // Like nginx -t: certificates and keys are part of what must be right before a start.
    std::vector<std::shared_ptr<const sprayer::proxy::TlsContext>> tls;
    std::string error;
    if (!sprayer::proxy::load_listener_tls(*loaded.config, tls, error)) {
      std::fprintf(stderr, "%s: %s\n", path.c_str(), error.c_str());
      std::fprintf(stderr, "sprayer: configuration %s is invalid (1 error)\n", path.c_str());
      return 1;
    }
    std::printf("sprayer: configuration %s is valid\n", path.c_str());
    return 0;
  }
  std::signal(SIGPIPE, SIG_IGN);
  sprayer::log::set_level(loaded.config->log.level);
  raise_descriptor_limit(*loaded.config);
  sprayer::proxy::ControlLoop control(loaded.config);
  return control.run();
}
