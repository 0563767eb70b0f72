// Unit tests for user extraction (affinity/extract.h): every source, the MS-ASHTTP base64
// query layout (published example and hand-built vectors), malformed input, huge input.
#include <doctest/doctest.h>

#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "affinity/extract.h"
#include "affinity/rendezvous.h"

using namespace sprayer::affinity;
using Status = ExtractResult::Status;

namespace {

std::string base64(std::string_view bytes, bool pad = true) {
  constexpr std::string_view alphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  std::size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const std::uint32_t v = (std::uint32_t(std::uint8_t(bytes[i])) << 16) |
                            (std::uint32_t(std::uint8_t(bytes[i + 1])) << 8) | std::uint8_t(bytes[i + 2]);
    out += alphabet[v >> 18];
    out += alphabet[(v >> 12) & 63];
    out += alphabet[(v >> 6) & 63];
    out += alphabet[v & 63];
  }
  if (bytes.size() - i == 1) {
    const std::uint32_t v = std::uint32_t(std::uint8_t(bytes[i])) << 16;
    out += alphabet[v >> 18];
    out += alphabet[(v >> 12) & 63];
    if (pad) out += "==";
  } else if (bytes.size() - i == 2) {
    const std::uint32_t v = (std::uint32_t(std::uint8_t(bytes[i])) << 16) | (std::uint32_t(std::uint8_t(bytes[i + 1])) << 8);
    out += alphabet[v >> 18];
    out += alphabet[(v >> 12) & 63];
    out += alphabet[(v >> 6) & 63];
    if (pad) out += "=";
  }
  return out;
}

std::string percent_encode_base64(std::string_view b64) {
  std::string out;
  for (char c : b64) {
    if (c == '+') out += "%2B";
    else if (c == '/') out += "%2F";
    else if (c == '=') out += "%3D";
    else out += c;
  }
  return out;
}

// The MS-ASHTTP 2.2.1.1.1.1 byte sequence.
struct AsQuery {
  unsigned version = 141;
  unsigned command = 0;
  unsigned locale = 0x0409;
  std::string device_id = "dev1";
  std::string policy_key;  // "" or 4 bytes
  std::string device_type = "iPhone";
  std::vector<std::pair<unsigned, std::string>> params;

  std::string bytes() const {
    std::string b;
    b += char(version);
    b += char(command);
    b += char(locale & 0xFF);
    b += char(locale >> 8);
    b += char(device_id.size());
    b += device_id;
    b += char(policy_key.size());
    b += policy_key;
    b += char(device_type.size());
    b += device_type;
    for (const auto& [tag, value] : params) {
      b += char(tag);
      b += char(value.size());
      b += value;
    }
    return b;
  }
};

class Request {
 public:
  explicit Request(std::string target, std::initializer_list<std::pair<std::string, std::string>> headers = {})
      : target_(std::move(target)), owned_(headers) {
    for (const auto& [name, value] : owned_) headers_.push_back(Header{name, value});
  }
  RequestView view() const { return RequestView{"POST", target_, headers_}; }

 private:
  std::string target_;
  std::vector<std::pair<std::string, std::string>> owned_;
  std::vector<Header> headers_;
};

ExtractResult run(const Extractor& extractor, const Request& request) {
  return extractor.extract(request.view());
}

ExtractResult run(const Request& request) {
  const Extractor extractor{ExtractorConfig{}};
  return extractor.extract(request.view());
}

std::pair<std::string, std::string> basic(std::string_view user_password) {
  return {"Authorization", "Basic " + base64(user_password)};
}

ExtractorConfig only(Source kind, std::string name = {}) {
  ExtractorConfig config;
  config.order = {ExtractorStep{kind, std::move(name)}};
  return config;
}

constexpr std::string_view kSpecExample = "jAAJBAp2MTQwRGV2aWNlAApTbWFydFBob25l";  // MS-ASHTTP 2.2.1.1.1.1

}  // namespace

TEST_CASE("request view: header names match case-insensitively") {
  const Header headers[] = {{"content-type", "a"}, {"AUTHORIZATION", "b"}, {"Authorization", "c"}};
  const RequestView view{"GET", "/", headers};
  CHECK(find_header(view, "Authorization") == std::optional<std::string_view>("b"));
  CHECK(find_header(view, "Content-Type") == std::optional<std::string_view>("a"));
  CHECK_FALSE(find_header(view, "Cookie"));
  CHECK(iequals("Microsoft-Server-ActiveSync", "microsoft-server-activesync"));
  CHECK_FALSE(iequals("abc", "abd"));
  CHECK_FALSE(iequals("abc", "abcd"));
}

