// Unit tests for the metric families: worker counters summed over stats blocks, the
// request matrix by server / status class / reason, histograms, and the control state.
#include <doctest/doctest.h>

#include <prometheus/text_serializer.h>

#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "proxy/config_adapters.h"
#include "proxy/control/metrics.h"

using namespace sprayer::proxy;

namespace {

const prometheus::MetricFamily* find(const std::vector<prometheus::MetricFamily>& families, const std::string& name) {
  for (const auto& f : families)
    if (f.name == name) return &f;
  return nullptr;
}

std::string label(const prometheus::ClientMetric& m, const std::string& name) {
  for (const auto& l : m.label)
    if (l.name == name) return l.value;
  return {};
}

std::string text(const std::vector<prometheus::MetricFamily>& families) {
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, families);
  return out.str();
}

}  // namespace

TEST_CASE("metrics: worker counters are summed over workers") {
  WorkerStats a, b;
  WorkerStats::add(a.requests, 3);
  WorkerStats::add(b.requests, 4);
  WorkerStats::add(a.downstream_open, 2);
  WorkerStats::add(b.downstream_open, -1);
  WorkerStats::add(a.tls_handshakes);
  WorkerStats::add(b.tls_own_records);
  WorkerStats::add(b.tls_failures, 2);
  WorkerStats::add(a.upstream_bytes_in, 100);
  WorkerStats::add(b.upstream_bytes_out, 50);
  auto families = worker_families({&a, &b}, {"s1", "s2"});
  CHECK(find(families, "sprayer_requests_total")->metric.at(0).counter.value == 7);
  CHECK(find(families, "sprayer_downstream_connections")->metric.at(0).gauge.value == 1);
  CHECK(find(families, "sprayer_tls_handshakes_total")->metric.at(0).counter.value == 1);
  CHECK(find(families, "sprayer_tls_own_record_layer_total")->metric.at(0).counter.value == 1);
  CHECK(find(families, "sprayer_tls_handshake_failures_total")->metric.at(0).counter.value == 2);
  CHECK(find(families, "sprayer_upstream_received_bytes_total")->metric.at(0).counter.value == 100);
  CHECK(find(families, "sprayer_upstream_sent_bytes_total")->metric.at(0).counter.value == 50);
}

TEST_CASE("metrics: connections and TLS by listener, named by slot, past the last slot as other") {
  WorkerStats a, b;
  WorkerStats::add(a.accepted_by[0], 3);
  WorkerStats::add(b.accepted_by[1], 2);
  WorkerStats::add(a.open_by[1], 2);
  WorkerStats::add(b.open_by[1], -1);
  WorkerStats::add(a.tls_handshakes_by[1], 4);
  WorkerStats::add(b.tls_failures_by[1]);
  WorkerStats::add(a.tls_own_records_by[1], 4);
  WorkerStats::add(b.accepted_by[WorkerStats::listener_row(kStatListeners + 3)], 7);
  CHECK(WorkerStats::listener_row(kStatListeners + 3) == kStatListeners);
  auto families = worker_families({&a, &b}, {}, 0, {"http", "https"});
  auto series = [&](const char* name) {
    std::map<std::string, double> out;
    for (const auto& m : find(families, name)->metric) {
      REQUIRE(m.label.size() == 1);
      CHECK(m.label[0].name == "listener");
      out[m.label[0].value] = m.counter.value + m.gauge.value;
    }
    return out;
  };
  CHECK(series("sprayer_downstream_connections_accepted_total") ==
        std::map<std::string, double>{{"http", 3}, {"https", 2}, {"other", 7}});
  CHECK(series("sprayer_downstream_connections") == std::map<std::string, double>{{"http", 0}, {"https", 1}});
  CHECK(series("sprayer_tls_handshakes_total") == std::map<std::string, double>{{"http", 0}, {"https", 4}});
  CHECK(series("sprayer_tls_handshake_failures_total") == std::map<std::string, double>{{"http", 0}, {"https", 1}});
  CHECK(series("sprayer_tls_own_record_layer_total") == std::map<std::string, double>{{"http", 0}, {"https", 4}});
}

