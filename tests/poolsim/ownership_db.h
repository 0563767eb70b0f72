// OwnershipDb: poolsim's synchronous access to the pool tables (pool_server, user_owner,
// pool_epoch; conf/sql/schema-*.sql), one implementation per database. Primitives only: the
// transactions that claim, take over and reassign users are composed once, in PoolMembership.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace poolsim {

struct OwnerRow {
  std::string user_key;
  std::string server_id;  // empty = NULL (unassigned, a tombstone)
  int64_t epoch = 0;
};

struct ServerRow {
  std::string server_id;
  std::string address;
  int64_t heartbeat_age_ms = 0;  // by the database's clock, so poolsims need not agree on time
  int64_t availability = 0;
};

// Every call returns false on failure and leaves the reason in last_error(). Calls block: the
// caller keeps them off its hot path. After a failure inside begin_write() the caller rolls back.
class OwnershipDb {
 public:
  virtual ~OwnershipDb() = default;

  virtual const char* kind() const = 0;  // "sqlite", "postgresql"
  // (Re)opens the connection.
  virtual bool connect() = 0;
  virtual bool connected() const = 0;
  const std::string& last_error() const { return error_; }

  // A write transaction; every writer takes the epoch row first (next_epoch), which orders them.
  virtual bool begin_write() = 0;
  virtual bool commit() = 0;
  virtual void rollback() = 0;
  // "UPDATE pool_epoch SET epoch = epoch + 1 WHERE id = 1 RETURNING epoch".
  virtual bool next_epoch(int64_t& epoch) = 0;

  // found = false when the user has no row at all.
  virtual bool read_owner(std::string_view user_key, OwnerRow& row, bool& found) = 0;
  // Insert or overwrite; server_id empty writes NULL.
  virtual bool upsert_owner(std::string_view user_key, std::string_view server_id, int64_t epoch) = 0;
  // Compare-and-set on the epoch read earlier; changed = false when another writer got there first.
  virtual bool cas_owner(std::string_view user_key, std::string_view server_id, int64_t epoch,
                         int64_t expected_epoch, bool& changed) = 0;
  // Rows with epoch > `epoch`, in epoch order.
  virtual bool owners_since(int64_t epoch, std::vector<OwnerRow>& rows) = 0;

  // found = false when the server has no row; an unreadable heartbeat counts as very old.
  virtual bool server_age(std::string_view server_id, int64_t& age_ms, bool& found) = 0;
  virtual bool servers(std::vector<ServerRow>& rows) = 0;
  // Registration and heartbeat: upsert with heartbeat_at = now.
  virtual bool upsert_server(std::string_view server_id, std::string_view address, int64_t availability) = 0;

 protected:
  std::string error_;
};

// "sqlite:PATH", "postgresql:CONNINFO", "postgres:CONNINFO", or a postgresql:// URI. Returns
// nullptr with `error` set when the spec names no known database. Does not connect.
std::unique_ptr<OwnershipDb> make_ownership_db(std::string_view spec, std::string_view server_id,
                                               std::string& error);

// Whether make_ownership_db would accept `spec` (for option parsing).
bool valid_db_spec(std::string_view spec);

}  // namespace poolsim
