// The process's own resource use, read from /proc/self at scrape time: what Prometheus
// client libraries export as process_* (CPU, resident memory, descriptors).
#pragma once

#include <optional>
#include <string_view>

namespace sprayer::proxy {

struct ProcessStats {
  double cpu_seconds = 0;      // user + system
  double resident_bytes = 0;
  double virtual_bytes = 0;
  double open_fds = 0;
  double max_fds = 0;          // the soft RLIMIT_NOFILE; 0 when unlimited
};

// nullopt where /proc is not mounted.
std::optional<ProcessStats> read_process_stats();

// The CPU fields of a /proc/PID/stat line, in clock ticks: utime + stime (fields 14 and
// 15, counted after the parenthesised command, which may hold spaces and parentheses).
std::optional<double> stat_cpu_ticks(std::string_view stat_line);

}  // namespace sprayer::proxy
