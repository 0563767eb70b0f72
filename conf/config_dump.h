// The effective configuration as YAML (`sprayer -T`): every key with its value, defaults
// filled in, in a form conf::load_* reads back to an equal Config.
#pragma once

#include <string>

#include "conf/config.h"

namespace sprayer::conf {

std::string dump_yaml(const Config& config);

}  // namespace sprayer::conf
