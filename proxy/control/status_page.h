// The operator's status page (/status: one self-contained HTML page, inline CSS and JS)
// and its JSON twin (/api/v1/status), both built from the control thread's ControlState.
#pragma once

#include <string>
#include <string_view>

#include "proxy/control/metrics.h"

namespace sprayer::proxy {

// The page: it reads /api/v1/status every few seconds and posts the drain / maintenance /
// ready buttons to /api/v1/servers/ID/ACTION with the bearer token typed into it.
std::string_view status_page_html();

std::string status_json(const ControlState& state);

}  // namespace sprayer::proxy
