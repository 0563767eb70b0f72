// The admin API's access rules (CSRF, tokens, guarded reads) and the admin state file.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "proxy/control/admin_auth.h"
#include "proxy/control/admin_state.h"

using namespace sprayer;
using namespace sprayer::proxy;

namespace {

AdminRequest post(std::string target = "/api/v1/servers/pool1/drain") {
  AdminRequest r;
  r.method = "POST";
  r.target = std::move(target);
  r.host = "127.0.0.1:9100";
  r.admin_header = "1";
  return r;
}

conf::AdminConfig admin(std::string address = "127.0.0.1", std::string token = "") {
  conf::AdminConfig c;
  c.address = {std::move(address), 9100};
  c.token = std::move(token);
  return c;
}

std::string scratch_file() {
  char name[] = "/tmp/sprayer-admin-state-XXXXXX";
  int fd = mkstemp(name);
  REQUIRE(fd >= 0);
  close(fd);
  return name;
}

}  // namespace

TEST_CASE("a state change needs the JSON type or the header, and no foreign Origin") {
  AdminRequest r = post();
  CHECK(check_admin_request(r, "/api/v1/servers/pool1/drain", admin()).ok());
  r.admin_header.clear();
  CHECK(check_admin_request(r, "", admin()).status == 403);  // what a form sends
  r.content_type = "application/x-www-form-urlencoded";
  CHECK(check_admin_request(r, "", admin()).status == 403);
  r.content_type = "text/plain";
  CHECK(check_admin_request(r, "", admin()).status == 403);
  r.content_type = "Application/JSON; charset=utf-8";
  CHECK(check_admin_request(r, "", admin()).ok());
  r.origin = "http://127.0.0.1:9100";
  CHECK(check_admin_request(r, "", admin()).ok());
  for (const char* foreign : {"http://evil.example", "null", "http://127.0.0.1:9101", "file://", "http://127.0.0.1"}) {
    r.origin = foreign;
    CHECK_MESSAGE(check_admin_request(r, "", admin()).status == 403, foreign);
  }
  r.method = "GET";  // reads are never refused for their Origin
  CHECK(check_admin_request(r, "/api/v1/servers", admin()).ok());
}

TEST_CASE("without a token, a loopback listener takes state changes only for loopback names") {
  AdminRequest r = post();
  for (const char* host : {"127.0.0.1:9100", "localhost:9100", "LOCALHOST", "[::1]:9100", "127.0.0.1"})
    CHECK_MESSAGE(check_admin_request((r.host = host, r), "", admin()).ok(), host);
  for (const char* host : {"evil.example:9100", "", "10.0.0.1:9100", "127.0.0.1.evil.example"})
    CHECK_MESSAGE(check_admin_request((r.host = host, r), "", admin()).status == 403, host);
  r.host = "sprayer1.example.com:9100";  // off loopback the operator uses names: no Host rule
  CHECK(check_admin_request(r, "", admin("0.0.0.0")).ok());
}

TEST_CASE("a missing token is 401, a wrong one 403, and neither answer carries a token") {
  AdminRequest r = post();
  conf::AdminConfig c = admin("127.0.0.1", "s3cret");
  AdminVerdict v = check_admin_request(r, "", c);
  CHECK(v.status == 401);
  r.authorization = "Bearer s3cre";
  v = check_admin_request(r, "", c);
  CHECK(v.status == 403);
  CHECK(v.error.find("s3cre") == std::string::npos);
  r.authorization = "Basic czNjcmV0";
  CHECK(check_admin_request(r, "", c).status == 403);
  r.authorization = "bearer  s3cret ";
  CHECK(check_admin_request(r, "", c).ok());
  // The token does not replace the CSRF header: both are asked for.
  r.admin_header.clear();
  CHECK(check_admin_request(r, "", c).status == 403);
}

TEST_CASE("every read but /healthz needs a read token off loopback only") {
  AdminRequest r;
  r.method = "GET";
  for (const char* loopback : {"127.0.0.1", "127.1.2.3", "::1"}) {
    CHECK(check_admin_request(r, "/metrics", admin(loopback)).ok());
    CHECK(is_loopback({loopback, 1}));
  }
  conf::AdminConfig open = admin("0.0.0.0");
  CHECK_FALSE(is_loopback(open.address));
  CHECK(check_admin_request(r, "/metrics", open).status == 403);  // nothing configured: closed
  CHECK(check_admin_request(r, "/healthz", open).ok());
  for (const char* read : {"/status", "/api/v1/status", "/api/v1/servers", "/api/v1/ownership", "/api/v1/route"})
    CHECK_MESSAGE(check_admin_request(r, read, open).status == 403, read);
  open.read_token = "reader";
  for (const char* read : {"/status", "/api/v1/status", "/api/v1/servers", "/api/v1/ownership"}) {
    AdminVerdict v = check_admin_request(r, read, open);
    CHECK_MESSAGE(v.status == 401, read);
    CHECK(v.challenge);  // a browser asks for the token
  }
  open.token = "writer";
  CHECK(check_admin_request(r, "/api/v1/route", open).status == 401);
  r.authorization = "Bearer reader";
  CHECK(check_admin_request(r, "/api/v1/route", open).ok());
  r.authorization = "Bearer writer";
  CHECK(check_admin_request(r, "/metrics", open).ok());
  r.authorization = "Bearer other";
  CHECK(check_admin_request(r, "/metrics", open).status == 403);
  // A browser's login prompt: any user, the token as the password; a wrong one asks again.
  r.authorization = "Basic b3BlcmF0b3I6cmVhZGVy";  // operator:reader
  CHECK(check_admin_request(r, "/status", open).ok());
  r.authorization = "Basic b3BlcmF0b3I6b3RoZXI=";  // operator:other
  AdminVerdict wrong = check_admin_request(r, "/api/v1/status", open);
  CHECK(wrong.status == 401);
  CHECK(wrong.challenge);
  // The read token changes nothing.
  AdminRequest write = post();
  write.authorization = "Bearer reader";
  CHECK(check_admin_request(write, "", open).status == 403);
}

