-- The pool's ownership table, default schema (SQLite: the embedded default).
-- sprayer only reads these tables; the pool servers (poolsim in tests) write them.
--
-- Epochs: every change to user_owner takes the next value of pool_epoch.epoch inside its
-- own transaction ("UPDATE pool_epoch SET epoch = epoch + 1 RETURNING epoch"). The row lock
-- makes transactions that change owners commit in epoch order, so a reader that has seen
-- epoch N and asks for "epoch > N" can never miss a change that commits later with a
-- smaller number. (A plain sequence would not give that guarantee.)

CREATE TABLE IF NOT EXISTS pool_server (
  server_id    TEXT PRIMARY KEY,
  address      TEXT NOT NULL,             -- host:port where sprayer reaches the server
  heartbeat_at TIMESTAMP NOT NULL,        -- last "still alive" write by the server (UTC)
  availability INTEGER NOT NULL DEFAULT 0 -- 0..100 available; -1..-100 constrained; -200 bound users only
);

CREATE TABLE IF NOT EXISTS user_owner (
  user_key   TEXT PRIMARY KEY,            -- normalised user name
  server_id  TEXT,                        -- NULL = unassigned (a tombstone)
  epoch      BIGINT NOT NULL,             -- pool-wide increasing change number
  changed_at TIMESTAMP NOT NULL
);
CREATE INDEX IF NOT EXISTS user_owner_epoch ON user_owner (epoch);

CREATE TABLE IF NOT EXISTS pool_epoch (
  id    INTEGER PRIMARY KEY CHECK (id = 1),
  epoch BIGINT NOT NULL
);
INSERT OR IGNORE INTO pool_epoch (id, epoch) VALUES (1, 0);
