// The ODBC ownership source (unixODBC; DB2 and SQL Server through their vendors' drivers):
// ODBC calls block, so they run on the source thread of a ThreadedOwnershipSource.
#pragma once

#include <uv.h>

#include <memory>

#include "affinity/ownership_source.h"

namespace sprayer::affinity {

std::unique_ptr<OwnershipSource> make_odbc_source(uv_loop_t* loop, OwnershipSourceConfig config,
                                                  OwnershipCallbacks callbacks, SourceEnvironment env);

}  // namespace sprayer::affinity