TEST_CASE("tokens_equal compares whole contents") {
  CHECK(tokens_equal("abc", "abc"));
  CHECK_FALSE(tokens_equal("abc", "abd"));
  CHECK_FALSE(tokens_equal("abc", "abcd"));
  CHECK_FALSE(tokens_equal("", "a"));
  CHECK(tokens_equal("", ""));
}

TEST_CASE("admin states round-trip through the file; a damaged file gives nothing") {
  std::string path = scratch_file();
  std::string error;
  AdminStates states{{"pool1", {health::AdminState::drain, 1764626400123}},
                     {"pool2", {health::AdminState::maintenance, 5}},
                     {"pool3", {health::AdminState::ready, 7}},
                     {"pool4", {health::AdminState::ready, 0}}};
  REQUIRE(save_admin_states(path, states, error));
  AdminStates read;
  REQUIRE(load_admin_states(path, read, error));
  CHECK(read.size() == 3);  // a ready server never changed is not written; a stamped undrain is
  CHECK(read["pool1"] == AdminRecord{health::AdminState::drain, 1764626400123});
  CHECK(read["pool2"] == AdminRecord{health::AdminState::maintenance, 5});
  CHECK(read["pool3"] == AdminRecord{health::AdminState::ready, 7});
  CHECK(access((path + ".tmp").c_str(), F_OK) != 0);

  std::ofstream(path) << "pool1 drain\npool2 sideways\n";
  CHECK_FALSE(load_admin_states(path, read, error));
  CHECK(read.empty());
  CHECK(error.find(":2:") != std::string::npos);
  for (const char* bad : {"pool1 drain 12x\n", "pool1 drain 1 2\n", "pool1 drain -1\n"}) {
    CHECK_FALSE_MESSAGE(parse_admin_states(bad, "t", read, error), bad);
    CHECK(error.find("t:1:") == 0);
  }
  // A file from before stamps: the states hold, stamped 0 (any change since wins).
  REQUIRE(parse_admin_states("# old\npool1 drain\r\n", "t", read, error));
  CHECK(read["pool1"] == AdminRecord{health::AdminState::drain, 0});

  std::remove(path.c_str());
  CHECK(load_admin_states(path, read, error));  // no file yet: no states, no error
  CHECK(read.empty());
  CHECK_FALSE(save_admin_states("/nonexistent-folder/admin-state", states, error));
  CHECK(error.find("/nonexistent-folder") != std::string::npos);
}

TEST_CASE("the pair's admin states: the later change wins, whichever member made it") {
  AdminRecord mine{health::AdminState::drain, 100};
  CHECK_FALSE(merge_admin_record(mine, {health::AdminState::ready, 99}));  // older: kept
  CHECK(mine.state == health::AdminState::drain);
  CHECK(merge_admin_record(mine, {health::AdminState::ready, 101}));  // the undrain made later
  CHECK(mine == AdminRecord{health::AdminState::ready, 101});
  CHECK_FALSE(merge_admin_record(mine, {health::AdminState::ready, 101}));  // the same: no change
  // A tie (two changes in the same millisecond) goes to the state that takes more traffic away.
  CHECK(merge_admin_record(mine, {health::AdminState::maintenance, 101}));
  CHECK_FALSE(merge_admin_record(mine, {health::AdminState::drain, 101}));
  // A new change is stamped after every one known, even when this clock is behind.
  AdminStates known{{"pool1", {health::AdminState::drain, 5000}}};
  CHECK(next_admin_stamp(1000, known) == 5001);
  CHECK(next_admin_stamp(9000, known) == 9000);
  CHECK(next_admin_stamp(7, {}) == 7);
  // What the members send each other is the file's text.
  AdminStates sent{{"pool1", {health::AdminState::maintenance, 42}}}, got;
  std::string error;
  REQUIRE(parse_admin_states(format_admin_states(sent), "peer", got, error));
  CHECK(got == sent);
}
