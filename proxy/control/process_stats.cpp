// /proc/self readers for the process_* metrics.
#include "proxy/control/process_stats.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace sprayer::proxy {
namespace {

std::optional<std::string> read_small_file(const char* path) {
  FILE* f = std::fopen(path, "re");
  if (!f) return std::nullopt;
  char buf[4096];
  size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  return std::string(buf, n);
}

}  // namespace

std::optional<double> stat_cpu_ticks(std::string_view line) {
  size_t close = line.rfind(')');
  if (close == std::string_view::npos) return std::nullopt;
  // After ") ": field 3 (state) is the first; utime is field 14, stime field 15.
  std::string rest(line.substr(close + 1));
  const char* p = rest.c_str();
  double ticks = 0;
  for (int field = 3; field <= 15; ++field) {
    char* end = nullptr;
    while (*p == ' ') ++p;
    if (!*p) return std::nullopt;
    if (field >= 14) {
      double v = std::strtod(p, &end);
      if (end == p) return std::nullopt;
      ticks += v;
      p = end;
    } else {
      while (*p && *p != ' ') ++p;
    }
  }
  return ticks;
}

std::optional<ProcessStats> read_process_stats() {
  ProcessStats out;
  auto stat = read_small_file("/proc/self/stat");
  auto statm = read_small_file("/proc/self/statm");
  if (!stat || !statm) return std::nullopt;
  if (auto ticks = stat_cpu_ticks(*stat)) out.cpu_seconds = *ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
  unsigned long long size = 0, resident = 0;
  if (std::sscanf(statm->c_str(), "%llu %llu", &size, &resident) == 2) {
    const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
    out.virtual_bytes = static_cast<double>(size) * page;
    out.resident_bytes = static_cast<double>(resident) * page;
  }
  if (DIR* dir = opendir("/proc/self/fd")) {
    int n = 0;
    while (const dirent* e = readdir(dir))
      if (e->d_name[0] != '.') ++n;
    closedir(dir);
    out.open_fds = n - 1;  // the directory stream's own descriptor
  }
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY)
    out.max_fds = static_cast<double>(limit.rlim_cur);
  return out;
}

DescriptorBudget descriptor_budget(uint64_t limit, unsigned workers, size_t listeners, size_t servers) {
  DescriptorBudget b;
  b.limit = limit;
  // stdio, the control loop (epoll, wakeups, signals, timers), the admin listener and its
  // calls, the access log, certificate watches, the ownership database: 32; one check
  // connection per server at a time; per worker its loop, wakeups and one socket per listener.
  b.reserved = 32 + servers + static_cast<uint64_t>(workers) * (4 + listeners);
  uint64_t free = limit > b.reserved ? limit - b.reserved : 0;
  b.client_only = free;
  b.with_upstream = free / 2;
  return b;
}

std::string descriptor_warning(const DescriptorBudget& b, uint32_t max_connections) {
  if (b.with_upstream >= max_connections) return {};
  const uint64_t lifts = static_cast<uint64_t>(max_connections) * 2 + b.reserved;
  char text[512];
  std::snprintf(text, sizeof text,
                "the descriptor limit (%llu) caps client connections at about %llu, below limits.max_connections=%u "
                "(%llu while no connection holds a pool server connection; a parked Ping holds one): accepting "
                "pauses there; raise the limit to %llu (LimitNOFILE, ulimit -n) or lower max_connections",
                static_cast<unsigned long long>(b.limit), static_cast<unsigned long long>(b.with_upstream),
                max_connections, static_cast<unsigned long long>(b.client_only),
                static_cast<unsigned long long>(lifts));
  return text;
}

}  // namespace sprayer::proxy
