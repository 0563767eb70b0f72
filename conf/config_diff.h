// What a reload would change between the running Config and a newly loaded one: pure, no
// I/O. The proxy applies the live part and reports the keys that need a restart.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "conf/config.h"

namespace sprayer::conf {

struct ConfigDiff {
  // Servers by id (their identity): added, removed, and kept with a new address or weight.
  std::vector<std::string> servers_added;
  std::vector<std::string> servers_removed;
  std::vector<std::string> servers_changed;
  // Listeners by name: added, removed, and kept with other settings. A kept listener whose
  // address is unchanged keeps its socket; listeners_rebound names those that get a new one.
  std::vector<std::string> listeners_added;
  std::vector<std::string> listeners_removed;
  std::vector<std::string> listeners_changed;
  std::vector<std::string> listeners_rebound;
  // Other keys that changed and apply live (section or key paths: "timeouts", "admin.token").
  std::vector<std::string> live;
  // Keys that changed but only take effect at the next start ("workers", "ownership").
  std::vector<std::string> needs_restart;

  bool servers_differ() const { return !servers_added.empty() || !servers_removed.empty() || !servers_changed.empty(); }
  bool listeners_differ() const {
    return !listeners_added.empty() || !listeners_removed.empty() || !listeners_changed.empty();
  }
  bool empty() const { return !servers_differ() && !listeners_differ() && live.empty() && needs_restart.empty(); }
  // One line for the log and the API: "servers +pool4 -pool1; listeners ~https; live: timeouts".
  std::string summary() const;
};

ConfigDiff diff_configs(const Config& running, const Config& next);

// `next` with every restart-only key set back to its value in `running`, so that the
// published Config describes what the process really runs.
std::shared_ptr<const Config> keep_restart_only(const Config& running, const Config& next);

}  // namespace sprayer::conf