TEST_CASE("metrics: a listener keeps its slot by name across reloads") {
  sprayer::conf::Config first, second;
  first.listeners.resize(2);
  first.listeners[0].name = "http";
  first.listeners[1].name = "https";
  std::vector<std::string> names;
  CHECK(assign_listener_slots(first, names) == std::vector<uint16_t>{0, 1});
  second.listeners.resize(2);
  second.listeners[0].name = "https";  // reordered, one removed, one added
  second.listeners[1].name = "alt";
  CHECK(assign_listener_slots(second, names) == std::vector<uint16_t>{1, 2});
  CHECK(names == std::vector<std::string>{"http", "https", "alt"});
}

TEST_CASE("metrics: completed requests by server, status class and reason; only non-zero series") {
  WorkerStats a, b;
  WorkerStats::add(a.finished[WorkerStats::server_row(0)][2][0], 5);  // s1 2xx owner
  WorkerStats::add(b.finished[WorkerStats::server_row(0)][2][0], 1);
  WorkerStats::add(a.finished[WorkerStats::server_row(1)][5][kReasonRetry]);  // s2 5xx retry
  WorkerStats::add(a.finished[WorkerStats::server_row(-1)][5][4]);  // none 5xx unavailable
  WorkerStats::add(a.finished[WorkerStats::server_row(500)][3][1]);  // beyond kStatServers
  auto families = worker_families({&a, &b}, {"s1", "s2"});
  const auto* f = find(families, "sprayer_requests_completed_total");
  REQUIRE(f);
  REQUIRE(f->metric.size() == 4);
  int seen = 0;
  for (const auto& m : f->metric) {
    std::string key = label(m, "server") + "/" + label(m, "code") + "/" + label(m, "reason");
    if (key == "s1/2xx/owner") { CHECK(m.counter.value == 6); ++seen; }
    if (key == "s2/5xx/retry") { CHECK(m.counter.value == 1); ++seen; }
    if (key == "none/5xx/unavailable") { CHECK(m.counter.value == 1); ++seen; }
    if (key == "other/3xx/takeover") { CHECK(m.counter.value == 1); ++seen; }
  }
  CHECK(seen == 4);
}

TEST_CASE("metrics: early re-sends by the hung server, every configured server shown") {
  WorkerStats a, b;
  WorkerStats::add(a.early_resends[WorkerStats::server_row(1)], 3);
  WorkerStats::add(b.early_resends[WorkerStats::server_row(1)], 2);
  auto families = worker_families({&a, &b}, {"s1", "s2"});
  const auto* f = find(families, "sprayer_early_resends_total");
  REQUIRE(f);
  REQUIRE(f->metric.size() == 2);
  CHECK(label(f->metric[0], "server") == "s1");
  CHECK(f->metric[0].counter.value == 0);
  CHECK(label(f->metric[1], "server") == "s2");
  CHECK(f->metric[1].counter.value == 5);
}