TEST_CASE("default order: activesync_query, activesync_base64, basic_auth, traveler_url") {
  const auto order = default_extractor_order();
  REQUIRE(order.size() == 4);
  CHECK(order[0].kind == Source::activesync_query);
  CHECK(order[1].kind == Source::activesync_base64);
  CHECK(order[2].kind == Source::basic_auth);
  CHECK(order[3].kind == Source::traveler_url);
  CHECK(to_string(Source::activesync_base64) == "activesync_base64");
  CHECK(to_string(Source::none) == "none");
}

TEST_CASE("activesync plain query: user, device and command") {
  const auto r = run(Request("/Microsoft-Server-ActiveSync?Cmd=Sync&User=jdoe&DeviceId=X&DeviceType=iPhone"));
  CHECK(r.status == Status::found);
  CHECK(r.found());
  CHECK(r.user_key == "jdoe");
  CHECK(r.key_hash == hash_key("jdoe"));
  CHECK(r.source == Source::activesync_query);
  CHECK(r.device_id == "X");
  CHECK(r.device_type == "iPhone");
  CHECK(r.cmd == "Sync");
  CHECK(r.error.empty());
}

TEST_CASE("activesync plain query: names are case-insensitive, values percent-decoded") {
  CHECK(run(Request("/Microsoft-Server-ActiveSync?cmd=Ping&user=JDoe&deviceid=A1&devicetype=SP")).user_key == "jdoe");
  const auto r = run(Request("/Microsoft-Server-ActiveSync?USER=ACME%5Cjane+doe&DEVICEID=a%2Fb&Cmd=Sync"));
  CHECK(r.user_key == "jane doe");
  CHECK(r.device_id == "a/b");
  CHECK(run(Request("/Microsoft-Server-ActiveSync?User=jane%40acme.com&Cmd=Sync")).user_key == "jane");
  CHECK(run(Request("/Microsoft-Server-ActiveSync?%55ser=encoded-name&Cmd=Sync")).user_key == "encoded-name");
  CHECK(run(Request("/Microsoft-Server-ActiveSync?User=a&User=b")).user_key == "a");  // first wins
  CHECK(run(Request("/Microsoft-Server-ActiveSync?User=a#frag")).user_key == "a");
  CHECK(run(Request("/Microsoft-Server-ActiveSync?&&User=a&&")).user_key == "a");
}

TEST_CASE("activesync plain query: the ActiveSync paths") {
  for (const char* path : {"/Microsoft-Server-ActiveSync", "/microsoft-server-activesync",
                           "/Microsoft-Server-ActiveSync/", "/traveler/Microsoft-Server-ActiveSync",
                           "/servlet/traveler/Microsoft-Server-ActiveSync",
                           "/Servlet/Traveler/Microsoft-Server-ActiveSync/",
                           "https://mail.acme.com/Microsoft-Server-ActiveSync",
                           "http://mail.acme.com:8080/traveler/Microsoft-Server-ActiveSync"}) {
    CAPTURE(path);
    const auto r = run(Request(std::string(path) + "?Cmd=Sync&User=jdoe&DeviceId=D&DeviceType=T"));
    CHECK(r.source == Source::activesync_query);
    CHECK(r.user_key == "jdoe");
  }
  for (const char* path : {"/Microsoft-Server-ActiveSyncX", "/x/Microsoft-Server-ActiveSync",
                           "/Microsoft-Server-ActiveSync/x", "/", "", "http://host", "https://host?User=x"}) {
    CAPTURE(path);
    const auto r = run(Request(std::string(path) + "?Cmd=Sync&User=jdoe"));
    CHECK(r.status == Status::none);
    CHECK(r.device_id.empty());
  }
}

TEST_CASE("activesync plain query: no user falls back to Basic auth, keeping device data") {
  const Request request("/Microsoft-Server-ActiveSync?Cmd=FolderSync&DeviceId=D1&DeviceType=Android",
                        {basic("ACME\\JDoe:s3cret")});
  const auto r = run(request);
  CHECK(r.status == Status::found);
  CHECK(r.source == Source::basic_auth);
  CHECK(r.user_key == "jdoe");
  CHECK(r.device_id == "D1");
  CHECK(r.device_type == "Android");
  CHECK(r.cmd == "FolderSync");

  // An empty User= is no user, not a malformed one.
  const auto empty = run(Request("/Microsoft-Server-ActiveSync?Cmd=Sync&User=&DeviceId=D", {basic("bob:x")}));
  CHECK(empty.source == Source::basic_auth);
  CHECK(empty.user_key == "bob");
  CHECK(run(Request("/Microsoft-Server-ActiveSync?Cmd=Sync&User=+++")).status == Status::none);
  CHECK(run(Request("/Microsoft-Server-ActiveSync?User")).status == Status::none);
}

