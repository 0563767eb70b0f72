// Row parsing shared by the blocking SQL clients, and the password file.
#include "affinity/ownership_sql.h"

#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>

namespace sprayer::affinity {

std::optional<Placeholder> find_placeholder(std::string_view sql) noexcept {
  char quote = 0;
  for (std::size_t i = 0; i < sql.size(); ++i) {
    const char c = sql[i];
    if (quote) {
      if (c == quote) quote = 0;
      continue;
    }
    if (c == '\'' || c == '"' || c == '`') {
      quote = c;
    } else if (c == '-' && i + 1 < sql.size() && sql[i + 1] == '-') {
      i = sql.find('\n', i);
      if (i == std::string_view::npos) return std::nullopt;
    } else if (c == '?') {
      return Placeholder{i, 1};
    } else if (c == '$' && i + 1 < sql.size() && sql[i + 1] == '1' &&
               (i + 2 >= sql.size() || sql[i + 2] < '0' || sql[i + 2] > '9')) {
      return Placeholder{i, 2};
    }
  }
  return std::nullopt;
}

bool read_password_file(const std::string& path, std::string& password, std::string& error) {
  password.clear();
  if (path.empty()) return true;
  std::ifstream in(path);
  if (!in) {
    error = "cannot read the password file " + path + ": " + std::strerror(errno);
    return false;
  }
  std::getline(in, password);
  if (!password.empty() && password.back() == '\r') password.pop_back();
  return true;
}

bool add_owner_row(ChangeDetection mode, SqlRow row, std::string_view what, OwnershipRowBlock& rows,
                   std::string& error) {
  const std::size_t needed = mode == ChangeDetection::full_scan ? 2 : 3;
  if (row.size() < needed) {
    error = std::string(what) + " query must return user_key, server_id" +
            (mode == ChangeDetection::epoch       ? ", epoch"
             : mode == ChangeDetection::watermark ? ", changed_at"
                                                  : "");
    return false;
  }
  const std::string_view user = row[0].value_or(std::string_view{});
  const auto change = change_value(mode, mode == ChangeDetection::full_scan ? std::nullopt : row[2]);
  if (!change) {
    error = std::string(what) + " query: " + (mode == ChangeDetection::epoch ? "epoch" : "changed_at") + " of user '" +
            std::string(user) + "' is " +
            (!row[2] ? "NULL"
                     : "not " + std::string(mode == ChangeDetection::epoch ? "an integer" : "a timestamp") + " ('" +
                           std::string(*row[2]) + "')");
    return false;
  }
  rows.add(user, row[1], *change);
  return true;
}

bool parse_server_row(SqlRow row, PoolServerRow& out, std::string& error) {
  if (row.size() < 4) {
    error = "servers query must return server_id, address, availability, heartbeat_at";
    return false;
  }
  out.server_id = row[0].value_or(std::string_view{});
  out.address = row[1].value_or(std::string_view{});
  std::int64_t availability = 0;
  if (row[2]) {
    const auto [end, ec] = std::from_chars(row[2]->data(), row[2]->data() + row[2]->size(), availability);
    if (ec != std::errc() || end != row[2]->data() + row[2]->size()) {
      error = "servers query: availability of server '" + out.server_id + "' is not an integer";
      return false;
    }
  }
  out.availability = static_cast<int>(availability);
  out.heartbeat_text = row[3].value_or(std::string_view{});
  out.heartbeat_at = parse_db_timestamp(out.heartbeat_text);
  return true;
}

}  // namespace sprayer::affinity
