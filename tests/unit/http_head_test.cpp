// Header rewriting rules: hop-by-hop removal, X-Forwarded-*, Via, target checks.
#include <doctest/doctest.h>

#include <cstring>

#include "proxy/http/http_head.h"

using namespace sprayer::proxy;

namespace {

HttpHead make_head(std::initializer_list<std::pair<std::string_view, std::string_view>> fields) {
  HttpHead head;
  for (auto [name, value] : fields) {
    // Deliver each piece in two parts, as llhttp may.
    head.append_name(name.data(), name.size() / 2);
    head.append_name(name.data() + name.size() / 2, name.size() - name.size() / 2);
    head.append_value(value.data(), value.size());
  }
  return head;
}

std::string forward(const HttpHead& head, ForwardOptions o = {}) {
  if (o.method.empty()) o.method = "GET";
  if (o.target.empty()) o.target = "/";
  if (o.client_ip.empty()) o.client_ip = "192.0.2.7";
  std::string out;
  build_upstream_request(head, o, out);
  return out;
}

}  // namespace

TEST_CASE("pieces delivered in parts join into one field") {
  HttpHead head = make_head({{"Host", "pool.example"}, {"X-Long-Name", "v"}});
  REQUIRE(head.count() == 2);
  CHECK(head.name(1) == "X-Long-Name");
  CHECK(head.value(0) == "pool.example");
  CHECK(head.find("x-long-name") == 1);
  CHECK(head.find("absent") == HttpHead::npos);
}

TEST_CASE("values are trimmed of optional whitespace") {
  HttpHead head = make_head({{"A", "  x y \t"}});
  CHECK(head.value(0) == "x y");
}

TEST_CASE("has_token reads comma lists case-insensitively") {
  CHECK(has_token("keep-alive, Upgrade", "upgrade"));
  CHECK(has_token(" close ", "close"));
  CHECK_FALSE(has_token("closed", "close"));
  CHECK_FALSE(has_token("", "close"));
}

TEST_CASE("hop-by-hop headers and those named in Connection are dropped") {
  HttpHead head = make_head({{"Host", "h"},
                             {"Connection", "keep-alive, X-Secret"},
                             {"X-Secret", "1"},
                             {"Keep-Alive", "timeout=5"},
                             {"TE", "trailers"},
                             {"Proxy-Connection", "keep-alive"},
                             {"Upgrade", "websocket"},
                             {"Transfer-Encoding", "chunked"},
                             {"X-Kept", "yes"}});
  std::string out = forward(head);
  CHECK(out.find("X-Secret") == std::string::npos);
  CHECK(out.find("Keep-Alive") == std::string::npos);
  CHECK(out.find("TE:") == std::string::npos);
  CHECK(out.find("Proxy-Connection") == std::string::npos);
  CHECK(out.find("Upgrade") == std::string::npos);
  CHECK(out.find("Connection") == std::string::npos);
  CHECK(out.find("Transfer-Encoding: chunked\r\n") != std::string::npos);
  CHECK(out.find("X-Kept: yes\r\n") != std::string::npos);
  CHECK(out.rfind("\r\n\r\n") == out.size() - 4);
}

TEST_CASE("X-Forwarded-For is appended, Proto and Host are replaced") {
  HttpHead head = make_head({{"Host", "mail.example.com"},
                             {"X-Forwarded-For", "10.0.0.1"},
                             {"X-Forwarded-For", "10.0.0.2"},
                             {"X-Forwarded-Proto", "spoofed"},
                             {"X-Forwarded-Host", "spoofed"}});
  ForwardOptions o;
  o.proto = "https";
  std::string out = forward(head, o);
  CHECK(out.find("X-Forwarded-For: 10.0.0.1, 10.0.0.2, 192.0.2.7\r\n") != std::string::npos);
  CHECK(out.find("X-Forwarded-Proto: https\r\n") != std::string::npos);
  CHECK(out.find("X-Forwarded-Host: mail.example.com\r\n") != std::string::npos);
  CHECK(out.find("spoofed") == std::string::npos);
  CHECK(out.find("Host: mail.example.com\r\n") != std::string::npos);
}

TEST_CASE("Via is appended with the protocol version") {
  HttpHead head = make_head({{"Host", "h"}, {"Via", "1.1 edge"}});
  ForwardOptions o;
  o.via = "sprayer";
  CHECK(forward(head, o).find("Via: 1.1 edge, 1.1 sprayer\r\n") != std::string::npos);
  o.via = "";
  CHECK(forward(head, o).find("Via: 1.1 edge\r\n") != std::string::npos);
}

TEST_CASE("Host is replaced when not preserved") {
  HttpHead head = make_head({{"Host", "mail.example.com"}});
  ForwardOptions o;
  o.preserve_host = false;
  o.upstream_host = "10.1.1.1:8080";
  std::string out = forward(head, o);
  CHECK(out.find("Host: 10.1.1.1:8080\r\n") != std::string::npos);
  CHECK(out.find("\r\nHost: mail.example.com") == std::string::npos);
}

TEST_CASE("request line carries method, target and version") {
  HttpHead head = make_head({{"Host", "h"}});
  ForwardOptions o;
  o.method = "POST";
  o.target = "/Microsoft-Server-ActiveSync?Cmd=Ping";
  o.http_minor = 0;
  CHECK(forward(head, o).rfind("POST /Microsoft-Server-ActiveSync?Cmd=Ping HTTP/1.0\r\n", 0) == 0);
}

