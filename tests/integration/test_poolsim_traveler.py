"""poolsim in Traveler mode (--traveler): master monitors assigned by availability index by the
server a user's first request reaches (possibly another server, a hop), kept while devices
connect, moved when their server is much less available, expired after --assignment-ttl; hops
stamped (X-Hop) and counted; users found in plain and base64 ActiveSync queries, Basic auth
and Traveler URLs; the default schema and the pool-shaped one (--table-schema pool). Every
test runs on SQLite and on PostgreSQL; sprayer routing in front of the pool hops only on a
new user's first request.

MariaDB: poolsim has a MariaDB backend (mariadb:...); it is exercised only where a MariaDB
fixture exists (tests/integration/mariadb_server.py, not in this tree yet)."""

import base64
import contextlib
import os
import re
import sqlite3
import struct
import sys
import time
from urllib.parse import quote

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Poolsim, PostgresPool, SqlitePool, Sprayer, wait_until  # noqa: E402

HEARTBEAT = 0.2
STALE_AFTER = 1.0
REFRESH = 0.1
SQL_DIR = os.path.join(harness.SOURCE_DIR, "conf", "sql")


def base64_query(user, device=b"dev1", device_type=b"phone", cmd=0):
    """An MS-ASHTTP base64 query (2.2.1.1.1.1): version, command, locale, device id, policy
    key, device type, then tagged parameters; User is tag 8."""
    raw = bytes([141, cmd]) + struct.pack("<H", 0x409) + bytes([len(device)]) + device + bytes([0])
    raw += bytes([len(device_type)]) + device_type + bytes([8, len(user)]) + user.encode()
    return base64.b64encode(raw).decode()