TEST_CASE("activesync base64: the published MS-ASHTTP example (no User parameter)") {
  const auto r = run(Request("/Microsoft-Server-ActiveSync?" + std::string(kSpecExample)));
  CHECK(r.status == Status::none);
  CHECK(r.error.empty());
  CHECK(r.device_id == "v140Device");
  CHECK(r.device_type == "SmartPhone");
  CHECK(r.cmd == "Sync");

  const auto with_basic = run(Request("/Microsoft-Server-ActiveSync?" + std::string(kSpecExample),
                                      {basic("DeviceUser:pw")}));
  CHECK(with_basic.status == Status::found);
  CHECK(with_basic.source == Source::basic_auth);
  CHECK(with_basic.user_key == "deviceuser");
  CHECK(with_basic.device_id == "v140Device");
  CHECK(with_basic.cmd == "Sync");
}

TEST_CASE("activesync base64: with User, policy key and other parameters") {
  AsQuery q;
  q.command = 18;
  q.policy_key = std::string("\x01\x02\x03\x04", 4);
  q.params = {{1, "abc"}, {7, "\x01"}, {8, "ACME\\JDoe"}, {3, "item"}};
  const std::string encoded = base64(q.bytes());
  CHECK(encoded.find('=') != std::string::npos);  // the vector exercises padding
  // The query's User against another Basic login: the query only wins without
  // authenticated_wins (the default is tested below).
  ExtractorConfig query_first;
  query_first.authenticated_wins = false;
  const Extractor by_query(query_first);
  for (const std::string& query : {encoded, base64(q.bytes(), false), percent_encode_base64(encoded)}) {
    CAPTURE(query);
    for (const char* path : {"/Microsoft-Server-ActiveSync", "/traveler/Microsoft-Server-ActiveSync",
                             "/servlet/traveler/Microsoft-Server-ActiveSync"}) {
      const auto r = run(by_query, Request(std::string(path) + "?" + query, {basic("other:pw")}));
      CHECK(r.status == Status::found);
      CHECK(r.source == Source::activesync_base64);
      CHECK(r.user_key == "jdoe");
      CHECK(r.device_id == "dev1");
      CHECK(r.device_type == "iPhone");
      CHECK(r.cmd == "Ping");
    }
  }
  // The first User parameter wins.
  q.params = {{8, "first"}, {8, "second"}};
  CHECK(run(Request("/Microsoft-Server-ActiveSync?" + base64(q.bytes()))).user_key == "first");
  // An empty User parameter is no user.
  q.params = {{8, ""}};
  CHECK(run(Request("/Microsoft-Server-ActiveSync?" + base64(q.bytes()))).status == Status::none);
  // Unknown tags are skipped.
  q.params = {{2, "x"}, {200, ""}, {8, "u"}};
  CHECK(run(Request("/Microsoft-Server-ActiveSync?" + base64(q.bytes()))).user_key == "u");
}

TEST_CASE("activesync base64: command codes map to MS-ASHTTP command names") {
  const std::vector<std::pair<unsigned, std::string_view>> codes = {
      {0, "Sync"},          {1, "SendMail"},          {2, "SmartForward"},   {3, "SmartReply"},
      {4, "GetAttachment"}, {9, "FolderSync"},        {10, "FolderCreate"},  {11, "FolderDelete"},
      {12, "FolderUpdate"}, {13, "MoveItems"},        {14, "GetItemEstimate"}, {15, "MeetingResponse"},
      {16, "Search"},       {17, "Settings"},         {18, "Ping"},          {19, "ItemOperations"},
      {20, "Provision"},    {21, "ResolveRecipients"}, {22, "ValidateCert"},
  };
  for (unsigned code = 0; code < 256; ++code) {
    AsQuery q;
    q.command = code;
    const auto r = run(Request("/Microsoft-Server-ActiveSync?" + base64(q.bytes())));
    std::string_view expected;
    for (const auto& [c, name] : codes) {
      if (c == code) expected = name;
    }
    CAPTURE(code);
    CHECK(r.status == Status::none);
    CHECK(r.cmd == expected);
  }
}

TEST_CASE("activesync base64: a binary GUID device id is reported in hex") {
  AsQuery q;
  q.device_id = std::string("\x00\x01\xAB\xFF", 4);
  const auto r = run(Request("/Microsoft-Server-ActiveSync?" + base64(q.bytes())));
  CHECK(r.status == Status::none);
  CHECK(r.device_id == "0001abff");
}

