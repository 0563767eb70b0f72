// The MariaDB / MySQL ownership source: libmariadb's blocking client on the source thread
// of a ThreadedOwnershipSource (results streamed row by row with mysql_use_result).
#pragma once

#include <uv.h>

#include <memory>

#include "affinity/ownership_source.h"

namespace sprayer::affinity {

std::unique_ptr<OwnershipSource> make_mariadb_source(uv_loop_t* loop, OwnershipSourceConfig config,
                                                     OwnershipCallbacks callbacks, SourceEnvironment env);

}  // namespace sprayer::affinity
