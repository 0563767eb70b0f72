// `sprayer -t --check-queries`: the configured queries run once against the database
// (blocking; never on a loop), with row counts and the first row the source could not use.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "affinity/ownership_source.h"

namespace sprayer::affinity {

struct QueryCheck {
  std::string key;      // "query_full", "query_delta", "query_servers", or "connection"
  bool ok = false;
  std::size_t rows = 0;
  std::string problem;  // the database's error or the first bad row
};

// MariaDB and ODBC sources; for another kind one entry that says it is not supported.
std::vector<QueryCheck> check_queries(const OwnershipSourceConfig& config);

}  // namespace sprayer::affinity
