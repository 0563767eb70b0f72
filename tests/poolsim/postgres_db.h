// PostgresDb: the pool tables in PostgreSQL, through one blocking libpq connection. A broken
// connection is dropped at the failing call; the owner reconnects (PoolMembership: next heartbeat).
#pragma once

#include <string>

#include "tests/poolsim/ownership_db.h"

struct pg_conn;
struct pg_result;

namespace poolsim {

class PostgresDb final : public OwnershipDb {
 public:
  PostgresDb(std::string conninfo, std::string application_name);
  ~PostgresDb() override;
  PostgresDb(const PostgresDb&) = delete;
  PostgresDb& operator=(const PostgresDb&) = delete;

  const char* kind() const override { return "postgresql"; }
  bool connect() override;
  bool connected() const override { return conn_ != nullptr; }

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
  // Runs `sql` with text parameters (nullptr = NULL). Returns the result when its status is
  // command-ok or tuples-ok, else nullptr with error_ set (and the connection dropped if broken).
  pg_result* exec(const char* what, const char* sql, int count = 0, const char* const* values = nullptr);
  void close();

  std::string conninfo_;
  std::string application_name_;
  pg_conn* conn_ = nullptr;
};

}  // namespace poolsim
