// The memory budget: the overload state machine, step by step; the default budget from the
// cgroup and meminfo texts; the buffer pool and the stream writer charging it.
#include <doctest/doctest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <vector>

#include "proxy/buffer_pool.h"
#include "proxy/overload.h"
#include "proxy/stream_writer.h"
#include "test_loop.h"

using namespace sprayer::proxy;

namespace {

constexpr uint64_t kBudget = 1000;

OverloadState walk(std::initializer_list<uint64_t> used) {
  OverloadMarks marks = OverloadMarks::of(kBudget);
  OverloadState s = OverloadState::normal;
  for (uint64_t u : used) s = next_overload_state(s, u, marks, 0);
  return s;
}

}  // namespace

TEST_CASE("overload marks: 80, 90 and 95 percent of the budget") {
  OverloadMarks m = OverloadMarks::of(kBudget);
  CHECK(m.resume == 800);
  CHECK(m.refuse == 900);
  CHECK(m.shed == 950);
  // No overflow near the top of the range.
  OverloadMarks big = OverloadMarks::of(UINT64_MAX);
  CHECK(big.shed > big.refuse);
  CHECK(big.refuse > big.resume);
}

TEST_CASE("overload state: refuse at the refuse mark, shed at the shed mark, normal only under resume") {
  OverloadMarks m = OverloadMarks::of(kBudget);
  CHECK(next_overload_state(OverloadState::normal, 899, m, 0) == OverloadState::normal);
  CHECK(next_overload_state(OverloadState::normal, 900, m, 0) == OverloadState::refusing);
  CHECK(next_overload_state(OverloadState::normal, 950, m, 0) == OverloadState::shedding);
  // Hysteresis: refusing stays down to the resume mark.
  CHECK(walk({900, 850}) == OverloadState::refusing);
  CHECK(walk({900, 800}) == OverloadState::refusing);
  CHECK(walk({900, 799}) == OverloadState::normal);
  CHECK(walk({900, 799, 850}) == OverloadState::normal);  // not refusing again below 90 %
  // Shedding goes on down to the resume mark, then it is normal at once.
  CHECK(walk({960, 920}) == OverloadState::shedding);
  CHECK(walk({960, 800}) == OverloadState::shedding);
  CHECK(walk({960, 799}) == OverloadState::normal);
  CHECK(walk({960, 799, 940}) == OverloadState::refusing);
  // No budget: never overloaded.
  CHECK(next_overload_state(OverloadState::shedding, UINT64_MAX, OverloadMarks::of(0), 0) == OverloadState::normal);
}

TEST_CASE("overload state: refusing that lasts kShedAfterMs sheds, so nobody holds new clients out") {
  OverloadMarks m = OverloadMarks::of(kBudget);
  constexpr uint64_t after = OverloadMarks::kShedAfterMs;
  CHECK(next_overload_state(OverloadState::refusing, 850, m, after - 1) == OverloadState::refusing);
  CHECK(next_overload_state(OverloadState::refusing, 850, m, after) == OverloadState::shedding);
  CHECK(next_overload_state(OverloadState::refusing, 920, m, after) == OverloadState::shedding);
  CHECK(next_overload_state(OverloadState::refusing, 799, m, after * 10) == OverloadState::normal);
  CHECK(next_overload_state(OverloadState::normal, 899, m, after * 10) == OverloadState::normal);
}

TEST_CASE("overload: update reports each transition once, to one caller") {
  Overload o(kBudget);
  CHECK_FALSE(o.update(0));
  o.charge(910);
  auto t = o.update(100);
  REQUIRE(t);
  CHECK(t->from == OverloadState::normal);
  CHECK(t->to == OverloadState::refusing);
  CHECK_FALSE(o.update(200));  // the same state: nothing to log
  CHECK(o.refusing());
  CHECK(o.excess() == 111);  // down to under the resume mark
  // Still refusing at 85 % two seconds after it started: shedding.
  o.release(60);
  CHECK_FALSE(o.update(100 + OverloadMarks::kShedAfterMs - 1));
  t = o.update(100 + OverloadMarks::kShedAfterMs);
  REQUIRE(t);
  CHECK(t->to == OverloadState::shedding);
  o.charge(110);
  CHECK_FALSE(o.update(5000));
  o.release(960);
  t = o.update(5100);
  REQUIRE(t);
  CHECK(t->from == OverloadState::shedding);
  CHECK(t->to == OverloadState::normal);
  CHECK(o.used() == 0);
  CHECK(o.excess() == 0);
}

TEST_CASE("overload: try_charge refuses what would pass the budget, and counts it") {
  Overload o(kBudget);
  CHECK(o.try_charge(600));
  CHECK(o.try_charge(400));
  CHECK_FALSE(o.try_charge(1));
  CHECK(o.used() == 1000);
  CHECK(o.allocation_failures() == 1);
  Overload unlimited;
  CHECK(unlimited.try_charge(uint64_t{1} << 40));
}

