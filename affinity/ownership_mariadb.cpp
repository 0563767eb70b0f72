// MariaDB client: one connection in UTC (TIMESTAMP columns come back and compare as UTC),
// timeouts on connect, read and write, optional TLS, and the delta parameter written into
// the query as a literal (it is always a number or a timestamp sprayer formatted itself).
#include "affinity/ownership_mariadb.h"

#include <mysql.h>
#include <sys/socket.h>

#include <algorithm>
#include <mutex>
#include <vector>

#include "affinity/ownership_sql.h"
#include "affinity/ownership_threaded.h"

namespace sprayer::affinity {

namespace {

unsigned seconds_of(SourceDuration d) {
  return static_cast<unsigned>(std::max<std::int64_t>(1, (d.count() + 999) / 1000));
}

class MariadbClient final : public SqlClient {
 public:
  MariadbClient(MariadbSettings settings, SourceDuration connect_timeout, SourceDuration query_timeout)
      : settings_(std::move(settings)),
        connect_seconds_(seconds_of(connect_timeout)),
        query_seconds_(seconds_of(query_timeout)) {}
  ~MariadbClient() override { disconnect(); }

  bool connected() const noexcept override { return db_ != nullptr; }

  bool connect(std::string& error) override {
    disconnect();
    std::string password;
    if (!read_password_file(settings_.password_file, password, error)) return false;
    MYSQL* db = mysql_init(nullptr);
    if (!db) {
      error = "cannot connect: out of memory";
      return false;
    }
    mysql_optionsv(db, MYSQL_OPT_CONNECT_TIMEOUT, &connect_seconds_);
    mysql_optionsv(db, MYSQL_OPT_READ_TIMEOUT, &query_seconds_);
    mysql_optionsv(db, MYSQL_OPT_WRITE_TIMEOUT, &query_seconds_);
    mysql_optionsv(db, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    mysql_optionsv(db, MYSQL_INIT_COMMAND, "SET time_zone = '+00:00'");
    mysql_optionsv(db, MYSQL_READ_DEFAULT_GROUP, nullptr);
    if (settings_.tls) {
      const my_bool on = 1;
      mysql_optionsv(db, MYSQL_OPT_SSL_ENFORCE, &on);
      if (!settings_.tls_ca_file.empty()) {
        mysql_optionsv(db, MYSQL_OPT_SSL_CA, settings_.tls_ca_file.c_str());
        mysql_optionsv(db, MYSQL_OPT_SSL_VERIFY_SERVER_CERT, &on);
      }
    }
    const char* socket = settings_.unix_socket.empty() ? nullptr : settings_.unix_socket.c_str();
    const bool ok = mysql_real_connect(db, settings_.host.c_str(), settings_.user.c_str(),
                                       settings_.password_file.empty() ? nullptr : password.c_str(),
                                       settings_.database.empty() ? nullptr : settings_.database.c_str(),
                                       settings_.port, socket, 0) != nullptr;
    std::fill(password.begin(), password.end(), '\0');
    if (!ok) {
      error = std::string("cannot connect: ") + mysql_error(db);
      mysql_close(db);
      return false;
    }
    std::lock_guard lock(mutex_);
    db_ = db;
    return true;
  }

  bool query(const std::string& sql, const DeltaParameter* parameter, const SqlRowHandler& on_row,
             std::string& error) override {
    std::string text = sql;
    if (parameter) {
      if (const auto at = find_placeholder(sql)) {
        const std::string literal =
            parameter->integer ? std::to_string(*parameter->integer) : "'" + parameter->text + "'";
        text.replace(at->offset, at->length, literal);
      }
    }
    if (mysql_real_query(db_, text.data(), text.size()) != 0) {
      error = mysql_error(db_);
      return false;
    }
    MYSQL_RES* result = mysql_use_result(db_);
    if (!result) {
      if (mysql_field_count(db_) == 0) return true;  // not a SELECT
      error = mysql_error(db_);
      return false;
    }
    const unsigned columns = mysql_num_fields(result);
    std::vector<std::optional<std::string_view>> values(columns);
    bool ok = true;
    while (MYSQL_ROW row = mysql_fetch_row(result)) {
      const unsigned long* lengths = mysql_fetch_lengths(result);
      for (unsigned i = 0; i < columns; ++i) {
        values[i] = row[i] ? std::optional<std::string_view>(std::string_view(row[i], lengths[i])) : std::nullopt;
      }
      if (!on_row(values)) {
        ok = false;
        break;
      }
    }
    if (ok && mysql_errno(db_) != 0) {
      error = mysql_error(db_);  // the connection broke between rows
      ok = false;
    }
    mysql_free_result(result);
    return ok;
  }

  void disconnect() noexcept override {
    std::lock_guard lock(mutex_);  // interrupt() must not shut down a reused descriptor
    if (db_) mysql_close(db_);
    db_ = nullptr;
  }

  void interrupt() noexcept override {
    std::lock_guard lock(mutex_);
    if (db_) ::shutdown(static_cast<int>(mysql_get_socket(db_)), SHUT_RDWR);
  }

 private:
  MariadbSettings settings_;
  unsigned connect_seconds_;
  unsigned query_seconds_;
  std::mutex mutex_;
  MYSQL* db_ = nullptr;  // written under mutex_, used by the source thread
};

}  // namespace

std::unique_ptr<SqlClient> make_mariadb_client(const MariadbSettings& settings, SourceDuration connect_timeout,
                                               SourceDuration query_timeout) {
  // mysql_library_init is not thread-safe; mysql_init calls it implicitly the first time.
  static std::once_flag init;
  std::call_once(init, [] { mysql_library_init(0, nullptr, nullptr); });
  return std::make_unique<MariadbClient>(settings, connect_timeout, query_timeout);
}

std::unique_ptr<OwnershipSource> make_mariadb_source(uv_loop_t* loop, OwnershipSourceConfig config,
                                                     OwnershipCallbacks callbacks, SourceEnvironment env) {
  auto client = make_mariadb_client(config.mariadb, config.connect_timeout, config.query_timeout);
  return std::make_unique<ThreadedOwnershipSource>(loop, std::move(config), std::move(callbacks), std::move(env),
                                                   std::move(client));
}

}  // namespace sprayer::affinity
