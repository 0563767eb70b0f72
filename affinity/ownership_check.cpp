// The query check: the source's own row parsing over one blocking connection.
#include "affinity/ownership_check.h"

#include <memory>

#include "affinity/ownership_changes.h"
#include "affinity/ownership_sql.h"

namespace sprayer::affinity {

std::vector<QueryCheck> check_queries(const OwnershipSourceConfig& config) {
  std::vector<QueryCheck> out;
  std::unique_ptr<SqlClient> client;
  if (config.kind == SourceKind::mariadb) {
    client = make_mariadb_client(config.mariadb, config.connect_timeout, config.query_timeout);
  } else if (config.kind == SourceKind::odbc) {
    client = make_odbc_client(config.odbc, config.connect_timeout, config.query_timeout);
  } else {
    out.push_back({"connection", false, 0, "--check-queries supports the mariadb and odbc sources"});
    return out;
  }
  QueryCheck connection{"connection", true, 0, ""};
  if (!client->connect(connection.problem)) {
    connection.ok = false;
    out.push_back(std::move(connection));
    return out;
  }
  const ChangeDetection mode = config.change_detection;
  const auto owners = [&](const char* key, const std::string& sql, const DeltaParameter* parameter) {
    QueryCheck check{key, true, 0, ""};
    OwnershipRowBlock rows;
    std::string bad;
    check.ok = client->query(sql, parameter, [&](SqlRow row) {
      ++check.rows;
      if (bad.empty() && !add_owner_row(mode, row, key, rows, bad)) bad += " (row " + std::to_string(check.rows) + ")";
      if (bad.empty() && (!row[0] || row[0]->empty())) bad = "row " + std::to_string(check.rows) + ": the user key is NULL or empty";
      return true;
    }, check.problem);
    if (check.ok && !bad.empty()) check.ok = false, check.problem = bad;
    if (!client->connected()) client->connect(check.problem);
    out.push_back(std::move(check));
  };
  owners("query_full", config.queries.full, nullptr);
  if (mode != ChangeDetection::full_scan && !config.queries.delta.empty()) {
    // From the start of time: every row the delta can return.
    const DeltaParameter from = delta_parameter(mode, 0, SourceDuration(0));
    owners("query_delta", config.queries.delta, &from);
  }
  if (!config.queries.servers.empty()) {
    QueryCheck check{"query_servers", true, 0, ""};
    std::string bad;
    check.ok = client->query(config.queries.servers, nullptr, [&](SqlRow row) {
      ++check.rows;
      PoolServerRow server;
      if (bad.empty() && !parse_server_row(row, server, bad)) bad += " (row " + std::to_string(check.rows) + ")";
      if (bad.empty() && !server.heartbeat_at) {
        bad = "row " + std::to_string(check.rows) + ": heartbeat_at of server '" + server.server_id +
              "' is not a timestamp ('" + server.heartbeat_text + "')";
      }
      return true;
    }, check.problem);
    if (check.ok && !bad.empty()) check.ok = false, check.problem = bad;
    out.push_back(std::move(check));
  }
  client->disconnect();
  return out;
}

}  // namespace sprayer::affinity
