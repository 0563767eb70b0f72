// Picks the OwnershipDb implementation named by a --db spec (see ownership_db.h).
#include "tests/poolsim/ownership_db.h"

#include "tests/poolsim/postgres_db.h"
#include "tests/poolsim/sqlite_db.h"

namespace poolsim {

namespace {

enum class DbKind { none, sqlite, postgresql };

DbKind split_spec(std::string_view spec, std::string_view& target) {
  // A URI is a complete conninfo on its own: "postgresql://host/db" is not "postgresql:" + "//host/db".
  if (spec.starts_with("postgresql://") || spec.starts_with("postgres://")) {
    target = spec;
    return DbKind::postgresql;
  }
  for (std::string_view prefix : {"postgresql:", "postgres:"}) {
    if (spec.starts_with(prefix)) {
      target = spec.substr(prefix.size());
      return DbKind::postgresql;
    }
  }
  if (spec.starts_with("sqlite:")) {
    target = spec.substr(7);
    return target.empty() ? DbKind::none : DbKind::sqlite;
  }
  return DbKind::none;
}

}  // namespace

bool valid_db_spec(std::string_view spec) {
  std::string_view target;
  return split_spec(spec, target) != DbKind::none;
}

std::unique_ptr<OwnershipDb> make_ownership_db(std::string_view spec, std::string_view server_id,
                                               std::string& error) {
  std::string_view target;
  switch (split_spec(spec, target)) {
    case DbKind::sqlite:
      return std::make_unique<SqliteDb>(std::string(target));
    case DbKind::postgresql:
      return std::make_unique<PostgresDb>(std::string(target), "poolsim-" + std::string(server_id));
    case DbKind::none:
      break;
  }
  error = "--db: expected sqlite:PATH or postgresql:CONNINFO, got '" + std::string(spec) + "'";
  return nullptr;
}

}  // namespace poolsim
