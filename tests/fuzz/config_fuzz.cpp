// libFuzzer target for the configuration loader: any bytes as a YAML file. The loader must
// answer with a config or with errors (never both, never neither), every error located in
// the file it was given, and never crash, hang or throw.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "conf/config.h"

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view yaml(reinterpret_cast<const char*>(data), size);
  const sprayer::conf::LoadResult result = sprayer::conf::load_string(yaml, "fuzz.yaml");
  check(result.ok() == result.errors.empty());
  for (const auto& error : result.errors) {
    check(error.file == "fuzz.yaml");
    check(!error.message.empty());
    check(error.line >= 0 && error.column >= 0);
    check(!error.to_string().empty());
  }
  if (result.ok()) {
    // A loaded config is internally consistent enough to be used: listeners and servers as
    // counted, each with a name.
    for (const auto& server : result.config->servers) check(!server.id.empty());
  }
  return 0;
}