class TravelerSuite:
    """The tests; a subclass supplies self.db (a fresh pool database) and the table questions."""

    TIMEOUT = 90.0
    SCHEMA = "default"

    def sim(self, id, availability=50, args=(), ttl=None, **kw):
        argv = ["--traveler", "--table-schema", self.SCHEMA, *args]
        if ttl is not None:
            argv += ["--assignment-ttl", f"{int(ttl * 1000)}ms"]
        return self.enterContext(Poolsim(id, db=self.db_spec(), availability=availability, heartbeat=HEARTBEAT,
                                         stale_after=STALE_AFTER, refresh=REFRESH, args=argv, **kw))

    def pool(self, *availabilities, **kw):
        sims = [self.sim(f"pool{i + 1}", availability=a, **kw) for i, a in enumerate(availabilities)]
        ids = {s.id for s in sims}
        # Every server must see every other before the first user arrives.
        wait_until(lambda: all(set(s.stats()["traveler"]["view"]) == ids for s in sims), 5,
                   what="every poolsim to see the whole pool")
        return sims

    def request(self, sim, user, target=None, headers=()):
        target = target or f"/Microsoft-Server-ActiveSync?Cmd=Sync&User={quote(user, safe='')}&DeviceId=d1&DeviceType=t"
        resp = sim.get(target, headers=headers)
        self.assertStatus(resp, 200, f"{user} at {sim.id}")
        self.assertEqual(resp.header("X-Served-By"), sim.id)
        self.assertIn(resp.header("X-Hop"), ("0", "1"), resp.describe())
        self.assertEqual(resp.header("X-Hop") == "1", resp.header("X-Master-Monitor") != sim.id, resp.describe())
        return resp

    def wait_seen(self, sims, server, index):
        wait_until(lambda: all(s.stats()["traveler"]["view"].get(server) == index for s in sims), 5,
                   what=f"every poolsim to see {server} at {index}")

    # ---- assignment and hops ----

    def test_first_request_assigns_by_availability_and_hops(self):
        p1, p2, p3 = self.pool(10, 20, 90)
        first = self.request(p1, "alice")
        # pool3 is the only server within reach of the best index: the master monitor, elsewhere.
        self.assertEqual(first.header("X-Master-Monitor"), "pool3", first.describe())
        self.assertEqual(first.header("X-Hop"), "1")
        self.assertEqual(first.header("X-Owner"), "", "no master monitor when it arrived")
        self.assertEqual(self.table_owner("alice"), "pool3")
        again = self.request(p1, "alice")
        self.assertEqual((again.header("X-Owner"), again.header("X-Hop")), ("pool3", "1"))
        home = self.request(p3, "alice")
        self.assertEqual(home.header("X-Hop"), "0", home.describe())
        t1, t3 = p1.stats()["traveler"], p3.stats()["traveler"]
        self.assertEqual((t1["hops"], t1["assigned"], t1["local"]), (2, 1, 0), t1)
        self.assertEqual((t3["hops"], t3["local"], t3["assigned"]), (0, 1, 0), t3)

    def test_round_robin_hops_two_thirds(self):
        sims = self.pool(50, 50, 50)
        users = [f"rr{i:03d}" for i in range(90)]
        hops = total = 0
        for k in range(3):
            for i, user in enumerate(users):
                resp = self.request(sims[(i + k) % 3], user)
                hops += resp.header("X-Hop") == "1"
                total += 1
        rate = hops / total
        print(f"round robin over 3 servers: {hops} of {total} requests hopped ({rate:.1%})")
        self.assertGreater(rate, 0.5)
        self.assertLess(rate, 0.8)
        self.assertEqual(sum(s.stats()["traveler"]["hops"] for s in sims), hops, "every hop counted once")
        masters = [self.table_owner(u) for u in users]
        for s in sims:
            self.assertGreater(masters.count(s.id), 10, f"equal servers share the users: {s.id}")

    def test_users_found_as_traveler_finds_them(self):
        p1, p2 = self.pool(90, 10)
        b64 = self.request(p2, "erin", target=f"/Microsoft-Server-ActiveSync?{base64_query('erin')}")
        self.assertEqual((b64.header("X-Master-Monitor"), b64.header("X-User")), ("pool1", "erin"), b64.describe())
        self.assertEqual(self.table_owner("erin"), "pool1")
        auth = "Basic " + base64.b64encode(b"ACME\\Frank:secret").decode()
        basic = self.request(p2, "frank", target="/Microsoft-Server-ActiveSync?Cmd=Sync",
                             headers=[("Authorization", auth)])
        self.assertEqual(basic.header("X-Master-Monitor"), "pool1", basic.describe())
        # One person, three spellings: one key, one master monitor, no second assignment.
        self.request(p1, "frank@acme.example")
        self.request(p1, "", target=f"/servlet/traveler?user={quote('CN=Frank/O=Acme')}")
        self.assertEqual(self.table_owner("frank"), "pool1")
        self.assertEqual(p1.stats()["traveler"]["assigned"] + p2.stats()["traveler"]["assigned"], 2)
        self.assertEqual(p1.stats()["traveler"]["local"], 2)

    # ---- kept, moved, expired ----

    def test_kept_while_connecting_then_expires(self):
        ttl = 3.0  # pacing below is ttl / 5: a busy machine must not stall a whole TTL
        p1, p2 = self.pool(60, 30, ttl=ttl)
        self.assertEqual(self.request(p1, "gina").header("X-Master-Monitor"), "pool1")
        p2.set_availability(100)  # 40 points better: not enough to move (threshold 50)...
        self.wait_seen([p1], "pool2", 100)
        deadline = time.monotonic() + 2 * ttl
        while time.monotonic() < deadline:  # ...and connections keep the assignment past the TTL
            resp = self.request(p1, "gina")
            self.assertEqual((resp.header("X-Master-Monitor"), resp.header("X-Hop")), ("pool1", "0"))
            time.sleep(ttl / 5)
        self.assertEqual(p1.stats()["traveler"]["expired"], 0)
        self.assertGreater(p1.stats()["traveler"]["touches"], 0)
        # Idle: the master monitor's sweep clears the assignment.
        wait_until(lambda: self.table_owner("gina") is None, 4 * ttl, what="gina's assignment to expire")
        self.assertEqual(p1.stats()["traveler"]["expired"], 1)
        # The next connection assigns afresh, by availability: pool2 now.
        resp = self.request(p1, "gina")
        self.assertEqual((resp.header("X-Master-Monitor"), resp.header("X-Hop")), ("pool2", "1"), resp.describe())
        self.assertEqual(self.table_owner("gina"), "pool2")

    def test_master_monitor_moves_when_availability_drops(self):
        p1, p2, p3 = self.pool(90, 50, 30)
        self.assertEqual(self.request(p1, "hugo").header("X-Master-Monitor"), "pool1")
        before = self.changed_at("hugo")
        p1.set_availability(-50)  # constrained: 100 points below pool2
        resp = self.request(p1, "hugo")
        self.assertEqual((resp.header("X-Owner"), resp.header("X-Master-Monitor"), resp.header("X-Hop")),
                         ("pool1", "pool2", "1"), resp.describe())
        self.assertEqual(self.table_owner("hugo"), "pool2")
        self.assertEqual(p1.stats()["traveler"]["moved"], 1)
        self.assertGreater(self.changed_at("hugo"), before, "changed_at follows the master monitor")
        self.wait_seen([p2], "pool1", -50)
        self.assertEqual(self.request(p2, "hugo").header("X-Hop"), "0")
        # -200: no new work, but the users bound to it stay.
        p2.set_availability(-200)
        self.wait_seen([p3], "pool2", -200)
        resp = self.request(p2, "hugo")
        self.assertEqual((resp.header("X-Master-Monitor"), resp.header("X-Hop")), ("pool2", "0"), resp.describe())
        resp = self.request(p2, "ivan")
        self.assertEqual((resp.header("X-Master-Monitor"), resp.header("X-Hop")), ("pool3", "1"),
                         f"-200 takes no new user: {resp.describe()}")

    def test_dead_master_monitor_is_replaced(self):
        p1, p2 = self.pool(90, 10)
        self.assertEqual(self.request(p2, "jo").header("X-Master-Monitor"), "pool1")
        p1.kill()
        wait_until(lambda: p2.stats()["traveler"]["view"].get("pool1", 0) is None, 5,
                   what="pool2 to see pool1's heartbeat go stale")
        resp = self.request(p2, "jo")
        self.assertEqual((resp.header("X-Master-Monitor"), resp.header("X-Hop")), ("pool2", "0"), resp.describe())
        self.assertEqual(p2.stats()["traveler"]["taken_over"], 1)
        self.assertEqual(self.table_owner("jo"), "pool2")

    # ---- with sprayer in front ----

    def test_sprayer_routes_and_only_first_requests_hop(self):
        sims = self.pool(50, 55, 60)
        users = [f"sp{i:03d}" for i in range(60)]
        config = harness.sprayer_config(sims, ownership=self.ownership_config())
        with Sprayer(config).start() as sprayer, sprayer.client() as c:
            first = [c.request("GET", f"/Microsoft-Server-ActiveSync?Cmd=Sync&User={u}&DeviceId=d&DeviceType=t")
                     for u in users]
            self.assertTrue(all(r.status == 200 for r in first))
            first_hops = sum(r.header("X-Hop") == "1" for r in first)
            wait_until(lambda: self.sprayer_users(sprayer) >= len(users), 10,
                       what="sprayer to read every new assignment")
            later = [c.request("GET", f"/Microsoft-Server-ActiveSync?Cmd=Sync&User={u}&DeviceId=d{k}&DeviceType=t")
                     for k in range(3) for u in users]
            hops = [(r.header("X-User"), r.header("X-Served-By"), r.header("X-Master-Monitor"))
                    for r in later if r.header("X-Hop") != "0"]
            print(f"sprayer: {first_hops} of {len(users)} first requests hopped, "
                  f"{len(hops)} of {len(later)} later ones")
            self.assertEqual(hops, [], "once the table is read, no request hops")
            # Rendezvous for a new user agrees with the pool's choice about a third of the time.
            self.assertGreater(first_hops, 0, "first requests may hop: the pool decides")
        self.assertEqual(sum(s.stats()["traveler"]["hops"] for s in sims), first_hops)

    def sprayer_users(self, sprayer):
        resp = harness.http_request(sprayer.admin_port, "GET", "/api/v1/ownership")
        return resp.json()["users"]


