// Unit tests for the status page's history: interval rates, error ratios and percentiles
// from cumulative worker counters, the ring's bound, and the JSON series the page plots.
#include <doctest/doctest.h>

#include <memory>
#include <string>

#include "proxy/control/status_page.h"
#include "proxy/control/status_samples.h"

using namespace sprayer::proxy;

namespace {

void finish(WorkerStats& w, size_t row, size_t status_class, uint64_t ns, int n = 1) {
  for (int i = 0; i < n; ++i) {
    WorkerStats::add(w.finished[row][status_class][0]);
    w.server_seconds[row].observe(ns);
  }
}

}  // namespace

TEST_CASE("status samples: quantiles interpolate inside the bucket") {
  uint64_t buckets[kLatencyBuckets + 1]{};
  CHECK_FALSE(bucket_quantile(buckets, 0.5));
  buckets[4] = 10;  // all in (0.005, 0.01]
  CHECK(*bucket_quantile(buckets, 0.5) == doctest::Approx(0.0075));
  CHECK(*bucket_quantile(buckets, 1.0) == doctest::Approx(0.01));
  buckets[kLatencyBuckets] = 10;  // as many past the last bound: their lower bound answers
  CHECK(*bucket_quantile(buckets, 0.99) == doctest::Approx(kLatencyBounds[kLatencyBuckets - 1]));
  CHECK(*bucket_quantile(buckets, 0.25) == doctest::Approx(0.0075));
}

TEST_CASE("status samples: rates and percentiles per interval, a baseline first") {
  auto w = std::make_unique<WorkerStats>();
  StatusSamples samples;
  std::vector<const WorkerStats*> stats{w.get()};
  std::vector<StatusSamples::Server> servers{{"pool1", 0}, {"pool2", 1}};
  finish(*w, 0, 2, 3'000'000, 50);  // before the baseline: not in any interval
  samples.sample(100, stats, servers, {});
  REQUIRE(samples.server("pool1"));
  CHECK(samples.server("pool1")->empty());

  finish(*w, 0, 2, 3'000'000, 18);   // 3 ms
  finish(*w, 0, 5, 300'000'000, 2);  // 300 ms, 5xx
  WorkerStats::add(w->parked[0], 4);
  samples.sample(102, stats, servers, {});
  const auto& s1 = samples.server("pool1")->back();
  CHECK(s1.rate == doctest::Approx(10));
  CHECK(s1.error_ratio == doctest::Approx(0.1));
  CHECK(*s1.p50 < 0.005);
  CHECK(*s1.p99 > 0.25);
  CHECK(s1.parked == 4);
  const auto& s2 = samples.server("pool2")->back();
  CHECK(s2.rate == 0);
  CHECK_FALSE(s2.p50);

  // A quiet interval: no percentiles, rate 0.
  samples.sample(104, stats, servers, {});
  CHECK(samples.server("pool1")->back().rate == 0);
  CHECK_FALSE(samples.server("pool1")->back().p99);

  // The ring keeps kSampleCount; a server no longer configured is forgotten.
  for (int i = 0; i < 200; ++i) samples.sample(106 + 2 * i, stats, {{"pool1", 0}}, {});
  CHECK(samples.server("pool1")->size() == kSampleCount);
  CHECK(samples.process().size() == kSampleCount);
  CHECK_FALSE(samples.server("pool2"));
}

TEST_CASE("status samples: the JSON gives the page its series and per-server details") {
  auto w = std::make_unique<WorkerStats>();
  StatusSamples samples;
  std::vector<const WorkerStats*> stats{w.get()};
  ProcessSample p;
  p.connections = 7;
  p.ownership_age = 0.5;
  samples.sample(10, stats, {{"pool1", 0}}, p);
  finish(*w, 0, 2, 1'000'000, 4);
  samples.sample(12, stats, {{"pool1", 0}}, p);
  ControlState st;
  ControlState::ServerRow row;
  row.id = "pool1";
  row.address = "10.0.0.1:80";
  row.weight = 3;
  row.reason = "check_timeout";
  row.parked = 2;
  row.takeovers_in = 5;
  st.servers.push_back(row);
  st.samples = &samples;
  st.process = ProcessStats{1, 2048, 4096, 9, 1024};
  std::string json = status_json(st);
  CHECK(json.find("\"server_details\":[{\"id\":\"pool1\",\"address\":\"10.0.0.1:80\",\"weight\":3,") !=
        std::string::npos);
  CHECK(json.find("\"reason\":\"check_timeout\"") != std::string::npos);
  CHECK(json.find("\"parked\":2,\"takeovers_in\":5,\"takeovers_out\":0") != std::string::npos);
  CHECK(json.find("\"rate\":[2.000]") != std::string::npos);
  CHECK(json.find("\"p99\":[0.000995]") != std::string::npos);
  CHECK(json.find("\"connections\":[7,7]") != std::string::npos);
  CHECK(json.find("\"ownership_age_seconds\":[0.500,0.500]") != std::string::npos);
  CHECK(json.find("\"resident_bytes\":2048.000") != std::string::npos);
}
