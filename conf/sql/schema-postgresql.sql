-- The pool's ownership table, default schema (PostgreSQL: the enterprise database).
-- See schema-sqlite.sql for the epoch rule: take the next epoch with
--   UPDATE pool_epoch SET epoch = epoch + 1 WHERE id = 1 RETURNING epoch
-- inside the transaction that changes user_owner, so commit order is epoch order.

CREATE TABLE IF NOT EXISTS pool_server (
  server_id    TEXT PRIMARY KEY,
  address      TEXT NOT NULL,
  heartbeat_at TIMESTAMPTZ NOT NULL,
  availability INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS user_owner (
  user_key   TEXT PRIMARY KEY,
  server_id  TEXT,
  epoch      BIGINT NOT NULL,
  changed_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS user_owner_epoch ON user_owner (epoch);

CREATE TABLE IF NOT EXISTS pool_epoch (
  id    INTEGER PRIMARY KEY CHECK (id = 1),
  epoch BIGINT NOT NULL
);
INSERT INTO pool_epoch (id, epoch) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;

-- A read-only role for sprayer (least privilege). Set its password out of band.
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sprayer') THEN
    CREATE ROLE sprayer LOGIN;
  END IF;
END
$$;
GRANT SELECT ON pool_server, user_owner, pool_epoch TO sprayer;
