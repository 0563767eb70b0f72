// The start's descriptor-limit warning: only when the limit stops accepting below
// limits.max_connections, with the cap it gives.
#include <doctest/doctest.h>

#include "proxy/control/process_stats.h"

using namespace sprayer::proxy;

TEST_CASE("the descriptor budget keeps the process's own descriptors apart") {
  DescriptorBudget b = descriptor_budget(20000, 2, 2, 3);
  CHECK(b.reserved == 32 + 3 + 2 * (4 + 2));
  CHECK(b.client_only == 20000 - b.reserved);
  CHECK(b.with_upstream == (20000 - b.reserved) / 2);
  CHECK(descriptor_budget(10, 2, 2, 3).with_upstream == 0);  // below the reserve: nothing fits
}

TEST_CASE("the warning comes only when the limit caps max_connections, and says the cap") {
  DescriptorBudget b = descriptor_budget(1048576, 4, 2, 10);
  CHECK(descriptor_warning(b, 100000).empty());  // the packaged LimitNOFILE
  b = descriptor_budget(20000, 2, 2, 3);
  CHECK(descriptor_warning(b, static_cast<uint32_t>(b.with_upstream)).empty());  // exactly fits
  std::string w = descriptor_warning(b, static_cast<uint32_t>(b.with_upstream + 1));
  CHECK(w.find(std::to_string(b.with_upstream)) != std::string::npos);
  w = descriptor_warning(b, 100000);
  CHECK(w.find("(20000)") != std::string::npos);
  CHECK(w.find("about 9976") != std::string::npos);
  CHECK(w.find("max_connections=100000") != std::string::npos);
  CHECK(w.find(std::to_string(200000 + b.reserved)) != std::string::npos);  // the limit that lifts it
}
