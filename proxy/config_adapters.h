// From the configuration to the parts of a Runtime: the extractor settings and the resolved
// server list.
#pragma once

#include <string>
#include <vector>

#include "affinity/extract.h"
#include "affinity/ownership_source.h"
#include "conf/config.h"
#include "proxy/http/request_parser.h"
#include "proxy/runtime.h"

namespace sprayer::proxy {

// Each configured listener's stats slot (Runtime::listener_slots): a name seen before keeps
// its slot, a new one is appended to `names` (slot -> name, never shrinks).
std::vector<uint16_t> assign_listener_slots(const conf::Config& config, std::vector<std::string>& names);

// The extractor settings a Config asks for (conf keeps its own plain types).
affinity::ExtractorConfig extractor_config(const conf::AffinityConfig& config);

// The request parser's limits from the configuration's.
RequestLimits request_limits(const conf::LimitConfig& limits);

// The ownership source's settings (default queries for the change detection mode where
// the configuration leaves a query empty).
affinity::OwnershipSourceConfig ownership_source_config(const conf::OwnershipConfig& config);

// Resolve every server address (blocking; control thread only). Errors name the server.
bool resolve_servers(const conf::Config& config, std::vector<ServerTarget>& out, std::string& error);

}  // namespace sprayer::proxy
