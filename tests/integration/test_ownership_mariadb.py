#!/usr/bin/env python3
"""Ownership from a Traveler-shaped MariaDB pool (tr_user_monitor, tr_pool_server; no epoch,
change_detection: watermark), read directly (source: mariadb) and through unixODBC with the
MariaDB ODBC driver (source: odbc). Three plain poolsims behind sprayer; the test writes the
tables with SQL as the pool would.

- every request lands on the table's owner;
- owner changes are followed (p50/p99 printed);
- MariaDB killed under load: routing goes on from the snapshot (no misroute, no error);
  restarted: the source reconnects and changes resume;
- a server whose heartbeat_at is older than heartbeat_max_age takes no new users, and
  /api/v1/servers and /metrics say so.
"""
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time

import harness
from harness import Sprayer, SyncLoad, TestCase, wait_until
from mariadb_server import MariadbServer

USERS = 2_000
SERVERS = ("pool1", "pool2", "pool3")
QUERIES = {
    "change_detection": "watermark",
    "query_full": "SELECT user_name, server_name, changed_at FROM tr_user_monitor",
    "query_delta": "SELECT user_name, server_name, changed_at FROM tr_user_monitor WHERE changed_at > ? "
                   "ORDER BY changed_at",
    "query_servers": "SELECT server_name, address, availability_index, heartbeat_at FROM tr_pool_server",
}


def user_name(i):
    return f"user{i:05d}"


