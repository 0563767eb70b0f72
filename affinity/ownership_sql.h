// A blocking SQL connection (MariaDB, ODBC) as the threaded source and the query check use
// it, and the parsing of owner and server rows shared by them. Never called on a loop.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "affinity/ownership_changes.h"
#include "affinity/ownership_rows.h"
#include "affinity/ownership_source.h"

namespace sprayer::affinity {

using SqlRow = std::span<const std::optional<std::string_view>>;  // nullopt = SQL NULL
// Returns false to stop reading (a bad row); the values live only for the call.
using SqlRowHandler = std::function<bool(SqlRow)>;

class SqlClient {
 public:
  virtual ~SqlClient() = default;

  virtual bool connected() const noexcept = 0;
  virtual bool connect(std::string& error) = 0;
  // Runs `sql`, binding `parameter` (if any) to its first placeholder ($1 or ?), and hands
  // every row to `on_row`. False with `error` set when the query fails; a false from
  // on_row also ends it with false (error left as on_row set it).
  virtual bool query(const std::string& sql, const DeltaParameter* parameter, const SqlRowHandler& on_row,
                     std::string& error) = 0;
  virtual void disconnect() noexcept = 0;
  // From any thread: makes a call blocked on the network return soon (with an error).
  virtual void interrupt() noexcept = 0;
};

std::unique_ptr<SqlClient> make_mariadb_client(const MariadbSettings& settings, SourceDuration connect_timeout,
                                               SourceDuration query_timeout);
std::unique_ptr<SqlClient> make_odbc_client(const OdbcSettings& settings, SourceDuration connect_timeout,
                                            SourceDuration query_timeout);

// Where the first placeholder ($1 or ?) outside quotes and comments is: offset and length.
struct Placeholder {
  std::size_t offset = 0;
  std::size_t length = 0;
};
std::optional<Placeholder> find_placeholder(std::string_view sql) noexcept;

// A password file's first line; "" for no file. False (with error) when it cannot be read;
// the error never holds the password.
bool read_password_file(const std::string& path, std::string& password, std::string& error);

// One owner query row into `rows` (user_key, server_id, change column by `mode`). False
// with a message naming the query (`what`) and the user when the change column is bad.
bool add_owner_row(ChangeDetection mode, SqlRow row, std::string_view what, OwnershipRowBlock& rows,
                   std::string& error);
// One servers query row (server_id, address, availability, heartbeat_at).
bool parse_server_row(SqlRow row, PoolServerRow& out, std::string& error);

}  // namespace sprayer::affinity
