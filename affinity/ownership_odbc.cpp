// ODBC client: SQLDriverConnect with the configured string plus PWD from the password file,
// login and query timeouts, $1 rewritten to ? and bound, every column read as text.
#include "affinity/ownership_odbc.h"

#include <sql.h>
#include <sqlext.h>

#include <algorithm>
#include <mutex>
#include <vector>

#include "affinity/ownership_sql.h"
#include "affinity/ownership_threaded.h"

namespace sprayer::affinity {

namespace {

// The driver's diagnostics, one line: "[driver]message (SQLSTATE)".
std::string diagnostics(SQLSMALLINT type, SQLHANDLE handle) {
  std::string out;
  for (SQLSMALLINT i = 1; i <= 4; ++i) {
    SQLCHAR state[6] = {};
    SQLCHAR text[512] = {};
    SQLINTEGER native = 0;
    SQLSMALLINT length = 0;
    const SQLRETURN rc = SQLGetDiagRec(type, handle, i, state, &native, text, sizeof text, &length);
    if (!SQL_SUCCEEDED(rc)) break;
    if (!out.empty()) out += "; ";
    out += reinterpret_cast<const char*>(text);
    out += " (";
    out += reinterpret_cast<const char*>(state);
    out += ")";
  }
  return out.empty() ? "unknown ODBC error" : out;
}

// A value inside {} in a connection string: a } is doubled.
std::string braced(const std::string& value) {
  std::string out = "{";
  for (const char c : value) {
    out += c;
    if (c == '}') out += '}';
  }
  return out + "}";
}

class OdbcClient final : public SqlClient {
 public:
  OdbcClient(OdbcSettings settings, SourceDuration connect_timeout, SourceDuration query_timeout)
      : settings_(std::move(settings)),
        connect_seconds_(static_cast<SQLULEN>(std::max<std::int64_t>(1, (connect_timeout.count() + 999) / 1000))),
        query_seconds_(static_cast<SQLULEN>(std::max<std::int64_t>(1, (query_timeout.count() + 999) / 1000))) {}
  ~OdbcClient() override {
    disconnect();
    if (env_) SQLFreeHandle(SQL_HANDLE_ENV, env_);
  }

  bool connected() const noexcept override { return dbc_ != SQL_NULL_HDBC; }

  bool connect(std::string& error) override {
    disconnect();
    if (!env_) {
      if (!SQL_SUCCEEDED(SQLAllocHandle(SQL_HANDLE_ENV, SQL_NULL_HANDLE, &env_))) {
        env_ = SQL_NULL_HENV;
        error = "cannot connect: no ODBC environment";
        return false;
      }
      SQLSetEnvAttr(env_, SQL_ATTR_ODBC_VERSION, reinterpret_cast<SQLPOINTER>(SQL_OV_ODBC3), 0);
    }
    std::string password;
    if (!read_password_file(settings_.password_file, password, error)) return false;
    SQLHDBC dbc = SQL_NULL_HDBC;
    if (!SQL_SUCCEEDED(SQLAllocHandle(SQL_HANDLE_DBC, env_, &dbc))) {
      error = "cannot connect: " + diagnostics(SQL_HANDLE_ENV, env_);
      return false;
    }
    SQLSetConnectAttr(dbc, SQL_ATTR_LOGIN_TIMEOUT, reinterpret_cast<SQLPOINTER>(connect_seconds_), 0);
    SQLSetConnectAttr(dbc, SQL_ATTR_CONNECTION_TIMEOUT, reinterpret_cast<SQLPOINTER>(query_seconds_), 0);
    SQLSetConnectAttr(dbc, SQL_ATTR_ACCESS_MODE, reinterpret_cast<SQLPOINTER>(SQL_MODE_READ_ONLY), 0);
    std::string text = settings_.connection;
    if (!settings_.password_file.empty()) {
      if (!text.empty() && text.back() != ';') text += ';';
      text += "PWD=" + braced(password);
    }
    std::fill(password.begin(), password.end(), '\0');
    SQLCHAR out[1024];
    SQLSMALLINT out_length = 0;
    const SQLRETURN rc = SQLDriverConnect(dbc, nullptr, reinterpret_cast<SQLCHAR*>(text.data()),
                                          static_cast<SQLSMALLINT>(text.size()), out, sizeof out, &out_length,
                                          SQL_DRIVER_NOPROMPT);
    std::fill(text.begin(), text.end(), '\0');
    std::fill(std::begin(out), std::end(out), 0);  // the completed string may repeat PWD
    if (!SQL_SUCCEEDED(rc)) {
      error = "cannot connect: " + diagnostics(SQL_HANDLE_DBC, dbc);
      SQLFreeHandle(SQL_HANDLE_DBC, dbc);
      return false;
    }
    SQLSetConnectAttr(dbc, SQL_ATTR_AUTOCOMMIT, reinterpret_cast<SQLPOINTER>(SQL_AUTOCOMMIT_ON), 0);
    std::lock_guard lock(mutex_);
    dbc_ = dbc;
    return true;
  }

  bool query(const std::string& sql, const DeltaParameter* parameter, const SqlRowHandler& on_row,
             std::string& error) override {
    SQLHSTMT stmt = SQL_NULL_HSTMT;
    if (!SQL_SUCCEEDED(SQLAllocHandle(SQL_HANDLE_STMT, dbc_, &stmt))) {
      error = diagnostics(SQL_HANDLE_DBC, dbc_);
      return false;
    }
    {
      std::lock_guard lock(mutex_);
      stmt_ = stmt;
    }
    const bool ok = run(stmt, sql, parameter, on_row, error);
    std::lock_guard lock(mutex_);
    stmt_ = SQL_NULL_HSTMT;
    SQLFreeHandle(SQL_HANDLE_STMT, stmt);
    return ok;
  }