TEST_CASE("activesync base64: every truncation is malformed, parameter boundaries are not") {
  AsQuery q;
  q.policy_key = "KKKK";
  q.params = {{1, "col"}, {8, "jdoe"}};
  const std::string full = q.bytes();
  const std::size_t header = 4 + 1 + q.device_id.size() + 1 + 4 + 1 + q.device_type.size();
  const std::size_t first_param_end = header + 2 + 3;
  ExtractorConfig config = only(Source::activesync_base64);
  config.reject_malformed = true;
  const Extractor extractor(config);
  for (std::size_t len = 1; len <= full.size(); ++len) {
    CAPTURE(len);
    const auto r = run(extractor, Request("/Microsoft-Server-ActiveSync?" + base64(full.substr(0, len))));
    if (len == full.size()) {
      CHECK(r.status == Status::found);
      CHECK(r.user_key == "jdoe");
    } else if (len == header || len == first_param_end) {
      CHECK(r.status == Status::none);
    } else {
      CHECK(r.status == Status::malformed);
      CHECK(r.source == Source::activesync_base64);
      CHECK_FALSE(r.error.empty());
    }
  }
}

TEST_CASE("activesync base64: bad lengths and bad base64 are malformed") {
  ExtractorConfig config = only(Source::activesync_base64);
  config.reject_malformed = true;
  const Extractor extractor(config);
  const auto check_malformed = [&](const std::string& query) {
    CAPTURE(query);
    const auto r = run(extractor, Request("/Microsoft-Server-ActiveSync?" + query));
    CHECK(r.status == Status::malformed);
    CHECK_FALSE(r.error.empty());
  };
  for (std::size_t key_length : {1u, 2u, 3u, 5u, 255u}) {
    AsQuery q;
    q.policy_key = std::string(key_length, 'k');
    check_malformed(base64(q.bytes()));
  }
  {
    AsQuery q;  // device id length 255 with only 4 bytes behind it
    std::string b = q.bytes();
    b[4] = char(255);
    check_malformed(base64(b));
  }
  {
    AsQuery q;
    q.device_id = "";
    check_malformed(base64(q.bytes()));
  }
  {
    AsQuery q;
    q.device_type = "";
    check_malformed(base64(q.bytes()));
  }
  {
    AsQuery q;  // parameter length runs past the end
    q.params = {{8, "jdoe"}};
    std::string b = q.bytes();
    b[b.size() - 5] = char(200);
    check_malformed(base64(b));
  }
  {
    AsQuery q;  // dangling tag without a length
    q.params = {{8, "jdoe"}};
    check_malformed(base64(q.bytes() + "\x01"));
  }
  check_malformed("!!!!");
  check_malformed("abcde");         // 5 characters: not base64
  check_malformed("abc===");        // 3 padding characters
  check_malformed("ab%3");          // broken escape
  check_malformed("ab-_");          // URL-safe alphabet is not the standard one
  check_malformed("QQ");            // decodes to 1 byte: truncated
  check_malformed(std::string(kSpecExample) + "%00");
  // Not base64 at all but a plain query: not this step's business.
  CHECK(run(extractor, Request("/Microsoft-Server-ActiveSync?Cmd=Sync")).status == Status::none);
  CHECK(run(extractor, Request("/Microsoft-Server-ActiveSync")).status == Status::none);
  CHECK(run(extractor, Request("/Microsoft-Server-ActiveSync?")).status == Status::none);
  CHECK(run(extractor, Request("/other?" + std::string(kSpecExample))).status == Status::none);
}

TEST_CASE("malformed source: reject_malformed decides between 400 and skipping") {
  const Request request("/Microsoft-Server-ActiveSync?!!!!", {basic("jdoe:pw")});

  const auto skipped = run(request);  // default: reject_malformed = false
  CHECK(skipped.status == Status::found);
  CHECK(skipped.source == Source::basic_auth);
  CHECK(skipped.user_key == "jdoe");
  CHECK(skipped.error == "bad base64 query");

  ExtractorConfig config;
  config.reject_malformed = true;
  const auto rejected = run(Extractor(config), request);
  CHECK(rejected.status == Status::malformed);
  CHECK(rejected.source == Source::activesync_base64);
  CHECK(rejected.error == "bad base64 query");
  CHECK(rejected.user_key.empty());

  const auto alone = run(Request("/Microsoft-Server-ActiveSync?!!!!"));
  CHECK(alone.status == Status::none);
  CHECK(alone.error == "bad base64 query");
}

