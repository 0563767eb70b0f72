// The process's own resource use, read from /proc/self at scrape time: what Prometheus
// client libraries export as process_* (CPU, resident memory, descriptors).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
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

// How many client connections the descriptor limit leaves room for. A client connection holds
// one descriptor, and a second one while it has a pool server connection (a parked Ping holds
// both for minutes); the rest of the process (loops, wakeups, listening sockets, checks, logs,
// the admin listener, the database) is `reserved`, an estimate from the configuration.
struct DescriptorBudget {
  uint64_t limit = 0;          // RLIMIT_NOFILE (soft, already raised to the hard one)
  uint64_t reserved = 0;
  uint64_t with_upstream = 0;  // client connections that fit when each also holds a server connection
  uint64_t client_only = 0;    // ... when none does
};
DescriptorBudget descriptor_budget(uint64_t limit, unsigned workers, size_t listeners, size_t servers);

// The start's one warning when the limit stops accepting below limits.max_connections (the
// effective cap and the limit that would lift it); empty when it does not.
std::string descriptor_warning(const DescriptorBudget& budget, uint32_t max_connections);

}  // namespace sprayer::proxy
