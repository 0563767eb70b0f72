-- A pool-shaped ownership table (SQLite), as a real Traveler HA pool keeps it: no epoch, a
-- changed_at timestamp. poolsim writes it with --traveler --table-schema pool; readers detect
-- changes by the changed_at watermark. Timestamps are UTC text 'YYYY-MM-DD HH:MM:SS.ffffff'.
-- Beside it, conf/sql/schema-sqlite.sql is the default schema (with epochs).

CREATE TABLE IF NOT EXISTS tr_user_monitor (
  user_name       VARCHAR(255) PRIMARY KEY,
  server_name     VARCHAR(255) NULL,         -- master monitor; NULL = none
  last_connect_at TIMESTAMP(6) NOT NULL,     -- last device connection (UTC)
  changed_at      TIMESTAMP(6) NOT NULL      -- UTC, set whenever server_name changes
);

CREATE TABLE IF NOT EXISTS tr_pool_server (
  server_name        VARCHAR(255) PRIMARY KEY,
  address            VARCHAR(255) NOT NULL,
  availability_index INTEGER NOT NULL,
  heartbeat_at       TIMESTAMP(6) NOT NULL
);