def table_owner(i):
    # Independent of the rendezvous hash, so only a sprayer that reads the table gets it right.
    return SERVERS[(i * 7 + i // 3) % 3]


def http_get_json(port, target, timeout=5.0):
    resp = harness.http_request(port, "GET", target, timeout=timeout)
    if resp.status != 200:
        raise AssertionError(f"GET {target}: {resp.status} {resp.body[:200]!r}")
    return json.loads(resp.body)


class MariadbOwnershipBase:
    KIND = None
    db = None
    pool = None
    sprayer = None

    @classmethod
    def setUpClass(cls):
        cls.db = MariadbServer().start()
        values = ",".join(f"('{user_name(i)}', '{table_owner(i)}', UTC_TIMESTAMP(6), "
                          f"UTC_TIMESTAMP(6) - INTERVAL 1 MINUTE)" for i in range(USERS))
        cls.db.sql(f"INSERT INTO tr_user_monitor (user_name, server_name, last_connect_at, changed_at) VALUES {values}")
        cls.db.sql("INSERT INTO tr_pool_server VALUES " +
                   ",".join(f"('{s}', '127.0.0.1', 100, UTC_TIMESTAMP(6))" for s in SERVERS))
        cls.pool = harness.pool(3)
        ownership = dict(QUERIES, **cls.connection(), poll_interval="50ms", reconnect_min="100ms",
                         reconnect_max="500ms", heartbeat_max_age="3s",
                         cache_file=harness.scratch_path("ownership") + ".cache")
        cls.sprayer = Sprayer(harness.sprayer_config(cls.pool, ownership=ownership)).start()

    @classmethod
    def tearDownClass(cls):
        with contextlib.suppress(Exception):
            if cls.sprayer and cls.sprayer.returncode is None:
                cls.sprayer.stop()
        if cls.pool:
            cls.pool.stop()
        if cls.db:
            cls.db.cleanup()

    def ownership(self):
        return http_get_json(self.sprayer.admin_port, "/api/v1/ownership")

    def route(self, user):
        return http_get_json(self.sprayer.admin_port, f"/api/v1/route?user={user}")

    def assign(self, user, server):
        self.db.sql(f"UPDATE tr_user_monitor SET server_name = '{server}', changed_at = UTC_TIMESTAMP(6) "
                    f"WHERE user_name = '{user}'")

    def heartbeat_all(self):
        self.db.sql("UPDATE tr_pool_server SET heartbeat_at = UTC_TIMESTAMP(6)")

    def send(self, indices):
        out = []
        with self.sprayer.client(timeout=10) as c:
            for i in indices:
                resp = c.request("POST", f"/Microsoft-Server-ActiveSync?Cmd=Sync&User={user_name(i)}"
                                         f"&DeviceId=dev{i}&DeviceType=iPhone", body=b"x")
                out.append((i, resp.status, resp.header("X-Served-By")))
        return out

    def assert_on_owners(self, results, context):
        wrong = [(user_name(i), status, served) for i, status, served in results
                 if status != 200 or served != table_owner(i)]
        self.assertEqual(wrong[:10], [], f"{context}: {len(wrong)} of {len(results)} missed their owner")

    @harness.timeout(120)
    def test_a_every_request_lands_on_its_owner(self):
        self.heartbeat_all()
        wait_until(lambda: self.ownership()["users"] == USERS and self.ownership()["source"] == "ok", 30.0,
                   interval=0.05, what=f"the snapshot of {USERS} users ({self.KIND})")
        self.assert_on_owners(self.send(range(0, USERS, 3)), "fresh table")

    @harness.timeout(120)
    def test_b_owner_changes_are_followed(self):
        self.heartbeat_all()
        delays = []
        for k in range(30):
            i = 3 * k + 1
            target = next(s for s in SERVERS if s != table_owner(i))
            start = time.monotonic()
            self.assign(user_name(i), target)
            wait_until(lambda: self.route(user_name(i))["owner"] == target, 5.0, interval=0.002,
                       what=f"{user_name(i)} to move to {target}")
            delays.append(time.monotonic() - start)
            self.assign(user_name(i), table_owner(i))
            wait_until(lambda: self.route(user_name(i))["owner"] == table_owner(i), 5.0, interval=0.002,
                       what=f"{user_name(i)} to move back")
        delays.sort()
        print(f"\n[{self.KIND} watermark, poll 50 ms] commit-to-routing over {len(delays)} changes: "
              f"p50 {statistics.median(delays) * 1000:.1f} ms, p99 {delays[-1] * 1000:.1f} ms", file=sys.stderr)
        self.assertGreater(self.ownership()["rows_skipped"], 0, "the overlap is read again, not applied")

    @harness.timeout(180)
    def test_c_killed_and_restarted_under_load(self):
        self.heartbeat_all()
        pick = lambda rng: (lambda i: ((i,), f"/Microsoft-Server-ActiveSync?Cmd=Sync&User={user_name(i)}"
                                              f"&DeviceId=d{i}&DeviceType=iPhone"))(rng.randrange(USERS))
        load = SyncLoad(self.sprayer.port, pick, threads=3).start()
        try:
            wait_until(lambda: load.count() > 50, 20.0, what="load to flow")
            self.db.kill()
            wait_until(lambda: self.ownership()["source"] == "degraded", 20.0, interval=0.05,
                       what="sprayer to notice MariaDB is gone")
            during = load.count()
            wait_until(lambda: load.count() > during + 100, 30.0, what="requests while the database is down")
            self.db.restart()
            self.heartbeat_all()
            wait_until(lambda: self.ownership()["source"] == "ok", 30.0, interval=0.05, what="the source to reconnect")
        finally:
            load.stop()
        records = load.snapshot()
        bad = [(r[2], r[3], r[4]) for r in records if r[3] != 200 or r[4] != table_owner(r[2])]
        self.assertEqual(bad[:10], [], f"{len(bad)} of {len(records)} requests under load failed or missed the owner")
        target = next(s for s in SERVERS if s != table_owner(5))
        self.assign(user_name(5), target)
        wait_until(lambda: self.route(user_name(5))["owner"] == target, 10.0, interval=0.01,
                   what="changes to resume after the restart")
        self.assign(user_name(5), table_owner(5))
        wait_until(lambda: self.route(user_name(5))["owner"] == table_owner(5), 10.0, interval=0.01,
                   what="the user to move back")

    @harness.timeout(120)
    def test_d_stale_heartbeat_takes_no_new_users(self):
        self.heartbeat_all()
        self.db.sql("UPDATE tr_pool_server SET heartbeat_at = UTC_TIMESTAMP(6) - INTERVAL 1 HOUR "
                    "WHERE server_name = 'pool2'")

        def servers():
            return {s["id"]: s for s in http_get_json(self.sprayer.admin_port, "/api/v1/servers")["servers"]}

        wait_until(lambda: servers()["pool2"].get("pool_heartbeat_stale") is True, 10.0, interval=0.05,
                   what="pool2's heartbeat to count as stale")
        self.assertEqual(harness.metric(self.sprayer.admin_port, "sprayer_server_heartbeat_stale", server="pool2"), 1)
        self.assertEqual(harness.metric(self.sprayer.admin_port, "sprayer_server_heartbeat_stale", server="pool1"), 0)
        # New users (none in the table) avoid pool2; its own users stay on it.
        new_owners = {self.route(f"newcomer{k}")["candidates"][0] for k in range(60)}
        self.assertNotIn("pool2", new_owners)
        own = next(i for i in range(USERS) if table_owner(i) == "pool2")
        self.assertEqual(self.route(user_name(own))["candidates"][0], "pool2")
        self.heartbeat_all()
        wait_until(lambda: servers()["pool2"].get("pool_heartbeat_stale") is False, 10.0, interval=0.05,
                   what="pool2's heartbeat to be current again")


    @harness.timeout(60)
    def test_e_check_queries(self):
        ownership = dict(QUERIES, **self.connection())
        good = harness.write_config(harness.sprayer_config(self.pool, ownership=ownership))
        r = subprocess.run([harness.SPRAYER_BIN, "-t", "--check-queries", "-c", good], capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertRegex(r.stdout, rf"ownership.query_full: {USERS} rows")
        self.assertRegex(r.stdout, r"ownership.query_servers: 3 rows")
        # -t alone never touches the database, so a wrong table passes it.
        ownership["query_delta"] = "SELECT user_name, server_name, last_connect_at FROM tr_user_monitors WHERE changed_at > ?"
        ownership["query_servers"] = "SELECT server_name, address, 'high', heartbeat_at FROM tr_pool_server"
        bad = harness.write_config(harness.sprayer_config(self.pool, ownership=ownership))
        self.assertEqual(subprocess.run([harness.SPRAYER_BIN, "-t", "-c", bad], capture_output=True,
                                        timeout=30).returncode, 0)
        r = subprocess.run([harness.SPRAYER_BIN, "-t", "--check-queries", "-c", bad], capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        line = next(n for n, text in enumerate(open(bad), 1) if "query_delta" in text)
        self.assertIn(f"{bad}:{line}: ownership.query_delta: ", r.stderr)
        self.assertIn("tr_user_monitors", r.stderr)
        self.assertIn("availability of server 'pool1' is not an integer (row 1)", r.stderr)


class MariadbSourceTest(MariadbOwnershipBase, TestCase):
    KIND = "mariadb"

    @classmethod
    def connection(cls):
        return {"source": "mariadb",
                "mariadb": {"host": "127.0.0.1", "port": cls.db.port, "user": "sprayer", "database": "pool",
                            "password_file": cls.db.password_file}}


class OdbcSourceTest(MariadbOwnershipBase, TestCase):
    KIND = "odbc (MariaDB ODBC driver)"

    @classmethod
    def connection(cls):
        return {"source": "odbc",
                "odbc": {"connection": f"DRIVER={{MariaDB Unicode}};SERVER=127.0.0.1;PORT={cls.db.port};"
                                       f"DATABASE=pool;UID=sprayer",
                         "password_file": cls.db.password_file}}


if __name__ == "__main__":
    harness.main()