class SqliteDefault(TravelerSuite, harness.TestCase):
    def setUp(self):
        super().setUp()
        self.db = SqlitePool()
        self.addCleanup(self.db.cleanup)

    def db_spec(self):
        return self.db.spec

    def table_owner(self, user):
        row = self.db.owner(user)
        return row[0] if row else None

    def changed_at(self, user):
        return self.db.owner(user)[1]  # the epoch: grows with every change

    def ownership_config(self):
        return {"source": "sqlite", "sqlite_path": self.db.path, "poll_interval": "50ms"}

    def test_cli(self):
        base = [harness.POOLSIM_BIN, "--id", "x", "--listen", "127.0.0.1:0"]
        for extra in (["--table-schema", "pool"], ["--db", "mariadb:dbname=x"], ["--traveler", "--table-schema", "x"],
                      ["--traveler", "--assignment-ttl", "0"], ["--traveler", "--move-threshold", "-1"],
                      ["--traveler", "--jitter", "101"], ["--traveler", "--db", "mariadb:port=x dbname=p"]):
            with self.subTest(extra=extra):
                proc = harness.subprocess.run(base + extra, capture_output=True, timeout=5)
                self.assertEqual(proc.returncode, 2, f"{extra} accepted: {proc.stderr!r}")
                self.assertTrue(proc.stderr, f"{extra}: no message on stderr")

    def test_load_model_moves_the_index(self):
        with Poolsim("solo", db=self.db.spec, heartbeat=0.05,
                     args=["--traveler", "--capacity", "10", "--jitter", "3", "--seed", "7"]) as sim:
            self.assertGreaterEqual(sim.stats()["availability"], 97)
            self.assertFalse(sim.stats()["traveler"]["pinned"])
            for i in range(5):
                self.request(sim, f"load{i}")
            # 5 users of 10: 50 +- 3 by the model, from the next heartbeat on.
            wait_until(lambda: 47 <= sim.stats()["availability"] <= 53, 5, what="the index to follow the load")
            self.assertEqual(sim.set_availability(-200), {"availability": -200})
            self.assertTrue(sim.stats()["traveler"]["pinned"])
            resp = sim.post("/poolsim/availability?value=model")
            self.assertStatus(resp, 200, "unpin")
            self.assertLessEqual(abs(resp.json()["availability"] - 50), 3)


