// The pure parts of the directory lookup: names as the directory is asked for them, RFC 4515
// filter escaping, DNs as Notes canonical names, and the bounded cache with its TTLs (time
// passed in: nothing here reads a clock).
#include <doctest/doctest.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "affinity/directory.h"

using namespace sprayer::affinity;
using namespace std::chrono_literals;

TEST_CASE("directory name: the form a device sent, as the directory is asked") {
  CHECK(directory_name("jdoe") == "jdoe");
  CHECK(directory_name("  jane.doe@acme.example ") == "jane.doe@acme.example");  // the address stays whole
  CHECK(directory_name("ACME\\jdoe") == "jdoe");
  CHECK(directory_name("a\\b\\jdoe") == "jdoe");
  CHECK(directory_name("CN=Jane Doe/OU=Sales/O=Acme") == "Jane Doe");
  CHECK(directory_name("cn= Jane Doe /O=Acme") == "Jane Doe");
  CHECK(directory_name("CN=Jane Doe") == "Jane Doe");
  CHECK(directory_name("Jane Doe/Sales/Acme") == "Jane Doe/Sales/Acme");  // abbreviated: left alone
  CHECK(directory_name("   ").empty());
  CHECK(directory_name("ACME\\").empty());
}

TEST_CASE("filter escaping (RFC 4515): the name can never change the filter") {
  CHECK(escape_filter_value("jdoe") == "jdoe");
  CHECK(escape_filter_value("a*b") == "a\\2ab");
  CHECK(escape_filter_value("(uid=*)") == "\\28uid=\\2a\\29");
  CHECK(escape_filter_value("back\\slash") == "back\\5cslash");
  CHECK(escape_filter_value(std::string("nul\0x", 5)) == "nul\\00x");
  CHECK(escape_filter_value("J\xC3\xBCrgen") == "J\\c3\\bcrgen");
  CHECK(make_filter("(|(uid=%s)(mail=%s)(cn=%s))", "jane*") == "(|(uid=jane\\2a)(mail=jane\\2a)(cn=jane\\2a))");
  CHECK(make_filter("(&(objectClass=person)(uid=%s)(x=100%%))", ")(uid=*") ==
        "(&(objectClass=person)(uid=\\29\\28uid=\\2a)(x=100%))");
  CHECK(make_filter("(uid=%s)%", "a") == "(uid=a)%");
}

TEST_CASE("a DN as a Notes canonical name") {
  CHECK(dn_to_notes_canonical("cn=Jane Doe,ou=Sales,o=Acme") == "CN=Jane Doe/OU=Sales/O=Acme");
  CHECK(dn_to_notes_canonical("CN=Jane Doe, OU=Sales, O=Acme") == "CN=Jane Doe/OU=Sales/O=Acme");
  CHECK(dn_to_notes_canonical("cn=Doe\\, Jane,o=Acme") == "CN=Doe, Jane/O=Acme");
  CHECK(dn_to_notes_canonical("cn=J\\C3\\BCrgen,o=Acme") == "CN=J\xC3\xBCrgen/O=Acme");
  CHECK(dn_to_notes_canonical("o=Acme") == "O=Acme");
  CHECK(dn_to_notes_canonical("").empty());
  CHECK(dn_to_notes_canonical("no equals sign").empty());
  CHECK(dn_to_notes_canonical("=x").empty());
}

TEST_CASE("directory cache: answers, negative answers, TTL, case") {
  DirectoryCache cache(1000);
  const auto t0 = DirectoryClock::time_point{} + 1h;
  CHECK_FALSE(cache.find("jdoe", t0));
  cache.put("JDoe", {true, "jdoe"}, t0 + 4h);
  cache.put("nobody", {false, {}}, t0 + 5min);
  auto hit = cache.find("jdoe", t0 + 1h);
  REQUIRE(hit);
  CHECK(hit->found);
  CHECK(hit->key == "jdoe");
  CHECK(cache.find("JDOE", t0)->key == "jdoe");  // names compare without case
  auto negative = cache.find("nobody", t0 + 4min);
  REQUIRE(negative);
  CHECK_FALSE(negative->found);
  CHECK_FALSE(cache.find("nobody", t0 + 5min));  // expired: dropped
  CHECK(cache.size() == 1);
  CHECK_FALSE(cache.find("jdoe", t0 + 4h));
  CHECK(cache.size() == 0);
  // A newer answer replaces the old one.
  cache.put("jane", {true, "a"}, t0 + 1h);
  cache.put("jane", {true, "b"}, t0 + 2h);
  CHECK(cache.find("jane", t0 + 90min)->key == "b");
  CHECK(cache.size() == 1);
}

TEST_CASE("directory cache: bounded, the least recently used goes first") {
  DirectoryCache cache(4, 1);  // one shard of four, so the order is exact
  const auto t = DirectoryClock::time_point{} + 1h;
  for (const char* name : {"a", "b", "c", "d"}) cache.put(name, {true, name}, t + 1h);
  CHECK(cache.find("a", t));  // a is now the most recent
  cache.put("e", {true, "e"}, t + 1h);
  CHECK(cache.size() == 4);
  CHECK(cache.evictions() == 1);
  CHECK_FALSE(cache.find("b", t));
  for (const char* name : {"a", "c", "d", "e"}) CHECK(cache.find(name, t));

  DirectoryCache sharded(1600, 16);
  for (int i = 0; i < 10000; ++i) sharded.put("user" + std::to_string(i), {true, "k"}, t + 1h);
  CHECK(sharded.size() <= 1600);
  CHECK(sharded.evictions() == 10000 - sharded.size());
}

TEST_CASE("directory cache: workers read while the directory thread writes") {
  DirectoryCache cache(100000);
  const auto t = DirectoryClock::time_point{} + 1h;
  std::vector<std::thread> threads;
  for (int w = 0; w < 4; ++w) {
    threads.emplace_back([&, w] {
      for (int i = 0; i < 20000; ++i) {
        const std::string name = "u" + std::to_string((i * 7 + w) % 5000);
        if (w == 0) cache.put(name, {true, name}, t + 1h);
        else if (auto a = cache.find(name, t)) CHECK(a->key == name);
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(cache.size() == 5000);
}