TEST_CASE("basic auth: user only, password never kept") {
  const auto r = run(Request("/", {basic("ACME\\JDoe:very-secret-password")}));
  CHECK(r.status == Status::found);
  CHECK(r.source == Source::basic_auth);
  CHECK(r.user_key == "jdoe");
  for (const std::string* field : {&r.user_key, &r.device_id, &r.device_type, &r.cmd}) {
    CHECK(field->find("secret") == std::string::npos);
  }
  CHECK(r.error.find("secret") == std::string_view::npos);

  CHECK(run(Request("/", {{"authorization", "basic " + base64("jdoe:pw")}})).user_key == "jdoe");
  CHECK(run(Request("/", {{"Authorization", "  BASIC \t " + base64("jdoe:pw") + "  "}})).user_key == "jdoe");
  CHECK(run(Request("/", {basic("jdoe:p:w:d")})).user_key == "jdoe");
  CHECK(run(Request("/", {basic("jdoe:")})).user_key == "jdoe");
  CHECK(run(Request("/", {{"Authorization", "Basic " + base64("jdoe:pw", false)}})).user_key == "jdoe");
  CHECK(run(Request("/", {basic("jane@acme.com:pw")})).user_key == "jane");
  CHECK(run(Request("/", {basic("J\xC3\x9CRGEN:pw")})).user_key == "j\xC3\x9Crgen");
  // Only the first Authorization header counts.
  CHECK(run(Request("/", {basic("first:pw"), basic("second:pw")})).user_key == "first");
}

TEST_CASE("basic auth: other schemes and broken credentials") {
  for (const char* value : {"Bearer abc", "NTLM TlRMTVNTUAAB", "Negotiate YII=", "Basicx YQ==", "Digest a=b"}) {
    CAPTURE(value);
    const auto r = run(Request("/", {{"Authorization", value}}));
    CHECK(r.status == Status::none);
    CHECK(r.error.empty());
  }
  CHECK(run(Request("/", {basic(":pw")})).status == Status::none);  // empty user: absent

  ExtractorConfig config = only(Source::basic_auth);
  config.reject_malformed = true;
  const Extractor strict(config);
  const auto malformed = [&](const std::string& value) {
    CAPTURE(value);
    const auto r = run(strict, Request("/", {{"Authorization", value}}));
    CHECK(r.status == Status::malformed);
    CHECK(r.source == Source::basic_auth);
    return std::string(r.error);
  };
  CHECK(malformed("Basic") == "empty Basic credentials");
  CHECK(malformed("Basic   ") == "empty Basic credentials");
  CHECK(malformed("Basic " + base64("no-colon")) == "Basic credentials without ':'");
  CHECK(malformed("Basic !!!!") == "bad base64 in Basic credentials");
  CHECK(malformed("Basic YWJj ZA==") == "bad base64 in Basic credentials");
  CHECK(malformed("Basic " + base64(std::string(257, 'a') + ":pw")) == "user too long");
  CHECK(malformed("Basic " + base64(std::string("a\x01:pw"))) == "control character in user");
  CHECK(malformed("Basic " + base64(std::string("a\xFF:pw"))) == "invalid UTF-8 in user");
  CHECK(run(strict, Request("/", {basic(std::string(256, 'a') + ":pw")})).status == Status::found);
}

TEST_CASE("traveler urls: user query parameter under /traveler and /servlet/traveler") {
  CHECK(run(Request("/traveler?action=getStatus")).status == Status::none);
  CHECK(run(Request("/traveler")).status == Status::none);
  for (const char* target : {"/traveler?user=JDoe", "/servlet/traveler?User=JDoe&x=1",
                             "/traveler/sync?a=b&USER=JDoe", "/Servlet/Traveler/x?user=ACME%5CJDoe",
                             "/traveler/?user=jdoe"}) {
    CAPTURE(target);
    const auto r = run(Request(target));
    CHECK(r.status == Status::found);
    CHECK(r.source == Source::traveler_url);
    CHECK(r.user_key == "jdoe");
  }
  for (const char* target : {"/travelerx?user=a", "/x/traveler?user=a", "/servlet/travelers?user=a"}) {
    CAPTURE(target);
    CHECK(run(Request(target)).status == Status::none);
  }
  // Basic auth comes first in the default order.
  const auto both = run(Request("/servlet/traveler?user=url-user", {basic("auth-user:pw")}));
  CHECK(both.source == Source::basic_auth);
  CHECK(both.user_key == "auth-user");
}