class SqlitePoolSchema(TravelerSuite, harness.TestCase):
    """The same pool on the pool-shaped schema (conf/sql/schema-pool-sqlite.sql)."""

    SCHEMA = "pool"

    def setUp(self):
        super().setUp()
        self.path = harness.scratch_path("pool-schema") + ".db"
        with open(os.path.join(SQL_DIR, "schema-pool-sqlite.sql")) as f, \
                contextlib.closing(sqlite3.connect(self.path)) as c:
            c.executescript(f.read())
        self.addCleanup(os.unlink, self.path)

    def db_spec(self):
        return "sqlite:" + self.path

    def rows(self, query, params=()):
        with contextlib.closing(sqlite3.connect(self.path, timeout=10.0)) as c:
            return c.execute(query, params).fetchall()

    def table_owner(self, user):
        rows = self.rows("SELECT server_name FROM tr_user_monitor WHERE user_name = ?", (user,))
        return rows[0][0] if rows else None

    def changed_at(self, user):
        return self.rows("SELECT changed_at FROM tr_user_monitor WHERE user_name = ?", (user,))[0][0]

    def test_sprayer_routes_and_only_first_requests_hop(self):
        self.skipTest("sprayer reads the default schema; a pool-schema source is separate work")

    def test_pool_schema_rows(self):
        stamp = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}$")
        p1, p2 = self.pool(90, 10, ttl=2.0)
        self.request(p2, "kim")
        (server, connect, changed), = self.rows(
            "SELECT server_name, last_connect_at, changed_at FROM tr_user_monitor WHERE user_name = 'kim'")
        self.assertEqual(server, "pool1")
        self.assertRegex(connect, stamp)
        self.assertRegex(changed, stamp)
        servers = {r[0]: r[1:] for r in self.rows("SELECT server_name, address, availability_index, heartbeat_at "
                                                   "FROM tr_pool_server")}
        self.assertEqual(servers["pool1"][:2], (p1.address, 90))
        self.assertRegex(servers["pool2"][2], stamp)

        # A connection later than 1/8 of the TTL moves last_connect_at, not changed_at.
        def connected_again():
            self.request(p1, "kim")
            return self.rows("SELECT last_connect_at FROM tr_user_monitor")[0][0] > connect

        wait_until(connected_again, 3, interval=0.1, what="last_connect_at to advance")
        self.assertEqual(self.changed_at("kim"), changed)
        self.assertEqual([c[1] for c in self.rows("PRAGMA table_info(tr_user_monitor)")],
                         ["user_name", "server_name", "last_connect_at", "changed_at"])


