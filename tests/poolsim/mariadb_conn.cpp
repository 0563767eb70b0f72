// SqlConn for MariaDB through libmariadb (see sql_conn.h). The C API has no numbered
// parameters for plain queries, so $N is replaced by a literal escaped with
// mysql_real_escape_string for this connection's character set.
#include <mysql.h>
#include <errmsg.h>

#include <cctype>
#include <cstdlib>
#include <utility>

#include "tests/poolsim/sql_conn.h"
#include "tests/poolsim/text.h"

namespace poolsim {

namespace {

struct MariaOptions {
  std::string host = "127.0.0.1";
  unsigned port = 3306;
  std::string user = "root";
  std::string password;
  std::string dbname;
  std::string unix_socket;
};

bool parse_options(std::string_view text, MariaOptions& out, std::string& error) {
  size_t pos = 0;
  while (pos < text.size()) {
    while (pos < text.size() && text[pos] == ' ') ++pos;
    if (pos >= text.size()) break;
    size_t end = text.find(' ', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view pair = text.substr(pos, end - pos);
    pos = end;
    size_t eq = pair.find('=');
    if (eq == std::string_view::npos) {
      error = "mariadb: expected KEY=VALUE, got '" + std::string(pair) + "'";
      return false;
    }
    std::string_view key = pair.substr(0, eq);
    std::string value(pair.substr(eq + 1));
    uint64_t port = 0;
    if (key == "host") {
      out.host = value;
    } else if (key == "port" && parse_uint(value, port) && port > 0 && port < 65536) {
      out.port = static_cast<unsigned>(port);
    } else if (key == "user") {
      out.user = value;
    } else if (key == "password") {
      out.password = value;
    } else if (key == "dbname") {
      out.dbname = value;
    } else if (key == "unix_socket") {
      out.unix_socket = value;
    } else {
      error = "mariadb: unknown or bad option '" + std::string(pair) + "'";
      return false;
    }
  }
  if (out.dbname.empty()) {
    error = "mariadb: dbname=NAME is required";
    return false;
  }
  return true;
}

class MariaConn final : public SqlConn {
 public:
  using SqlConn::exec;
  explicit MariaConn(MariaOptions options) : options_(std::move(options)) {}
  ~MariaConn() override { close(); }

  SqlDialect dialect() const override { return SqlDialect::mariadb; }
  const char* kind() const override { return "mariadb"; }
  bool connected() const override { return conn_ != nullptr; }

  bool connect() override {
    close();
    MYSQL* conn = mysql_init(nullptr);
    if (conn == nullptr) {
      error_ = "connect: out of memory";
      return false;
    }
    unsigned timeout = 3;
    mysql_options(conn, MYSQL_OPT_CONNECT_TIMEOUT, &timeout);
    mysql_options(conn, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    // The socket is used only without a host: a host means TCP, even 127.0.0.1.
    const char* host = options_.unix_socket.empty() ? options_.host.c_str() : nullptr;
    if (mysql_real_connect(conn, host, options_.user.c_str(), options_.password.c_str(),
                           options_.dbname.c_str(), options_.port,
                           options_.unix_socket.empty() ? nullptr : options_.unix_socket.c_str(), 0) == nullptr) {
      error_ = "connect: " + std::string(mysql_error(conn));
      mysql_close(conn);
      return false;
    }
    conn_ = conn;
    // TIMESTAMP columns are stored in UTC and shown in the session zone: show UTC.
    return exec("SET time_zone = '+00:00'");
  }

  bool exec(std::string_view sql, std::span<const SqlParam> params, std::vector<SqlRow>* rows) override {
    affected_ = 0;
    if (conn_ == nullptr) {
      error_ = "not connected";
      return false;
    }
    std::string text;
    text.reserve(sql.size() + 64);
    for (size_t i = 0; i < sql.size(); ++i) {
      if (sql[i] != '$' || i + 1 >= sql.size() || !std::isdigit(static_cast<unsigned char>(sql[i + 1]))) {
        text.push_back(sql[i]);
        continue;
      }
      size_t n = 0;
      while (i + 1 < sql.size() && std::isdigit(static_cast<unsigned char>(sql[i + 1]))) {
        n = n * 10 + static_cast<size_t>(sql[++i] - '0');
      }
      if (n == 0 || n > params.size()) {
        error_ = "parameter $" + std::to_string(n) + " not given";
        return false;
      }
      append_literal(text, params[n - 1]);
    }
    if (mysql_real_query(conn_, text.data(), text.size()) != 0) return fail();
    MYSQL_RES* result = mysql_store_result(conn_);
    if (result == nullptr && mysql_field_count(conn_) != 0) return fail();
    if (result != nullptr) {
      unsigned columns = mysql_num_fields(result);
      while (MYSQL_ROW row = mysql_fetch_row(result)) {
        if (rows == nullptr) continue;
        unsigned long* lengths = mysql_fetch_lengths(result);
        SqlRow& out = rows->emplace_back();
        for (unsigned c = 0; c < columns; ++c) {
          if (row[c] == nullptr) {
            out.emplace_back();
          } else {
            out.emplace_back(std::string(row[c], lengths[c]));
          }
        }
      }
      mysql_free_result(result);
    } else {
      affected_ = static_cast<int64_t>(mysql_affected_rows(conn_));
    }
    return true;
  }

 private:
  void append_literal(std::string& out, const SqlParam& p) {
    if (p.kind == SqlParam::Kind::null) {
      out += "NULL";
    } else if (p.kind == SqlParam::Kind::integer) {
      out += std::to_string(p.integer);
    } else {
      std::string escaped(p.text.size() * 2 + 1, '\0');
      unsigned long n = mysql_real_escape_string(conn_, escaped.data(), p.text.data(), p.text.size());
      out.push_back('\'');
      out.append(escaped.data(), n);
      out.push_back('\'');
    }
  }

  bool fail() {
    unsigned code = mysql_errno(conn_);
    error_ = mysql_error(conn_);
    if (code == CR_SERVER_GONE_ERROR || code == CR_SERVER_LOST || code == CR_CONNECTION_ERROR) close();
    return false;
  }

  void close() {
    if (conn_ != nullptr) mysql_close(conn_);
    conn_ = nullptr;
  }

  MariaOptions options_;
  MYSQL* conn_ = nullptr;
};

}  // namespace

std::unique_ptr<SqlConn> make_mariadb_conn(std::string_view options, std::string& error) {
  MariaOptions parsed;
  if (!parse_options(options, parsed, error)) return nullptr;
  return std::make_unique<MariaConn>(std::move(parsed));
}

}  // namespace poolsim