  void disconnect() noexcept override {
    std::lock_guard lock(mutex_);
    if (dbc_ == SQL_NULL_HDBC) return;
    SQLDisconnect(dbc_);
    SQLFreeHandle(SQL_HANDLE_DBC, dbc_);
    dbc_ = SQL_NULL_HDBC;
  }

  // SQLCancel is the one ODBC call meant for another thread.
  void interrupt() noexcept override {
    std::lock_guard lock(mutex_);
    if (stmt_ != SQL_NULL_HSTMT) SQLCancel(stmt_);
  }

 private:
  bool run(SQLHSTMT stmt, const std::string& sql, const DeltaParameter* parameter, const SqlRowHandler& on_row,
           std::string& error) {
    SQLSetStmtAttr(stmt, SQL_ATTR_QUERY_TIMEOUT, reinterpret_cast<SQLPOINTER>(query_seconds_), 0);
    std::string text = sql;
    SQLBIGINT integer = 0;
    std::string value;
    SQLLEN indicator = 0;
    if (parameter) {
      if (const auto at = find_placeholder(sql)) {
        text.replace(at->offset, at->length, "?");
        SQLRETURN rc;
        if (parameter->integer) {
          integer = *parameter->integer;
          rc = SQLBindParameter(stmt, 1, SQL_PARAM_INPUT, SQL_C_SBIGINT, SQL_BIGINT, 0, 0, &integer, 0, nullptr);
        } else {
          value = parameter->text;
          indicator = static_cast<SQLLEN>(value.size());
          rc = SQLBindParameter(stmt, 1, SQL_PARAM_INPUT, SQL_C_CHAR, SQL_VARCHAR, value.size(), 0, value.data(),
                                indicator, &indicator);
        }
        if (!SQL_SUCCEEDED(rc)) {
          error = diagnostics(SQL_HANDLE_STMT, stmt);
          return false;
        }
      }
    }
    SQLRETURN rc = SQLExecDirect(stmt, reinterpret_cast<SQLCHAR*>(text.data()), static_cast<SQLINTEGER>(text.size()));
    if (rc == SQL_NO_DATA) return true;
    if (!SQL_SUCCEEDED(rc)) {
      error = diagnostics(SQL_HANDLE_STMT, stmt);
      return false;
    }
    SQLSMALLINT columns = 0;
    SQLNumResultCols(stmt, &columns);
    std::vector<std::string> cells(static_cast<std::size_t>(columns));
    std::vector<std::optional<std::string_view>> values(cells.size());
    char buffer[512];
    while ((rc = SQLFetch(stmt)) != SQL_NO_DATA) {
      if (!SQL_SUCCEEDED(rc)) {
        error = diagnostics(SQL_HANDLE_STMT, stmt);
        return false;
      }
      for (SQLSMALLINT c = 0; c < columns; ++c) {
        std::string& cell = cells[static_cast<std::size_t>(c)];
        cell.clear();
        bool null = false;
        // Long values come in pieces: each call returns what fits, SQL_SUCCESS at the last.
        for (;;) {
          SQLLEN length = 0;
          rc = SQLGetData(stmt, static_cast<SQLUSMALLINT>(c + 1), SQL_C_CHAR, buffer, sizeof buffer, &length);
          if (rc == SQL_NO_DATA) break;
          if (!SQL_SUCCEEDED(rc)) {
            error = diagnostics(SQL_HANDLE_STMT, stmt);
            return false;
          }
          if (length == SQL_NULL_DATA) {
            null = true;
            break;
          }
          const std::size_t piece = length == SQL_NO_TOTAL || length >= static_cast<SQLLEN>(sizeof buffer)
                                        ? sizeof buffer - 1
                                        : static_cast<std::size_t>(length);
          cell.append(buffer, piece);
          if (rc == SQL_SUCCESS) break;
        }
        values[static_cast<std::size_t>(c)] = null ? std::nullopt : std::optional<std::string_view>(cell);
      }
      if (!on_row(values)) return false;
    }
    return true;
  }

  OdbcSettings settings_;
  SQLULEN connect_seconds_;
  SQLULEN query_seconds_;
  SQLHENV env_ = SQL_NULL_HENV;
  std::mutex mutex_;
  SQLHDBC dbc_ = SQL_NULL_HDBC;     // written under mutex_, used by the source thread
  SQLHSTMT stmt_ = SQL_NULL_HSTMT;  // the statement running, for interrupt()
};

}  // namespace

std::unique_ptr<SqlClient> make_odbc_client(const OdbcSettings& settings, SourceDuration connect_timeout,
                                            SourceDuration query_timeout) {
  return std::make_unique<OdbcClient>(settings, connect_timeout, query_timeout);
}

std::unique_ptr<OwnershipSource> make_odbc_source(uv_loop_t* loop, OwnershipSourceConfig config,
                                                  OwnershipCallbacks callbacks, SourceEnvironment env) {
  auto client = make_odbc_client(config.odbc, config.connect_timeout, config.query_timeout);
  return std::make_unique<ThreadedOwnershipSource>(loop, std::move(config), std::move(callbacks), std::move(env),
                                                   std::move(client));
}

}  // namespace sprayer::affinity
