"""sprayer's own health as keepalived sees it: /healthz reasons, and listening on an address the
host does not have yet (listeners[].freebind), as the standby of a pair does."""

import contextlib
import sqlite3
import subprocess

import harness
from harness import wait_until

NON_LOCAL = "192.0.2.77"  # TEST-NET-1: never configured on a test machine


def healthz(sprayer):
    resp = harness.http_request(sprayer.admin_port, "GET", "/healthz", timeout=5)
    return resp.status, resp.body.decode()


def nonlocal_bind_allowed():
    with contextlib.suppress(OSError), open("/proc/sys/net/ipv4/ip_nonlocal_bind") as f:
        return f.read().strip() != "0"
    return False


class HealthzTest(harness.TestCase):
    TIMEOUT = 90.0

    def test_reasons_follow_the_snapshot_and_the_servers(self):
        with harness.SqlitePool() as db, harness.pool(1, db=db) as sims:
            config = harness.sprayer_config(
                sims, ownership={"source": "sqlite", "sqlite_path": db.path, "max_staleness": "1s"},
                health={"interval": "200ms", "fall": 2, "min_hold": "0s"})
            with harness.Sprayer(config) as sprayer:
                wait_until(lambda: healthz(sprayer) == (200, "ok\n"), 10.0, interval=0.05,
                           what="/healthz 200 ok with a current snapshot")
                # The database stops answering (an exclusive lock outlasts the source's busy
                # timeout): once the last good query is older than max_staleness, 503.
                lock = sqlite3.connect(db.path, isolation_level=None, timeout=10)
                try:
                    lock.execute("BEGIN EXCLUSIVE")
                    wait_until(lambda: healthz(sprayer)[1].startswith("snapshot_stale: "), 15.0, interval=0.05,
                               what="/healthz to say the snapshot is stale")
                    status, body = healthz(sprayer)
                    self.assertEqual(status, 503, body)
                    self.assertIn("max_staleness 1000 ms", body)
                finally:
                    with contextlib.suppress(sqlite3.Error):
                        lock.execute("COMMIT")
                    lock.close()
                wait_until(lambda: healthz(sprayer)[0] == 200, 15.0, interval=0.05,
                           what="/healthz 200 again once the database answers")
                # The only pool server dies: nothing usable, 503 with that reason.
                sims[0].kill()
                wait_until(lambda: healthz(sprayer)[1].startswith("no_usable_server: "), 10.0, interval=0.05,
                           what="/healthz to say no server is usable")
                self.assertEqual(healthz(sprayer)[0], 503)

    def test_freebind_listens_on_an_address_the_host_does_not_have(self):
        with harness.pool(1) as sims:
            port = harness.free_port()
            config = harness.sprayer_config(sims)
            config["listeners"].append({"name": "vip", "address": f"{NON_LOCAL}:{port}", "freebind": True})
            with harness.Sprayer(config) as sprayer:
                self.assertEqual(healthz(sprayer), (200, "ok\n"))
                sprayer.assert_alive()
            if nonlocal_bind_allowed():
                self.skipTest("net.ipv4.ip_nonlocal_bind=1 here: any address binds, with or without freebind")
            config = harness.sprayer_config(sims)
            config["listeners"].append({"name": "vip", "address": f"{NON_LOCAL}:{port}"})
            proc = subprocess.run([harness.SPRAYER_BIN, "-c", harness.write_config(config)], capture_output=True,
                                  text=True, timeout=20)
            self.assertNotEqual(proc.returncode, 0)
            self.assertIn(f"listener vip: cannot listen on {NON_LOCAL}:{port}", proc.stderr)


if __name__ == "__main__":
    harness.main()