TEST_CASE("upgrade passes Upgrade and Connection: upgrade only when allowed") {
  HttpHead head = make_head({{"Host", "h"}, {"Connection", "Upgrade"}, {"Upgrade", "websocket"}});
  ForwardOptions o;
  o.upgrade = true;
  std::string out = forward(head, o);
  CHECK(out.find("Upgrade: websocket\r\n") != std::string::npos);
  CHECK(out.find("Connection: upgrade\r\n") != std::string::npos);
}

TEST_CASE("targets") {
  std::string_view origin;
  CHECK(check_target("/a?b", "h", "GET", origin) == TargetCheck::origin);
  CHECK(origin == "/a?b");
  CHECK(check_target("http://h/x?y", "h", "GET", origin) == TargetCheck::absolute_same_host);
  CHECK(origin == "/x?y");
  CHECK(check_target("HTTP://H", "h", "GET", origin) == TargetCheck::absolute_same_host);
  CHECK(origin == "/");
  CHECK(check_target("http://other/x", "h", "GET", origin) == TargetCheck::bad);
  CHECK(check_target("http://u@h/x", "h", "GET", origin) == TargetCheck::bad);
  CHECK(check_target("*", "h", "OPTIONS", origin) == TargetCheck::asterisk);
  CHECK(check_target("*", "h", "GET", origin) == TargetCheck::bad);
  CHECK(check_target("ftp://h/x", "h", "GET", origin) == TargetCheck::bad);
  CHECK(check_target("", "h", "GET", origin) == TargetCheck::bad);
}

TEST_CASE("response head: hop-by-hop dropped, Via added, close announced") {
  HttpHead head;
  head.append_start("OK", 2);
  for (auto [n, v] : {std::pair{"Content-Length", "5"}, std::pair{"Connection", "keep-alive"},
                      std::pair{"Keep-Alive", "timeout=5"}, std::pair{"X-Served-By", "pool1"}}) {
    head.append_name(n, std::strlen(n));
    head.append_value(v, std::strlen(v));
  }
  ResponseOptions o;
  o.status = 200;
  o.reason = head.start();
  o.via = "sprayer";
  o.close = true;
  std::string out;
  build_downstream_response(head, o, out);
  CHECK(out.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
  CHECK(out.find("Content-Length: 5\r\n") != std::string::npos);
  CHECK(out.find("Keep-Alive") == std::string::npos);
  CHECK(out.find("X-Served-By: pool1\r\n") != std::string::npos);
  CHECK(out.find("Via: 1.1 sprayer\r\n") != std::string::npos);
  CHECK(out.find("Connection: close\r\n") != std::string::npos);
}

TEST_CASE("error responses are complete and say close when asked") {
  std::string out;
  build_error_response(431, true, out);
  CHECK(out.rfind("HTTP/1.1 431 Request Header Fields Too Large\r\n", 0) == 0);
  CHECK(out.find("Connection: close\r\n") != std::string::npos);
  size_t body = out.find("\r\n\r\n") + 4;
  CHECK(out.substr(body) == "Request Header Fields Too Large\n");
  CHECK(out.find("Content-Length: 32\r\n") != std::string::npos);
}

TEST_CASE("headers named in any of many Connection fields are dropped") {
  HttpHead head = make_head({{"Host", "h"},
                             {"Connection", "X-A"},
                             {"Connection", "X-B"},
                             {"Connection", "X-C"},
                             {"Connection", "X-D"},
                             {"Connection", "X-E"},
                             {"X-A", "1"}, {"X-C", "1"}, {"X-E", "1"}, {"X-F", "kept"}});
  std::string out = forward(head);
  CHECK(out.find("X-A") == std::string::npos);
  CHECK(out.find("X-C") == std::string::npos);
  CHECK(out.find("X-E") == std::string::npos);
  CHECK(out.find("X-F: kept\r\n") != std::string::npos);
}

TEST_CASE("Connection never removes Host or the framing fields") {
  HttpHead head = make_head({{"Host", "pool.example"},
                             {"Connection", "close, Host, Content-Length, Transfer-Encoding"},
                             {"Content-Length", "5"}});
  std::string out = forward(head);
  CHECK(out.find("\r\nHost: pool.example\r\n") != std::string::npos);
  CHECK(out.find("\r\nContent-Length: 5\r\n") != std::string::npos);
  CHECK(out.find("X-Forwarded-Host: pool.example\r\n") != std::string::npos);
}

TEST_CASE("the HTTPS redirect keeps the name and the target and replaces the port") {
  std::string out;
  build_https_redirect("mail.example:8080", 8443, "/traveler?x=1", false, out);
  CHECK(out.rfind("HTTP/1.1 308 Permanent Redirect\r\nLocation: https://mail.example:8443/traveler?x=1\r\n", 0) == 0);
  CHECK(out.find("Connection: close") == std::string::npos);
  out.clear();
  build_https_redirect("[::1]", 443, "/", true, out);
  CHECK(out.find("Location: https://[::1]/\r\n") != std::string::npos);
  CHECK(out.find("\r\nConnection: close\r\n\r\nUse HTTPS.\n") != std::string::npos);
}
