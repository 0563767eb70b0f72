// SqliteDb: the pool tables in an SQLite file shared by every poolsim of a single-host pool.
// Writers serialise on the file lock (BEGIN IMMEDIATE) and wait for it up to a busy timeout.
#pragma once

#include <array>
#include <string>

#include "tests/poolsim/ownership_db.h"

struct sqlite3;
struct sqlite3_stmt;

namespace poolsim {

class SqliteDb final : public OwnershipDb {
 public:
  explicit SqliteDb(std::string path);
  ~SqliteDb() override;
  SqliteDb(const SqliteDb&) = delete;
  SqliteDb& operator=(const SqliteDb&) = delete;

  const char* kind() const override { return "sqlite"; }
  bool connect() override;
  bool connected() const override { return db_ != nullptr; }

  bool begin_write() override;
  bool commit() override;
  void rollback() override;
  bool next_epoch(int64_t& epoch) override;

  bool read_owner(std::string_view user_key, OwnerRow& row, bool& found) override;
  bool upsert_owner(std::string_view user_key, std::string_view server_id, int64_t epoch) override;
  bool cas_owner(std::string_view user_key, std::string_view server_id, int64_t epoch, int64_t expected_epoch,
                 bool& changed) override;
  bool owners_since(int64_t epoch, std::vector<OwnerRow>& rows) override;

  bool server_age(std::string_view server_id, int64_t& age_ms, bool& found) override;
  bool servers(std::vector<ServerRow>& rows) override;
  bool upsert_server(std::string_view server_id, std::string_view address, int64_t availability) override;

 private:
  enum Statement : size_t {
    kBegin,
    kCommit,
    kRollback,
    kNextEpoch,
    kReadOwner,
    kUpsertOwner,
    kCasOwner,
    kOwnersSince,
    kServerAge,
    kServers,
    kUpsertServer,
    kStatementCount,
  };

  void close();
  // The prepared statement, reset and with bindings cleared; nullptr (error_ set) on failure.
  sqlite3_stmt* statement(Statement which);
  bool fail(const char* what);
  bool run_simple(Statement which, const char* what);

  std::string path_;
  sqlite3* db_ = nullptr;
  std::array<sqlite3_stmt*, kStatementCount> statements_{};
};

}  // namespace poolsim
