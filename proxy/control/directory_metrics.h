// Exports a DirectoryClient's state at scrape time (nothing when the directory is off).
#pragma once

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

#include <vector>

#include "proxy/directory_client.h"

namespace sprayer::proxy {

class DirectoryCollector : public prometheus::Collectable {
 public:
  explicit DirectoryCollector(DirectoryClient* client) : client_(client) {}
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  DirectoryClient* client_;
};

}  // namespace sprayer::proxy
