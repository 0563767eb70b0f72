// Unit tests for the access log: both line formats (fields, escaping, absent values), and
// the writer thread (batches written in order, reopen after a rename, per-worker buffer).
#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "proxy/access_log.h"

using namespace sprayer::proxy;
using sprayer::conf::AccessLogConfig;
using sprayer::conf::AccessLogFormat;

namespace {

AccessRecord sample() {
  AccessRecord r;
  r.time = std::chrono::system_clock::time_point(std::chrono::milliseconds(1700000000123LL));  // 2023-11-14T22:13:20.123Z
  r.client_ip = "192.0.2.7";
  r.method = "POST";
  r.target = "/Microsoft-Server-ActiveSync?Cmd=Sync&User=alice";
  r.user = "alice";
  r.server = "pool1";
  r.reason = "owner";
  r.status = 200;
  r.bytes_in = 321;
  r.bytes_out = 4567;
  r.total_ns = 12'345'678;
  r.connect_ns = 1'000'000;
  r.ttfb_ns = 10'000'000;
  r.user_agent = "Apple-iPhone/1\"x";
  return r;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string temp_name(const char* tag) {
  return "/tmp/sprayer-unit-accesslog-" + std::to_string(getpid()) + "-" + tag;
}

}  // namespace

TEST_CASE("access log: json line carries every field") {
  std::string out;
  format_access_line(AccessLogFormat::json, sample(), out);
  CHECK(out ==
        "{\"time\":\"2023-11-14T22:13:20.123Z\",\"client\":\"192.0.2.7\",\"user\":\"alice\",\"method\":\"POST\","
        "\"target\":\"/Microsoft-Server-ActiveSync?Cmd=Sync&User=alice\",\"protocol\":\"HTTP/1.1\",\"status\":200,"
        "\"server\":\"pool1\",\"reason\":\"owner\",\"bytes_in\":321,\"bytes_out\":4567,\"duration_ms\":12.346,"
        "\"connect_ms\":1.000,\"ttfb_ms\":10.000,\"referer\":\"\",\"user_agent\":\"Apple-iPhone/1\\\"x\"}\n");
}

TEST_CASE("access log: json escapes quotes, backslashes and control bytes in client text") {
  AccessRecord r = sample();
  r.user_agent = std::string_view("a\"b\\c\nd\re\tf\x01g\x7fh", 15);
  std::string out;
  format_access_line(AccessLogFormat::json, r, out);
  CHECK(out.find("\"user_agent\":\"a\\\"b\\\\c\\nd\\re\\tf\\u0001g\\u007fh\"}\n") != std::string::npos);
  out.clear();
  format_access_line(AccessLogFormat::combined, r, out);
  CHECK(out.find("\"a\\x22b\\x5Cc\\x0Ad\\x0De\\x09f\\x01g\\x7Fh\"") != std::string::npos);
}

TEST_CASE("access log: json nulls for what was not there") {
  AccessRecord r = sample();
  r.user = {};
  r.server = {};
  r.connect_ns = -1;
  r.ttfb_ns = -1;
  r.status = 0;
  std::string out;
  format_access_line(AccessLogFormat::json, r, out);
  CHECK(out.find("\"user\":null") != std::string::npos);
  CHECK(out.find("\"server\":null") != std::string::npos);
  CHECK(out.find("\"connect_ms\":null,\"ttfb_ms\":null") != std::string::npos);
  CHECK(out.find("\"status\":0") != std::string::npos);
}

TEST_CASE("access log: combined line, escaped client text, sprayer fields after") {
  AccessRecord r = sample();
  r.user_agent = "evil\"\n agent";
  std::string out;
  format_access_line(AccessLogFormat::combined, r, out);
  CHECK(out ==
        "192.0.2.7 - alice [14/Nov/2023:22:13:20 +0000] \"POST /Microsoft-Server-ActiveSync?Cmd=Sync&User=alice "
        "HTTP/1.1\" 200 4567 \"-\" \"evil\\x22\\x0A agent\" server=pool1 reason=owner in=321 total_ms=12.346 "
        "connect_ms=1.000 ttfb_ms=10.000\n");
  CHECK(out.find('\n') == out.size() - 1);  // one line, whatever the client sent
}

TEST_CASE("access log: writer appends batches in order and reopens after a rename") {
  std::string path = temp_name("reopen");
  std::remove(path.c_str());
  std::remove((path + ".1").c_str());
  AccessLogConfig config;
  config.enabled = true;
  config.path = path;
  std::string error;
  auto log = AccessLog::open(config, error);
  REQUIRE_MESSAGE(log, error);
  CHECK(log->submit("one\n"));
  CHECK(log->submit("two\n"));
  log->flush();
  CHECK(read_file(path) == "one\ntwo\n");
  REQUIRE(std::rename(path.c_str(), (path + ".1").c_str()) == 0);
  log->reopen();
  CHECK(log->submit("three\n"));
  log->flush();
  CHECK(read_file(path + ".1") == "one\ntwo\n");
  CHECK(read_file(path) == "three\n");
  CHECK(log->reopens() == 1);
  CHECK(log->write_errors() == 0);
  log.reset();
  std::remove(path.c_str());
  std::remove((path + ".1").c_str());
}

TEST_CASE("access log: an unopenable file is a clear error; a full queue drops and says so") {
  AccessLogConfig config;
  config.path = "/nonexistent-dir/access.log";
  std::string error;
  CHECK_FALSE(AccessLog::open(config, error));
  CHECK(error.find("/nonexistent-dir/access.log") != std::string::npos);

  std::string path = temp_name("buffer");
  config.path = path;
  config.max_queued_bytes = 64 * 1024;
  auto log = AccessLog::open(config, error);
  REQUIRE(log);
  AccessLogBuffer buffer(log);
  CHECK(buffer.enabled());
  for (int i = 0; i < 10; ++i) CHECK(buffer.add(sample()) == 0);
  CHECK(buffer.flush() == 0);
  log->flush();
  std::string text = read_file(path);
  CHECK(std::count(text.begin(), text.end(), '\n') == 10);
  CHECK_FALSE(log->submit(std::string(config.max_queued_bytes + 1, 'x')));  // over the limit: refused
  CHECK_FALSE(AccessLogBuffer(nullptr).enabled());
  log.reset();
  std::remove(path.c_str());
}

TEST_CASE("access log: sensitive query values are masked, in the target and the referer") {
  const std::vector<std::string> mask{"password", "pwd"};
  std::string scratch;
  CHECK(mask_query("/a?user=jo&password=s3cret&x=1", mask, scratch) == "/a?user=jo&password=***&x=1");
  CHECK(mask_query("/a?PWD=1;Password=2#password=frag", mask, scratch) == "/a?PWD=***;Password=***#password=frag");
  CHECK(mask_query("/a?pass%77ord=x&pwd", mask, scratch) == "/a?pass%77ord=***&pwd");  // encoded name; no value
  CHECK(mask_query("/a?passwords=x&pw=y&password=", mask, scratch) == "/a?passwords=x&pw=y&password=");
  CHECK(mask_query("/password=x", mask, scratch) == "/password=x");  // not a query
  CHECK(mask_query("/a?password=x", {}, scratch) == "/a?password=x");
  AccessRecord r = sample();
  r.target = "/traveler?user=alice&password=hunter2";
  r.referer = "https://x.example/login?pwd=hunter2";
  std::string out;
  format_access_line(AccessLogFormat::json, r, out, mask);
  CHECK(out.find("hunter2") == std::string::npos);
  CHECK(out.find("\"target\":\"/traveler?user=alice&password=***\"") != std::string::npos);
  CHECK(out.find("\"referer\":\"https://x.example/login?pwd=***\"") != std::string::npos);
  out.clear();
  format_access_line(AccessLogFormat::combined, r, out, mask);
  CHECK(out.find("hunter2") == std::string::npos);
  CHECK(out.find("/traveler?user=alice&password=*** HTTP/1.1") != std::string::npos);
}

TEST_CASE("access log: bytes that are not UTF-8 are escaped, valid UTF-8 is kept") {
  AccessRecord r = sample();
  // Valid: é (2 bytes), € (3), 😀 (4). Invalid: a lone continuation byte, an overlong '/',
  // a surrogate, a truncated sequence at the end, a byte that never starts one.
  r.target = "/\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80-\x80-\xC0\xAF-\xED\xA0\x80-\xFF-\xE2\x82";
  std::string out;
  format_access_line(AccessLogFormat::json, r, out);
  CHECK(out.find("\"target\":\"/\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80-\\u0080-\\u00c0\\u00af-\\u00ed\\u00a0\\u0080-"
                 "\\u00ff-\\u00e2\\u0082\"") != std::string::npos);
}

TEST_CASE("access log: a refused request says which rule refused it") {
  AccessRecord r = sample();
  r.status = 400;
  r.reason = "local";
  r.rejected = "bad_transfer_encoding";
  std::string out;
  format_access_line(AccessLogFormat::json, r, out);
  CHECK(out.find(",\"rejected\":\"bad_transfer_encoding\"}\n") != std::string::npos);
  out.clear();
  format_access_line(AccessLogFormat::combined, r, out);
  CHECK(out.find(" rejected=bad_transfer_encoding\n") != std::string::npos);
  out.clear();
  format_access_line(AccessLogFormat::json, sample(), out);
  CHECK(out.find("rejected") == std::string::npos);
}