TEST_CASE("default budget: half of the smaller of the cgroup limit and MemTotal") {
  const char* meminfo = "MemTotal:        8000000 kB\nMemFree:         1000 kB\n";
  CHECK(default_memory_budget("", "", meminfo) == 8000000ull * 1024 / 2);
  CHECK(default_memory_budget("max\n", "", meminfo) == 8000000ull * 1024 / 2);
  CHECK(default_memory_budget("1073741824\n", "", meminfo) == 512ull << 20);
  // cgroup v1 without a limit says a page-rounded LONG_MAX.
  CHECK(default_memory_budget("", "9223372036854771712\n", meminfo) == 8000000ull * 1024 / 2);
  CHECK(default_memory_budget("", "268435456\n", meminfo) == 128ull << 20);
  // A limit above the machine's memory is the machine's memory.
  CHECK(default_memory_budget("17179869184", "", meminfo) == 8000000ull * 1024 / 2);
  CHECK(default_memory_budget("536870912", "", "") == 256ull << 20);
  CHECK(default_memory_budget("junk", "", "") == 0);
  CHECK(default_memory_budget_here() > 0);  // this machine has /proc/meminfo
}

TEST_CASE("buffer pool: chunks are charged to the budget; past it acquire gives null, never throws") {
  BufferPool probe(4096, 8);
  const size_t cost = probe.chunk_cost();
  Overload o(cost * 4);
  {
    BufferPool pool(4096, 8, &o);
    std::vector<Chunk*> held;
    for (int i = 0; i < 4; ++i) {
      Chunk* c = pool.acquire();
      REQUIRE(c != nullptr);
      held.push_back(c);
    }
    CHECK(o.used() == cost * 4);
    CHECK(pool.acquire() == nullptr);
    CHECK(o.allocation_failures() == 1);
    // Given back at or above half the budget a chunk goes to the system; below, it is kept
    // (still charged) for reuse.
    const size_t used_after[] = {3, 2, 1, 1};
    const size_t kept_after[] = {0, 0, 0, 1};
    for (int i = 0; i < 4; ++i) {
      BufferPool::unref(held[i]);
      CHECK(o.used() == cost * used_after[i]);
      CHECK(pool.free_count() == kept_after[i]);
    }
    Chunk* again = pool.acquire();  // from the free list: no new charge
    CHECK(again != nullptr);
    CHECK(o.used() == cost);
    BufferPool::unref(again);
    pool.trim();
    CHECK(pool.free_count() == 0);
    CHECK(o.used() == 0);
    // join says why it did not join.
    Chunk* a = pool.acquire();
    Chunk* b = pool.acquire();
    Chunk* c = pool.acquire();
    Chunk* d = pool.acquire();
    REQUIRE(d != nullptr);
    Slice held_slice(a, a->data(), 10);
    Slice more(b, b->data(), 10);
    CHECK(pool.join(held_slice, more) == BufferPool::Join::no_memory);
    CHECK(held_slice.size() == 10);
    Slice big(c, c->data(), 4095);
    CHECK(pool.join(held_slice, big) == BufferPool::Join::too_big);
    for (Chunk* x : {a, b, c, d}) BufferPool::unref(x);
  }
  CHECK(o.used() == 0);
}

TEST_CASE("stream writer: a queued write charges its copies to the budget until it completes") {
  int fds[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0);
  int small = 4096;
  setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
  sprayer::test::TestLoop loop;
  uv_pipe_t pipe;
  REQUIRE(uv_pipe_init(loop.get(), &pipe, 0) == 0);
  REQUIRE(uv_pipe_open(&pipe, fds[0]) == 0);
  Overload o;  // unlimited: charges are still counted
  StreamWriter writer;
  writer.init(reinterpret_cast<uv_stream_t*>(&pipe), nullptr, nullptr);
  writer.set_budget(&o);
  std::string bytes(1 << 20, 'x');
  writer.add_copy(bytes);
  REQUIRE(writer.flush() == 0);
  CHECK(writer.in_flight() > 0);  // the socket took only part of it
  CHECK(o.used() >= writer.in_flight());
  // The peer reads everything: the write completes and gives its charge back.
  size_t got = 0;
  char buf[65536];
  REQUIRE(loop.run_until(
      [&] {
        ssize_t n = ::recv(fds[1], buf, sizeof buf, MSG_DONTWAIT);
        if (n > 0) got += static_cast<size_t>(n);
        return writer.idle() && got == bytes.size();
      },
      std::chrono::seconds(20)));
  CHECK(o.used() == 0);
  uv_close(reinterpret_cast<uv_handle_t*>(&pipe), nullptr);
  CHECK(loop.close() == 0);
  ::close(fds[1]);
}

TEST_CASE("the overload answer: 503 with Retry-After, and the connection closes") {
  std::string out;
  build_overload_response(out);
  CHECK(out.rfind("HTTP/1.1 503 Service Unavailable\r\n", 0) == 0);
  CHECK(out.find("\r\nRetry-After: 5\r\n") != std::string::npos);
  CHECK(out.find("\r\nConnection: close\r\n") != std::string::npos);
  size_t body = out.find("\r\n\r\n") + 4;
  CHECK(out.find("Content-Length: " + std::to_string(out.size() - body)) != std::string::npos);
}