TEST_CASE("configured header, cookie and query extractors") {
  const Extractor by_header(only(Source::header, "X-Remote-User"));
  CHECK(run(by_header, Request("/", {{"x-remote-user", "  ACME\\JDoe "}})).user_key == "jdoe");
  CHECK(run(by_header, Request("/", {{"x-remote-user", "   "}})).status == Status::none);
  CHECK(run(by_header, Request("/", {{"X-Other", "jdoe"}})).status == Status::none);
  CHECK(run(by_header, Request("/", {{"X-Remote-User", "jdoe"}})).source == Source::header);

  const Extractor by_cookie(only(Source::cookie, "TravelerUser"));
  const auto cookie = run(by_cookie, Request("/", {{"Cookie", "a=b; TravelerUser=\"jdoe%40acme.com\"; c=d"}}));
  CHECK(cookie.status == Status::found);
  CHECK(cookie.source == Source::cookie);
  CHECK(cookie.user_key == "jdoe");
  CHECK(run(by_cookie, Request("/", {{"Cookie", "a=b"}, {"cookie", "TravelerUser=x+y"}})).user_key == "x+y");
  CHECK(run(by_cookie, Request("/", {{"Cookie", "traveleruser=x"}})).status == Status::none);  // exact name
  CHECK(run(by_cookie, Request("/", {{"Cookie", "TravelerUserX=x; TravelerUser"}})).status == Status::none);
  CHECK(run(by_cookie, Request("/", {{"Cookie", ";;; TravelerUser = jdoe ;"}})).user_key == "jdoe");

  const Extractor by_query(only(Source::query, "uid"));
  const auto query = run(by_query, Request("/any/path?x=1&UID=J+Doe"));
  CHECK(query.source == Source::query);
  CHECK(query.user_key == "j doe");
  CHECK(run(by_query, Request("/any/path?uidx=1")).status == Status::none);

  // An empty name never matches.
  CHECK(run(Extractor(only(Source::header, "")), Request("/", {{"", "x"}})).status == Status::none);
  CHECK(run(Extractor(only(Source::cookie, "")), Request("/", {{"Cookie", "=x"}})).status == Status::none);
  CHECK(run(Extractor(only(Source::query, "")), Request("/?=x")).status == Status::none);
}

TEST_CASE("custom order: the first step that finds a user wins") {
  ExtractorConfig config;
  config.order = {{Source::header, "X-User"}, {Source::basic_auth, {}}, {Source::none, {}}};
  const Extractor extractor(config);
  CHECK(run(extractor, Request("/", {{"X-User", "h"}, basic("b:pw")})).user_key == "h");
  CHECK(run(extractor, Request("/", {basic("b:pw")})).user_key == "b");
  config.order.clear();
  CHECK(run(Extractor(config), Request("/", {basic("b:pw")})).status == Status::none);
}

TEST_CASE("authenticated login: a Basic login beats the user in the request target") {
  // The device: the query says jane.doe@acme.example, the login is jdoe. Without the
  // rule the same device is jane.doe with a query and jdoe without one.
  const Request plain("/Microsoft-Server-ActiveSync?Cmd=Sync&User=jane.doe%40acme.example&DeviceId=D1&DeviceType=iPhone",
                      {basic("jdoe:pw")});
  const auto r = run(plain);
  CHECK(r.status == Status::found);
  CHECK(r.user_key == "jdoe");
  CHECK(r.key_hash == hash_key("jdoe"));
  CHECK(r.source == Source::basic_auth);
  CHECK(r.disagreement);
  CHECK(r.device_id == "D1");  // device fields still come from the query
  CHECK(r.cmd == "Sync");
  const auto bare = run(Request("/Microsoft-Server-ActiveSync", {basic("jdoe:pw")}));
  CHECK(bare.user_key == r.user_key);
  CHECK_FALSE(bare.disagreement);

  // Base64 query and Traveler URL the same way.
  AsQuery q;
  q.params = {{8, "jane.doe"}};
  const auto b64 = run(Request("/Microsoft-Server-ActiveSync?" + base64(q.bytes()), {basic("ACME\\JDoe:pw")}));
  CHECK(b64.user_key == "jdoe");
  CHECK(b64.source == Source::basic_auth);
  CHECK(b64.disagreement);
  CHECK(b64.device_id == "dev1");
  ExtractorConfig by_param;
  by_param.order = {{Source::query, "uid"}, {Source::basic_auth, {}}};
  const auto param = run(Extractor(by_param), Request("/x?uid=someone", {basic("jdoe:pw")}));
  CHECK(param.user_key == "jdoe");
  CHECK(param.disagreement);
}