TEST_CASE("metrics: histograms are cumulative, summed over workers, count equals +Inf") {
  WorkerStats a, b;
  a.request_seconds.observe(200'000);         // 0.2 ms  -> first bucket (0.0005)
  a.request_seconds.observe(3'000'000);       // 3 ms    -> 0.005
  b.request_seconds.observe(2'000'000'000);   // 2 s     -> 2.5
  b.request_seconds.observe(120'000'000'000); // 120 s   -> +Inf
  auto families = worker_families({&a, &b}, {});
  const auto* f = find(families, "sprayer_request_duration_seconds");
  REQUIRE(f);
  REQUIRE(f->type == prometheus::MetricType::Histogram);
  const auto& h = f->metric.at(0).histogram;
  CHECK(h.sample_count == 4);
  CHECK(h.sample_sum == doctest::Approx(122.0032));
  REQUIRE(h.bucket.size() == kLatencyBuckets + 1);
  CHECK(h.bucket.front().upper_bound == 0.0005);
  CHECK(h.bucket.front().cumulative_count == 1);
  int checked = 0;
  for (size_t i = 0; i < kLatencyBuckets; ++i) {
    if (h.bucket[i].upper_bound == 0.005) { CHECK(h.bucket[i].cumulative_count == 2); ++checked; }
    if (h.bucket[i].upper_bound == 2.5) { CHECK(h.bucket[i].cumulative_count == 3); ++checked; }
    if (h.bucket[i].upper_bound == 60) { CHECK(h.bucket[i].cumulative_count == 3); ++checked; }
  }
  CHECK(checked == 3);
  CHECK(h.bucket.back().cumulative_count == 4);
  CHECK(text(families).find("sprayer_request_duration_seconds_bucket{le=\"+Inf\"} 4") != std::string::npos);
}

TEST_CASE("metrics: control state families") {
  ControlState st;
  st.version = "1.2.3";
  st.uptime_seconds = 12;
  st.servers.push_back({"s1", "up", 100, 7, 0, 2});
  st.servers.push_back({"s2", "maintenance", -1, 3, 4, 0});
  st.source_configured = true;
  st.source_state = "degraded";
  st.epoch = 42;
  st.users = 10;
  st.snapshot_age_seconds = 3.5;
  st.snapshot_bytes = 4096;
  st.stale = true;
  st.source_errors = 9;
  st.reloads_applied = 2;
  st.reloads_refused = 1;
  st.last_reload_ok = false;
  st.last_reload_success_seconds = 1234.5;
  auto families = control_families(st);
  std::string out = text(families);
  CHECK(out.find("sprayer_build_info{version=\"1.2.3\"} 1") != std::string::npos);
  CHECK(out.find("sprayer_server_up{server=\"s1\"} 1") != std::string::npos);
  CHECK(out.find("sprayer_server_up{server=\"s2\"} 0") != std::string::npos);
  CHECK(out.find("sprayer_server_state{server=\"s2\",state=\"maintenance\"} 1") != std::string::npos);
  CHECK(out.find("sprayer_server_state{server=\"s2\",state=\"up\"} 0") != std::string::npos);
  CHECK(out.find("sprayer_server_owned_users{server=\"s1\"} 7") != std::string::npos);
  CHECK(out.find("sprayer_server_availability{server=\"s2\"} -1") != std::string::npos);
  CHECK(out.find("sprayer_server_ejections_total{server=\"s2\"} 4") != std::string::npos);
  CHECK(out.find("sprayer_ownership_source_state{state=\"degraded\"} 1") != std::string::npos);
  CHECK(out.find("sprayer_ownership_epoch 42") != std::string::npos);
  CHECK(out.find("sprayer_ownership_snapshot_age_seconds 3.5") != std::string::npos);
  CHECK(out.find("sprayer_ownership_stale 1") != std::string::npos);
  CHECK(out.find("sprayer_ownership_snapshot_bytes 4096") != std::string::npos);
  CHECK(out.find("sprayer_ownership_source_errors_total 9") != std::string::npos);
  CHECK(out.find("sprayer_config_reloads_total{result=\"applied\"} 2") != std::string::npos);
  CHECK(out.find("sprayer_config_reloads_total{result=\"refused\"} 1") != std::string::npos);
  CHECK(out.find("sprayer_config_last_reload_successful 0") != std::string::npos);
  CHECK(out.find("sprayer_config_last_reload_success_timestamp_seconds 1234.5") != std::string::npos);

  st.snapshot_age_seconds.reset();  // never answered: no age rather than a made-up one
  CHECK(text(control_families(st)).find("sprayer_ownership_snapshot_age_seconds") == std::string::npos);
}

TEST_CASE("metrics: timeouts by side and kind, every combination shown") {
  WorkerStats a, b;
  a.timeout(TimeoutKind::client_header);
  b.timeout(TimeoutKind::client_header);
  b.timeout(TimeoutKind::upstream_response);
  auto families = worker_families({&a, &b}, {});
  const auto* f = find(families, "sprayer_timeouts_total");
  REQUIRE(f);
  CHECK(f->metric.size() == kTimeoutKinds);
  double header = -1, response = -1, idle = -1;
  for (const auto& m : f->metric) {
    if (label(m, "side") == "client" && label(m, "kind") == "header") header = m.counter.value;
    if (label(m, "side") == "upstream" && label(m, "kind") == "response") response = m.counter.value;
    if (label(m, "side") == "upstream" && label(m, "kind") == "idle") idle = m.counter.value;
  }
  CHECK(header == 2);
  CHECK(response == 1);
  CHECK(idle == 0);
}

TEST_CASE("metrics: long-polls have their own histogram, cut at the upstream response timeout") {
  WorkerStats a;
  a.long_poll_seconds.observe(400'000'000ULL);        // 0.4 s
  a.long_poll_seconds.observe(1'790'000'000'000ULL);  // a Ping held almost 30 minutes
  a.long_poll_seconds.observe(5'000'000'000'000ULL);  // past the last bound
  auto families = worker_families({&a}, {}, 1800);
  const auto* f = find(families, "sprayer_long_poll_duration_seconds");
  REQUIRE(f);
  const auto& h = f->metric.at(0).histogram;
  CHECK(h.sample_count == 3);
  REQUIRE(h.bucket.size() >= 2);
  CHECK(h.bucket.front().upper_bound == 1);
  CHECK(h.bucket.front().cumulative_count == 1);
  CHECK(h.bucket[h.bucket.size() - 2].upper_bound == 1800);
  CHECK(h.bucket[h.bucket.size() - 2].cumulative_count == 2);
  CHECK(h.bucket.back().cumulative_count == 3);
  // Not in the request histogram.
  CHECK(find(families, "sprayer_request_duration_seconds")->metric.at(0).histogram.sample_count == 0);
  // A timeout between bounds: the first bound above it is the last one shown.
  auto cut = worker_families({&a}, {}, 1000);
  const auto& hc = find(cut, "sprayer_long_poll_duration_seconds")->metric.at(0).histogram;
  CHECK(hc.bucket[hc.bucket.size() - 2].upper_bound == 1200);
}

TEST_CASE("metrics: process CPU from a /proc stat line whose command holds spaces and parentheses") {
  std::string line = "4242 (spr (a) yer) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 50 0 0 20 0 3 0 12345 1000 200";
  auto ticks = stat_cpu_ticks(line);
  REQUIRE(ticks);
  CHECK(*ticks == 300);
  CHECK_FALSE(stat_cpu_ticks("no parenthesis"));
  CHECK_FALSE(stat_cpu_ticks("1 (x) S 1 2"));
}

TEST_CASE("metrics: process_* families from the control state") {
  ControlState st;
  st.start_time_seconds = 1700000000;
  st.process = ProcessStats{12.5, 4096.0 * 1000, 8192.0 * 1000, 42, 1024};
  auto families = control_families(st);
  CHECK(find(families, "process_cpu_seconds_total")->metric.at(0).counter.value == 12.5);
  CHECK(find(families, "process_resident_memory_bytes")->metric.at(0).gauge.value == 4096000);
  CHECK(find(families, "process_open_fds")->metric.at(0).gauge.value == 42);
  CHECK(find(families, "process_max_fds")->metric.at(0).gauge.value == 1024);
  CHECK(find(families, "process_start_time_seconds")->metric.at(0).gauge.value == 1700000000);
  st.process.reset();
  CHECK_FALSE(find(control_families(st), "process_open_fds"));
}
