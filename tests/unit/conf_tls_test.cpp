// The listener tls section: defaults, every key, relative paths, and its errors.
#include <doctest/doctest.h>

#include "conf/config.h"

using namespace sprayer::conf;

namespace {

const char* base = R"(servers:
  - id: pool1
    address: 127.0.0.1:9001
admin:
  enabled: false
listeners:
  - name: https
    address: 127.0.0.1:8443
)";

LoadResult load(const std::string& listener_tail) {
  return load_string(std::string(base) + listener_tail, "/etc/sprayer/sprayer.yaml");
}

std::string errors_of(const LoadResult& r) {
  std::string out;
  for (const auto& e : r.errors) out += e.to_string() + "\n";
  return out;
}

}  // namespace

TEST_CASE("a listener without tls is plain") {
  auto r = load("");
  REQUIRE_MESSAGE(r.ok(), errors_of(r));
  CHECK_FALSE(r.config->listeners[0].tls.enabled);
}

TEST_CASE("a tls section enables TLS and resolves relative paths next to the config") {
  auto r = load(R"(    tls:
      certificates:
        - cert: certs/wild-rsa.pem
          key: /abs/wild-rsa.key
        - cert: certs/wild-ec.pem
          key: certs/wild-ec.key
      min_version: "1.3"
      alpn: [http/1.1]
      strict_sni: true
      check_host: true
      ticket_key_file: tickets.key
      session_cache_size: 1000
      session_timeout: 2h
      record_layer: openssl
)");
  REQUIRE_MESSAGE(r.ok(), errors_of(r));
  const TlsConfig& tls = r.config->listeners[0].tls;
  CHECK(tls.enabled);
  CHECK(tls.record_layer == "openssl");
  REQUIRE(tls.certificates.size() == 2);
  CHECK(tls.certificates[0].cert == "/etc/sprayer/certs/wild-rsa.pem");
  CHECK(tls.certificates[0].key == "/abs/wild-rsa.key");
  CHECK(tls.certificates[1].key == "/etc/sprayer/certs/wild-ec.key");
  CHECK(tls.min_version == "1.3");
  CHECK(tls.strict_sni);
  CHECK(tls.check_host);
  CHECK(tls.ticket_key_file == "/etc/sprayer/tickets.key");
  CHECK(tls.session_cache_size == 1000);
  CHECK(tls.session_timeout == std::chrono::hours(2));
}

TEST_CASE("tls errors name line and key") {
  auto r = load(R"(    tls:
      min_version: "1.1"
      record_layer: kernel
)");
  REQUIRE_FALSE(r.ok());
  std::string all = errors_of(r);
  CHECK(all.find("listeners[0].tls.record_layer") != std::string::npos);
  CHECK(all.find("listeners[0].tls.certificates: required key is missing") != std::string::npos);
  CHECK(all.find("/etc/sprayer/sprayer.yaml:10:") != std::string::npos);
  CHECK(all.find("listeners[0].tls.min_version") != std::string::npos);
}

TEST_CASE("redirect_to_https belongs to plain listeners") {
  auto ok = load("    redirect_to_https: true\n    https_port: 8443\n");
  REQUIRE_MESSAGE(ok.ok(), errors_of(ok));
  CHECK(ok.config->listeners[0].redirect_to_https);
  CHECK(ok.config->listeners[0].https_port == 8443);
  auto bad = load(R"(    redirect_to_https: true
    tls:
      certificates:
        - cert: a.pem
          key: a.key
)");
  CHECK_FALSE(bad.ok());
  CHECK(errors_of(bad).find("redirect_to_https is for a plain listener") != std::string::npos);
}

// ---- backend TLS: upstream.tls defaults, servers[].tls overrides ------------------------------

namespace {

LoadResult load_servers(const std::string& yaml) {
  return load_string("admin:\n  enabled: false\nlisteners:\n  - name: http\n    address: 127.0.0.1:8080\n" + yaml,
                     "/etc/sprayer/sprayer.yaml");
}

}  // namespace

TEST_CASE("backend tls: off by default, upstream.tls applies to every server, a server overrides key by key") {
  auto plain = load_servers("servers:\n  - id: pool1\n    address: 127.0.0.1:9001\n");
  REQUIRE_MESSAGE(plain.ok(), errors_of(plain));
  CHECK_FALSE(plain.config->servers[0].tls.enabled);

  // The servers come first in the file: the defaults still apply to them.
  auto r = load_servers(R"(servers:
  - id: pool1
    address: pool1.acme.test:443
  - id: pool2
    address: 10.0.0.2:443
    tls:
      sni: pool2.acme.test
      verify: false
  - id: pool3
    address: 10.0.0.3:80
    tls:
      enabled: false
upstream:
  tls:
    ca_file: certs/pool-ca.pem
    client_cert: certs/sprayer.pem
    client_key: /keys/sprayer.key
    min_version: "1.3"
)");
  REQUIRE_MESSAGE(r.ok(), errors_of(r));
  const auto& s = r.config->servers;
  CHECK(s[0].tls.enabled);
  CHECK(s[0].tls.verify);
  CHECK(s[0].tls.ca_file == "/etc/sprayer/certs/pool-ca.pem");
  CHECK(s[0].tls.client_cert == "/etc/sprayer/certs/sprayer.pem");
  CHECK(s[0].tls.client_key == "/keys/sprayer.key");
  CHECK(s[0].tls.min_version == "1.3");
  CHECK(s[0].tls.sni.empty());
  CHECK(s[1].tls.enabled);
  CHECK(s[1].tls.sni == "pool2.acme.test");
  CHECK_FALSE(s[1].tls.verify);
  CHECK(s[1].tls.ca_file == "/etc/sprayer/certs/pool-ca.pem");  // inherited
  CHECK_FALSE(s[2].tls.enabled);
}

TEST_CASE("backend tls: errors name the key and the line") {
  auto r = load_servers(R"(servers:
  - id: pool1
    address: 127.0.0.1:9001
    tls:
      client_cert: a.pem
      sni: "not a host"
      min_version: "1.0"
      verfy: false
)");
  REQUIRE_FALSE(r.ok());
  std::string all = errors_of(r);
  INFO(all);
  CHECK(all.find("servers[0].tls: client_cert and client_key must be given together") != std::string::npos);
  CHECK(all.find("servers[0].tls.sni: must be a host name") != std::string::npos);
  CHECK(all.find("sprayer.yaml:12:") != std::string::npos);  // min_version's line
  CHECK(all.find("servers[0].tls.verfy: unknown key; did you mean \"verify\"?") != std::string::npos);
}