TEST_CASE("authenticated login: agreement, broken logins and the switch") {
  // Different spellings of one key are no disagreement, and the first step stays the source.
  const auto same = run(Request("/Microsoft-Server-ActiveSync?Cmd=Sync&User=JDoe%40acme.example",
                                {basic("ACME\\jdoe:pw")}));
  CHECK(same.user_key == "jdoe");
  CHECK(same.source == Source::activesync_query);
  CHECK_FALSE(same.disagreement);

  // A login that is absent, broken or unusable leaves the query's user.
  for (const std::string& value : {std::string("Basic !!!!"), "Basic " + base64("no-colon"),
                                   "Basic " + base64(":pw"), "Basic " + base64("@acme.example:pw"),
                                   "Basic " + base64(std::string("a\x01:pw")), std::string("Bearer x")}) {
    CAPTURE(value);
    const auto r = run(Request("/Microsoft-Server-ActiveSync?Cmd=Sync&User=jane", {{"Authorization", value}}));
    CHECK(r.status == Status::found);
    CHECK(r.user_key == "jane");
    CHECK(r.source == Source::activesync_query);
    CHECK_FALSE(r.disagreement);
  }
  ExtractorConfig strict;
  strict.reject_malformed = true;
  CHECK(run(Extractor(strict), Request("/Microsoft-Server-ActiveSync?User=jane", {{"Authorization", "Basic !!!!"}}))
            .user_key == "jane");

  // Off: the first step wins, as it did before.
  ExtractorConfig off;
  off.authenticated_wins = false;
  const auto first = run(Extractor(off), Request("/Microsoft-Server-ActiveSync?User=jane", {basic("jdoe:pw")}));
  CHECK(first.user_key == "jane");
  CHECK(first.source == Source::activesync_query);
  CHECK_FALSE(first.disagreement);

  // Only a basic_auth step later in the order can win; a header step is not overridden.
  ExtractorConfig no_basic;
  no_basic.order = {{Source::activesync_query, {}}};
  CHECK(run(Extractor(no_basic), Request("/Microsoft-Server-ActiveSync?User=jane", {basic("jdoe:pw")})).user_key ==
        "jane");
  ExtractorConfig header_first;
  header_first.order = {{Source::header, "X-User"}, {Source::basic_auth, {}}};
  const auto header = run(Extractor(header_first), Request("/", {{"X-User", "h"}, basic("b:pw")}));
  CHECK(header.user_key == "h");
  CHECK_FALSE(header.disagreement);
}

TEST_CASE("user validation: UTF-8, control characters, length, empty key") {
  ExtractorConfig config;
  config.reject_malformed = true;
  const Extractor strict(config);
  const auto status_of = [&](const std::string& user) {
    return run(strict, Request("/Microsoft-Server-ActiveSync?Cmd=Sync&User=" + user)).status;
  };
  CHECK(status_of("j%C3%BCrgen") == Status::found);
  CHECK(status_of("%F0%9F%98%80") == Status::found);   // 4-byte sequence
  CHECK(status_of("%E2%82%AC") == Status::found);      // euro sign
  CHECK(status_of("%FF") == Status::malformed);
  CHECK(status_of("%C3") == Status::malformed);        // truncated sequence
  CHECK(status_of("%C0%AF") == Status::malformed);     // overlong
  CHECK(status_of("%E0%80%AF") == Status::malformed);  // overlong
  CHECK(status_of("%ED%A0%80") == Status::malformed);  // surrogate
  CHECK(status_of("%F4%90%80%80") == Status::malformed);  // above U+10FFFF
  CHECK(status_of("%80") == Status::malformed);        // lone continuation
  CHECK(status_of("a%00b") == Status::malformed);
  CHECK(status_of("a%09b") == Status::malformed);      // tab
  CHECK(status_of("a%7F") == Status::malformed);       // DEL
  CHECK(status_of("a%C2%85") == Status::malformed);    // C1 (NEL)
  CHECK(status_of("a%C2%A0") == Status::found);        // NBSP is printable
  CHECK(status_of("%G1") == Status::malformed);
  CHECK(status_of("abc%4") == Status::malformed);
  CHECK(status_of("%40acme.com") == Status::malformed);  // normalises to empty
  CHECK(status_of(std::string(256, 'a')) == Status::found);
  CHECK(status_of(std::string(257, 'a')) == Status::malformed);
  CHECK(status_of(std::string(256, 'a') + "%41") == Status::malformed);

  config.max_user_length = 4;
  const Extractor short_users(config);
  CHECK(run(short_users, Request("/traveler?user=abcd")).status == Status::found);
  CHECK(run(short_users, Request("/traveler?user=abcde")).status == Status::malformed);
  CHECK(run(short_users, Request("/", {basic("abcde:pw")})).error == "user too long");
}

TEST_CASE("normalisation settings are applied to the extracted user") {
  ExtractorConfig config;
  config.normalise.lower_case = false;
  config.normalise.map = {{"JDoe", "john.doe"}};
  const Extractor extractor(config);
  const auto r = run(extractor, Request("/Microsoft-Server-ActiveSync?User=ACME%5CJDoe"));
  CHECK(r.user_key == "john.doe");
  CHECK(r.key_hash == hash_key("john.doe"));
}

