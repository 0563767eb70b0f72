// Unit tests of conf::dump_yaml (`sprayer -T`): what it prints loads back to an equal Config,
// for every ownership source and change detection mode.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "conf/config.h"
#include "conf/config_dump.h"

namespace conf = sprayer::conf;

namespace {

constexpr std::string_view base =
    "listeners:\n"
    "  - name: http\n"
    "    address: 127.0.0.1:8080\n"
    "servers:\n"
    "  - id: pool1\n"
    "    address: 127.0.0.1:9001\n";

// The first line names the file it was read from.
std::string body(const std::string& dumped) { return dumped.substr(dumped.find('\n') + 1); }

// A password file the loader can open (it reads the file at load).
std::string password_file() {
  const auto path = std::filesystem::temp_directory_path() / "sprayer-conf-dump-test.pw";
  std::ofstream(path) << "secret\n";
  return path.string();
}

void check_round_trip(const std::string& extra) {
  auto first = conf::load_string(std::string(base) + extra, "first.yaml");
  REQUIRE_MESSAGE(first.config, (first.errors.empty() ? std::string() : first.errors.front().to_string()));
  const std::string dumped = conf::dump_yaml(*first.config);
  auto second = conf::load_string(dumped, "dumped.yaml");
  REQUIRE_MESSAGE(second.config, (second.errors.empty() ? dumped : second.errors.front().to_string() + "\n" + dumped));
  CHECK(second.config->ownership == first.config->ownership);
  CHECK(body(conf::dump_yaml(*second.config)) == body(dumped));
}

}  // namespace

TEST_CASE("-T reads back equal for every ownership source") {
  SUBCASE("none") { check_round_trip(""); }
  SUBCASE("sqlite") { check_round_trip("ownership:\n  source: sqlite\n  sqlite_path: /var/lib/sprayer/owners.db\n"); }
  SUBCASE("postgresql, full_scan") {
    check_round_trip("ownership:\n  source: postgresql\n  postgresql: host=db dbname=traveler\n"
                     "  change_detection: full_scan\n");
  }
  SUBCASE("mariadb, watermark, heartbeat") {
    check_round_trip("ownership:\n  source: mariadb\n  mariadb:\n    host: db.example\n    port: 3307\n"
                     "    user: sprayer\n    database: traveler\n    password_file: " + password_file() + "\n"
                     "    tls: true\n"
                     "  change_detection: watermark\n  watermark_overlap: 5s\n  heartbeat_max_age: 2m\n");
  }
  SUBCASE("odbc") {
    check_round_trip("ownership:\n  source: odbc\n  odbc:\n    connection: DSN=traveler\n"
                     "    password_file: " + password_file() + "\n  change_detection: full_scan\n");
  }
}
