// `sprayer -t` beyond the loader: what a start would do to the world, done without serving —
// resolve the server names, open every file the start opens, bind the ports. Each problem
// names the key it comes from (file:line:column: key: message), like the loader's.
#pragma once

#include <vector>

#include "conf/config.h"

namespace sprayer::proxy {

struct PreflightResult {
  std::vector<conf::ConfigError> errors;    // the start would fail
  std::vector<conf::ConfigError> warnings;  // it may not (a port the old process still holds)
};

// Blocking (DNS, files, binds); for the command line only, never on a running loop.
PreflightResult preflight(const conf::Config& config);

}  // namespace sprayer::proxy
