// Unit tests for the status page: the JSON twin's fields and escaping, and a page that
// names no external asset.
#include <doctest/doctest.h>

#include <string>

#include "proxy/control/status_page.h"

using namespace sprayer::proxy;

TEST_CASE("status: JSON document from the control state") {
  ControlState st;
  st.version = "0.1.0";
  st.uptime_seconds = 1.5;
  st.downstream_connections = 3;
  st.upstream_connections = 2;
  st.source_configured = true;
  st.source_state = "degraded";
  st.epoch = 77;
  st.users = 5;
  st.source_errors = 2;
  st.source_last_error = "connection \"refused\"";
  st.servers.push_back({"pool1", "up", 100, 4, 0, 1});
  st.servers.push_back({"pool\"2", "down", -1, 1, 3, 0});
  std::string json = status_json(st);
  CHECK(json.find("\"version\":\"0.1.0\"") != std::string::npos);
  CHECK(json.find("\"uptime_seconds\":1.500") != std::string::npos);
  CHECK(json.find("\"downstream_connections\":3,\"upstream_connections\":2") != std::string::npos);
  CHECK(json.find("\"ownership\":{\"configured\":true,\"state\":\"degraded\",\"epoch\":77,\"users\":5,"
                  "\"snapshot_age_seconds\":null") != std::string::npos);
  CHECK(json.find("\"last_error\":\"connection \\\"refused\\\"\"") != std::string::npos);
  CHECK(json.find("{\"id\":\"pool1\",\"state\":\"up\",\"availability\":100,\"owned_users\":4,\"ejections\":0,"
                  "\"active_requests\":1}") != std::string::npos);
  CHECK(json.find("\"id\":\"pool\\\"2\"") != std::string::npos);
  CHECK(json.back() == '\n');

  st.snapshot_age_seconds = 2.25;
  CHECK(status_json(st).find("\"snapshot_age_seconds\":2.250") != std::string::npos);
}

TEST_CASE("status: the page is self-contained") {
  std::string_view page = status_page_html();
  CHECK(page.substr(0, 15) == "<!DOCTYPE html>");
  for (std::string_view external : {"src=", "<link", "http://", "https://", "@import"})
    CHECK(page.find(external) == std::string_view::npos);
  CHECK(page.find("/api/v1/status") != std::string_view::npos);
  CHECK(page.find("/api/v1/servers/") != std::string_view::npos);
  // Server ids reach the page as text nodes, never as markup.
  CHECK(page.find("innerHTML") == std::string_view::npos);
}
