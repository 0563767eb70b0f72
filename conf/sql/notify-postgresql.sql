-- Change notifications for sprayer's LISTEN (PostgreSQL). Install once per pool database.
-- The payload is only the new epoch (or the server id): small, far below NOTIFY's 8000-byte
-- limit. A notification is a hint to run the delta query; sprayer also resyncs periodically
-- and after every reconnect, because notifications sent while it was away are lost.

CREATE OR REPLACE FUNCTION sprayer_notify_owner() RETURNS trigger AS $$
BEGIN
  PERFORM pg_notify('sprayer_owner', NEW.epoch::text);
  RETURN NULL;
END
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS sprayer_owner_changed ON user_owner;
CREATE TRIGGER sprayer_owner_changed
  AFTER INSERT OR UPDATE ON user_owner
  FOR EACH ROW EXECUTE FUNCTION sprayer_notify_owner();

CREATE OR REPLACE FUNCTION sprayer_notify_server() RETURNS trigger AS $$
BEGIN
  -- Heartbeats change every second; only membership and availability matter to routing.
  IF TG_OP = 'DELETE' THEN
    PERFORM pg_notify('sprayer_server', OLD.server_id);
  ELSIF TG_OP = 'INSERT' OR NEW.availability IS DISTINCT FROM OLD.availability
        OR NEW.address IS DISTINCT FROM OLD.address THEN
    PERFORM pg_notify('sprayer_server', NEW.server_id);
  END IF;
  RETURN NULL;
END
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS sprayer_server_changed ON pool_server;
CREATE TRIGGER sprayer_server_changed
  AFTER INSERT OR UPDATE OR DELETE ON pool_server
  FOR EACH ROW EXECUTE FUNCTION sprayer_notify_server();