class PostgresBase:
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        try:
            cls.pg = PostgresPool()
        except RuntimeError as e:
            raise harness.unittest.SkipTest(str(e))
        cls.pg.start()
        cls.pg.psql_file(os.path.join(SQL_DIR, "schema-pool-postgresql.sql"))

    @classmethod
    def tearDownClass(cls):
        cls.pg.cleanup()
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        self.pg.reset()
        self.pg.sql("DROP TABLE IF EXISTS poolsim_user_connect; TRUNCATE tr_user_monitor, tr_pool_server;")

    def db_spec(self):
        return self.pg.spec

    def rows(self, query):
        return self.pg.rows(query)


class PostgresDefault(PostgresBase, TravelerSuite, harness.TestCase):
    def table_owner(self, user):
        row = self.pg.owner(user)
        return row[0] if row else None

    def changed_at(self, user):
        return self.pg.owner(user)[1]

    def ownership_config(self):
        return {"source": "postgresql", "postgresql": self.pg.conninfo}


class PostgresPoolSchema(PostgresBase, TravelerSuite, harness.TestCase):
    SCHEMA = "pool"

    def table_owner(self, user):
        rows = self.rows(f"SELECT COALESCE(server_name, '{self.pg.NULL}') FROM tr_user_monitor "
                         f"WHERE user_name = '{user}'")
        return rows[0][0] if rows else None

    def changed_at(self, user):
        return self.rows(f"SELECT changed_at FROM tr_user_monitor WHERE user_name = '{user}'")[0][0]

    def test_sprayer_routes_and_only_first_requests_hop(self):
        self.skipTest("sprayer reads the default schema; the pool schema's watermark source is separate work")

    def test_pool_schema_types(self):
        self.pool(90)
        cols = self.rows("SELECT table_name, column_name, data_type FROM information_schema.columns "
                         "WHERE table_name IN ('tr_user_monitor', 'tr_pool_server') ORDER BY table_name, ordinal_position")
        self.assertIn(("tr_user_monitor", "changed_at", "timestamp without time zone"), cols)
        self.assertIn(("tr_pool_server", "availability_index", "integer"), cols)
        self.assertNotIn("epoch", [c[1] for c in cols])
        # The stored times are UTC: within seconds of the server's UTC clock.
        (skew,), = self.rows("SELECT abs(EXTRACT(EPOCH FROM (now() AT TIME ZONE 'UTC') - heartbeat_at))::int "
                             "FROM tr_pool_server")
        self.assertLess(int(skew), 5)


if __name__ == "__main__":
    harness.main()