TEST_CASE("requests without a user") {
  for (const char* target : {"/", "", "/favicon.ico", "/traveler?action=getStatus", "?", "?&&&",
                             "/Microsoft-Server-ActiveSync?Cmd=Options"}) {
    CAPTURE(target);
    const auto r = run(Request(target));
    CHECK(r.status == Status::none);
    CHECK(r.source == Source::none);
    CHECK(r.user_key.empty());
    CHECK(r.error.empty());
  }
}

// CPU time of this thread (not the wall clock: another process's load does not count), the
// least of five runs.
template <typename F>
double thread_cpu_seconds(F&& work) {
  double best = 1e9;
  for (int run = 0; run < 5; ++run) {
    timespec t0{}, t1{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
    work();
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t1);
    best = std::min(best, double(t1.tv_sec - t0.tv_sec) + double(t1.tv_nsec - t0.tv_nsec) * 1e-9);
  }
  return best;
}

// Growth, not speed: the same input shape at n and 8n parts. Linear work grows about 8
// times, quadratic 64; the bound (24) leaves room for caches and allocation, and does not
// depend on how fast or busy the machine is. Both sizes stay well under a megabyte, so
// neither pays for page faults the other does not.
template <typename Make, typename Check>
void check_linear(const char* what, Make make, Check check) {
  constexpr int kSmall = 4000;
  const auto small = make(kSmall);
  const auto large = make(kSmall * 8);
  check(small);
  check(large);
  const double t_small = std::max(thread_cpu_seconds([&] { check(small); }), 1e-6);
  const double t_large = thread_cpu_seconds([&] { check(large); });
  INFO(std::string(what) << ": " << t_small << " s at n, " << t_large << " s at 8n");
  CHECK(t_large / t_small < 24.0);
}

TEST_CASE("huge inputs are handled in linear time") {
  check_linear("many query parameters", [](int n) {
    std::string target = "/Microsoft-Server-ActiveSync?";
    for (int i = 0; i < n; ++i) target += "DeviceIdX=1&";
    return target + "User=jdoe";
  }, [](const std::string& target) { CHECK(run(Request(target)).user_key == "jdoe"); });

  check_linear("percent-encoded parameter names", [](int n) {
    std::string target = "/traveler?";
    for (int i = 0; i < n; ++i) target += "%75%73%65%72%78=1&";
    return target;
  }, [](const std::string& target) { CHECK(run(Request(target)).status == Status::none); });

  check_linear("many base64 query parameters", [](int n) {
    AsQuery q;
    for (int i = 0; i < n; ++i) q.params.push_back({1, std::string(20, 'c')});
    q.params.push_back({8, "jdoe"});
    return "/Microsoft-Server-ActiveSync?" + base64(q.bytes());
  }, [](const std::string& target) { CHECK(run(Request(target)).user_key == "jdoe"); });

  const Extractor by_cookie(only(Source::cookie, "user"));
  check_linear("many cookies", [](int n) {
    std::string cookie;
    for (int i = 0; i < n / 2; ++i) cookie += "c" + std::to_string(i) + "=v; ";
    return cookie + "user=jdoe";
  }, [&](const std::string& cookie) { CHECK(run(by_cookie, Request("/", {{"Cookie", cookie}})).user_key == "jdoe"); });

  // And at sizes far past any real request: still answered, and right.
  std::string many_params = "/Microsoft-Server-ActiveSync?";
  for (int i = 0; i < 200000; ++i) many_params += "DeviceIdX=1&";
  CHECK(run(Request(many_params + "User=jdoe")).user_key == "jdoe");
  AsQuery q;
  for (int i = 0; i < 20000; ++i) q.params.push_back({1, std::string(200, 'c')});
  q.params.push_back({8, "jdoe"});
  CHECK(run(Request("/Microsoft-Server-ActiveSync?" + base64(q.bytes()))).user_key == "jdoe");

  const std::string huge_user(4 << 20, 'a');
  CHECK(run(Request("/Microsoft-Server-ActiveSync?User=" + huge_user)).error == "user too long");
  CHECK(run(Request("/", {{"Authorization", "Basic " + base64(huge_user)}})).error == "user too long");
  CHECK(run(Request("/", {{"Authorization", "Basic " + base64(huge_user) + "!"}})).error ==
        "bad base64 in Basic credentials");
  CHECK(run(Request("/Microsoft-Server-ActiveSync?" + base64(huge_user))).error == "bad policy key length in base64 query");
}
