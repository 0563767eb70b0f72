// The /healthz decision: every problem, its precedence, and the staleness bound.
#include <doctest/doctest.h>

#include "proxy/control/self_health.h"

using namespace sprayer::proxy;
using std::chrono::milliseconds;

namespace {

// A healthy instance with a database source; each test breaks one thing.
SelfHealthInput healthy() {
  SelfHealthInput in;
  in.listeners_up = true;
  in.source_configured = true;
  in.snapshot_loaded = true;
  in.since_success = milliseconds(150);
  in.max_staleness = milliseconds(30000);
  in.servers = 3;
  in.usable_servers = 3;
  return in;
}

}  // namespace

TEST_CASE("a current instance with a usable server is healthy") {
  SelfHealth h = judge_self_health(healthy());
  CHECK(h.healthy());
  CHECK(h.http_status() == 200);
  CHECK(h.problem == SelfHealthProblem::none);
  CHECK(h.reason == "ok");
}

TEST_CASE("without an ownership source, no snapshot and no staleness are needed") {
  SelfHealthInput in = healthy();
  in.source_configured = false;
  in.snapshot_loaded = false;
  in.since_success.reset();
  CHECK(judge_self_health(in).healthy());
}

TEST_CASE("draining comes first") {
  SelfHealthInput in = healthy();
  in.draining = true;
  in.listeners_up = false;
  in.snapshot_loaded = false;
  in.usable_servers = 0;
  SelfHealth h = judge_self_health(in);
  CHECK(h.problem == SelfHealthProblem::draining);
  CHECK(h.http_status() == 503);
  CHECK(h.reason.rfind("draining: ", 0) == 0);
}

TEST_CASE("listeners not bound") {
  SelfHealthInput in = healthy();
  in.listeners_up = false;
  in.usable_servers = 0;
  CHECK(judge_self_health(in).problem == SelfHealthProblem::listeners_down);
}

TEST_CASE("no snapshot yet, from neither database nor cache") {
  SelfHealthInput in = healthy();
  in.snapshot_loaded = false;
  in.since_success.reset();
  in.usable_servers = 0;
  SelfHealth h = judge_self_health(in);
  CHECK(h.problem == SelfHealthProblem::no_snapshot);
  CHECK(h.reason.find("no ownership snapshot") != std::string::npos);
}

TEST_CASE("staleness bound: at the bound is current, one millisecond past is stale") {
  SelfHealthInput in = healthy();
  in.since_success = milliseconds(30000);
  CHECK(judge_self_health(in).healthy());
  in.since_success = milliseconds(30001);
  SelfHealth h = judge_self_health(in);
  CHECK(h.problem == SelfHealthProblem::snapshot_stale);
  CHECK(h.reason.find("30001 ms ago") != std::string::npos);
  CHECK(h.reason.find("max_staleness 30000 ms") != std::string::npos);
}

TEST_CASE("a snapshot only from the cache file is stale while the bound is on") {
  SelfHealthInput in = healthy();
  in.since_success.reset();
  SelfHealth h = judge_self_health(in);
  CHECK(h.problem == SelfHealthProblem::snapshot_stale);
  CHECK(h.reason.find("cache file") != std::string::npos);
}

TEST_CASE("max_staleness 0 turns the bound off: any loaded snapshot will do") {
  SelfHealthInput in = healthy();
  in.max_staleness = milliseconds(0);
  in.since_success.reset();
  CHECK(judge_self_health(in).healthy());
  in.since_success = milliseconds(24 * 3600 * 1000);
  CHECK(judge_self_health(in).healthy());
  in.snapshot_loaded = false;  // but a snapshot is still required
  CHECK(judge_self_health(in).problem == SelfHealthProblem::no_snapshot);
}

TEST_CASE("stale comes before no usable server") {
  SelfHealthInput in = healthy();
  in.since_success = milliseconds(60000);
  in.usable_servers = 0;
  CHECK(judge_self_health(in).problem == SelfHealthProblem::snapshot_stale);
}

TEST_CASE("no usable server") {
  SelfHealthInput in = healthy();
  in.usable_servers = 0;
  SelfHealth h = judge_self_health(in);
  CHECK(h.problem == SelfHealthProblem::no_usable_server);
  CHECK(h.reason.find("none of 3 pool servers") != std::string::npos);
  in.servers = 0;
  CHECK(judge_self_health(in).reason.find("no pool server configured") != std::string::npos);
  in.usable_servers = 1;
  in.servers = 1;
  CHECK(judge_self_health(in).healthy());
}

TEST_CASE("every problem has a distinct name") {
  CHECK(to_string(SelfHealthProblem::none) == "ok");
  CHECK(to_string(SelfHealthProblem::draining) == "draining");
  CHECK(to_string(SelfHealthProblem::listeners_down) == "listeners_down");
  CHECK(to_string(SelfHealthProblem::no_snapshot) == "no_snapshot");
  CHECK(to_string(SelfHealthProblem::snapshot_stale) == "snapshot_stale");
  CHECK(to_string(SelfHealthProblem::no_usable_server) == "no_usable_server");
}
