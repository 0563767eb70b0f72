// sprayer's command line: run, check a config (-t), print the effective one (-T), version, help.
#include <libpq-fe.h>
#include <llhttp.h>
#include <openssl/crypto.h>
#include <sqlite3.h>
#include <sys/resource.h>
#include <uv.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>

#include "affinity/ownership_check.h"
#include "conf/config.h"
#include "conf/config_dump.h"
#include "proxy/config_adapters.h"
#include "proxy/control/control_loop.h"
#include "proxy/control/preflight.h"
#include "proxy/control/process_stats.h"
#include "proxy/log.h"
#include "proxy/runtime.h"
#include "sprayer_version.h"

namespace {

void usage(FILE* out) {
  std::fprintf(out,
               "usage: sprayer [-c FILE] [-t [--check-queries] | -T]\n"
               "  -c, --config FILE  configuration file (default /etc/sprayer/sprayer.yaml); also --config=FILE\n"
               "  -t, --test         check the configuration as a start would (names resolved, files opened,\n"
               "                     ports tried) and exit (0 = valid, 1 = not)\n"
               "  --check-queries    with -t: also run the ownership queries once against the database\n"
               "  -T, --dump         print the effective configuration, defaults filled in, as YAML and exit\n"
               "  -v, --version      print the version and exit\n"
               "  -V                 print the version, the build type and the libraries' versions and exit\n"
               "  -h, --help         this text\n");
}

void long_version() {
  int pq = PQlibVersion();
  std::printf("sprayer %s (%s build)\n", SPRAYER_VERSION, SPRAYER_BUILD_TYPE);
  std::printf("  libuv %s\n", uv_version_string());
  std::printf("  %s\n", OpenSSL_version(OPENSSL_VERSION));
  std::printf("  llhttp %d.%d.%d\n", LLHTTP_VERSION_MAJOR, LLHTTP_VERSION_MINOR, LLHTTP_VERSION_PATCH);
  std::printf("  yaml-cpp %s\n", std::strlen(SPRAYER_YAML_CPP_VERSION) ? SPRAYER_YAML_CPP_VERSION : "(version unknown)");
  std::printf("  SQLite %s\n", sqlite3_libversion());
  std::printf("  libpq %d.%d\n", pq / 10000, pq % 10000);
}

// Once per start, and only when the limit stops accepting below limits.max_connections.
void raise_descriptor_limit(const sprayer::conf::Config& config) {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
  if (limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
    getrlimit(RLIMIT_NOFILE, &limit);
  }
  if (limit.rlim_cur == RLIM_INFINITY) return;
  unsigned workers = config.workers ? config.workers : std::max(1u, std::thread::hardware_concurrency());
  auto budget = sprayer::proxy::descriptor_budget(limit.rlim_cur, workers, config.listeners.size(),
                                                  config.servers.size());
  if (std::string warning = sprayer::proxy::descriptor_warning(budget, config.limits.max_connections); !warning.empty())
    LOG_WARN("%s", warning.c_str());
}

enum class Mode { run, test, dump };

int invalid(const std::string& path, size_t errors) {
  std::fprintf(stderr, "sprayer: configuration %s is invalid (%zu error%s)\n", path.c_str(), errors,
               errors == 1 ? "" : "s");
  return 1;
}

// Each configured ownership query once against the database: rows, or the first problem at
// the file:line of its key.
int run_query_check(const std::string& path, const sprayer::conf::LoadResult& loaded) {
  const auto& ownership = loaded.config->ownership;
  if (ownership.source == sprayer::conf::OwnershipSourceKind::none) {
    std::printf("sprayer: no ownership source configured: no queries to check\n");
    return 0;
  }
  int failed = 0;
  for (const auto& check : sprayer::affinity::check_queries(sprayer::proxy::ownership_source_config(ownership))) {
    const std::string key = "ownership." + (check.key == "connection" ? std::string("source") : check.key);
    const auto& positions = loaded.config->positions;
    const auto position = positions.find(key);
    const std::string where =
        path + ":" + (position == positions.end() ? std::string("0") : std::to_string(position->second.line));
    if (check.ok) {
      if (check.key != "connection") std::printf("%s: %s: %zu rows\n", where.c_str(), key.c_str(), check.rows);
    } else {
      ++failed;
      std::fprintf(stderr, "%s: %s: %s%s\n", where.c_str(), key.c_str(),
                   check.rows ? (std::to_string(check.rows) + " rows; ").c_str() : "", check.problem.c_str());
    }
  }
  std::printf("sprayer: ownership queries %s\n", failed ? "failed" : "ok");
  return failed ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string path = "/etc/sprayer/sprayer.yaml";
  Mode mode = Mode::run;
  bool check_queries = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-c" || arg == "--config") {
      if (i + 1 >= argc || argv[i + 1][0] == '\0') {
        std::fprintf(stderr, "sprayer: %s needs a file\n", arg.c_str());
        usage(stderr);
        return 2;
      }
      path = argv[++i];
    } else if (arg.rfind("--config=", 0) == 0) {
      path = arg.substr(9);
      if (path.empty()) {
        std::fprintf(stderr, "sprayer: --config= needs a file\n");
        return 2;
      }
    } else if (arg == "-t" || arg == "--test") {
      mode = Mode::test;
    } else if (arg == "-T" || arg == "--dump") {
      mode = Mode::dump;
    } else if (arg == "--check-queries") {
      check_queries = true;
    } else if (arg == "-v" || arg == "--version") {
      std::printf("sprayer %s\n", SPRAYER_VERSION);
      return 0;
    } else if (arg == "-V") {
      long_version();
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
    return invalid(path, loaded.errors.size());
  }
  if (mode == Mode::dump) {
    std::fputs(sprayer::conf::dump_yaml(*loaded.config).c_str(), stdout);
    return 0;
  }
  if (mode == Mode::test) {
    // Like nginx -t, and further: what the start would open, resolve and bind.
    sprayer::proxy::PreflightResult checked = sprayer::proxy::preflight(*loaded.config);
    for (const auto& w : checked.warnings) std::fprintf(stderr, "%s\n", w.to_string().c_str());
    for (const auto& e : checked.errors) std::fprintf(stderr, "%s\n", e.to_string().c_str());
    if (!checked.errors.empty()) return invalid(path, checked.errors.size());
    std::printf("sprayer: configuration %s is valid%s\n", path.c_str(),
                checked.warnings.empty() ? "" : " (with warnings)");
    if (check_queries) return run_query_check(path, loaded);
    return 0;
  }
  if (check_queries) {
    std::fprintf(stderr, "sprayer: --check-queries goes with -t\n");
    return 2;
  }
  std::signal(SIGPIPE, SIG_IGN);
  sprayer::log::set_level(loaded.config->log.level);
  raise_descriptor_limit(*loaded.config);
  sprayer::proxy::ControlLoop control(loaded.config);
  return control.run();
}
