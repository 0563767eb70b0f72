"""poolsim as a pool member (--db): registration and heartbeats, claims, the owner-at-arrival
header, takeover of a dead owner's users by compare-and-set, racing claims, admin
reassignments reaching every cache, and serving on while the database is down. Every test
runs on SQLite and on PostgreSQL (a private server from pg_server.py)."""

import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import HttpClient, Poolsim, PostgresPool, SqlitePool, wait_until  # noqa: E402

# Short periods keep each test at a few seconds; the defaults (1s, 3s) are what the demo uses.
HEARTBEAT = 0.2
STALE_AFTER = 1.0


def owner_of(resp):
    """X-Owner of an ActiveSync response; it must be present (possibly empty) with --db."""
    value = resp.header("X-Owner")
    if value is None:
        raise AssertionError(f"no X-Owner header:\n    {resp.describe()}")
    return value


class PoolSuite:
    """The tests; a subclass supplies self.db (SqlitePool or PostgresPool), empty at setUp."""

    TIMEOUT = 60.0

    def sim(self, id, **kw):
        """A started poolsim in the test's pool; stopped at cleanup, where a SIGTERM must end in 0."""
        kw.setdefault("db", self.db)
        kw.setdefault("heartbeat", HEARTBEAT)
        kw.setdefault("stale_after", STALE_AFTER)
        return self.enterContext(Poolsim(id, **kw))

    def sync(self, sim, user):
        resp = sim.sync(user)
        self.assertStatus(resp, 200, f"{user} at {sim.id}")
        self.assertEqual(resp.header("X-Served-By"), sim.id)
        return resp

    # ---- membership ----

    def test_registration_and_heartbeat(self):
        p1 = self.sim("pool1")
        p2 = self.sim("pool2", advertise="pool2.example.com:1352", availability=-1)
        # Registered before the "listening" line: no wait needed.
        rows = self.db.servers()
        self.assertEqual(rows["pool1"]["address"], p1.address)
        self.assertEqual(rows["pool1"]["availability"], 0)
        self.assertEqual(rows["pool2"]["address"], "pool2.example.com:1352")
        self.assertEqual(rows["pool2"]["availability"], -1)
        self.assertLess(rows["pool1"]["age_ms"], 2000)
        first = rows["pool1"]["heartbeat_ms"]
        wait_until(lambda: self.db.servers()["pool1"]["heartbeat_ms"] >= first + 300, 3,
                   what="pool1's heartbeat_at to advance")
        self.assertGreaterEqual(p1.stats()["heartbeats"], 2)

        # Availability is written at once, not at the next heartbeat.
        self.assertEqual(p2.set_availability(50), {"availability": 50})
        self.assertEqual(self.db.servers()["pool2"]["availability"], 50)
        self.assertEqual(p2.stats()["availability"], 50)
        self.assertStatus(p2.post("/poolsim/availability?value=101"), 400, "out of range")
        self.assertStatus(p2.post("/poolsim/availability?value=x"), 400, "not a number")

        # A server that leaves leaves its row; only its heartbeat goes stale.
        p1.stop()
        self.assertIn("pool1", self.db.servers())
        time.sleep(3 * HEARTBEAT)
        self.assertGreater(self.db.servers()["pool1"]["age_ms"], 2 * HEARTBEAT * 1000)

        stats = p2.stats()
        self.assertEqual(stats["db"], self.DB_KIND)
        self.assertTrue(stats["db_connected"])
        self.assertEqual(stats["db_errors"], 0)

    # ---- claims ----

    def test_first_request_claims(self):
        p1 = self.sim("pool1")
        self.assertEqual(owner_of(self.sync(p1, "alice")), "", "free at arrival")
        row = self.db.owner("alice")
        self.assertIsNotNone(row, "no user_owner row after the first request")
        self.assertEqual(row, ("pool1", self.db.epoch()))
        self.assertEqual(owner_of(self.sync(p1, "alice")), "pool1")
        self.assertEqual(p1.owner("alice"), {"user": "alice", "owner": "pool1", "epoch": row[1]})
        # Other spellings of the same user are the same key.
        for spelling in ("DOMAIN\\Alice", "ALICE@example.com", " alice "):
            self.assertEqual(owner_of(self.sync(p1, spelling)), "pool1", spelling)
        self.assertEqual(self.db.epoch(), row[1], "re-reads must not take epochs")
        stats = p1.stats()
        self.assertEqual((stats["claims"], stats["requests_unowned"], stats["requests_owned"],
                          stats["requests_not_owned"]), (1, 1, 4, 0))
        # No user, no ownership.
        resp = p1.get("/Microsoft-Server-ActiveSync?Cmd=Sync")
        self.assertIsNone(resp.header("X-Owner"), resp.describe())
        self.assertEqual(p1.owner("nobody"), {"user": "nobody", "owner": None, "epoch": None})

    def test_no_claim_and_negative_availability_take_no_users(self):
        quiet = self.sim("quiet", claim=False)
        busy = self.sim("busy", availability=-1)
        for sim, user in ((quiet, "bob"), (busy, "carol")):
            for _ in range(2):
                self.assertEqual(owner_of(self.sync(sim, user)), "", f"{user} at {sim.id}")
            self.assertIsNone(self.db.owner(user), f"{sim.id} claimed {user}")
            self.assertEqual(sim.stats()["claims"], 0)
        # Back to available: the next request claims.
        busy.set_availability(0)
        self.assertEqual(owner_of(self.sync(busy, "carol")), "")
        self.assertEqual(self.db.owner("carol")[0], "busy")
        self.assertEqual(owner_of(self.sync(busy, "carol")), "busy")
        # A --no-claim server still names the owner.
        self.assertEqual(owner_of(self.sync(quiet, "carol")), "busy")

    def test_second_poolsim_sees_the_owner(self):
        p1, p2 = self.sim("pool1"), self.sim("pool2")
        self.sync(p1, "alice")
        self.sync(p2, "bob")
        epoch = self.db.epoch()
        for _ in range(3):
            self.assertEqual(owner_of(self.sync(p2, "alice")), "pool1")
            self.assertEqual(owner_of(self.sync(p1, "bob")), "pool2")
        self.assertEqual(self.db.owner("alice")[0], "pool1", "a live owner must keep its user")
        self.assertEqual(self.db.owner("bob")[0], "pool2")
        self.assertEqual(self.db.epoch(), epoch)
        for sim in (p1, p2):
            stats = sim.stats()
            self.assertEqual((stats["claims"], stats["takeovers"], stats["requests_not_owned"]), (1, 0, 3), sim.id)

    # ---- takeover ----

    def test_stale_owner_is_taken_over(self):
        p1, p2 = self.sim("pool1"), self.sim("pool2")
        users = [f"user{i}" for i in range(5)]
        for u in users:
            self.sync(p1, u)
        before = self.db.owners()
        p1.pause()
        # Paused but not yet stale: pool2 must not take over.
        self.assertEqual(owner_of(self.sync(p2, "user0")), "pool1")
        self.assertEqual(self.db.owner("user0"), before["user0"], "taken over while the owner was alive")

        wait_until(lambda: self.db.servers()["pool1"]["age_ms"] > (STALE_AFTER + 0.4) * 1000, 10,
                   what="pool1's heartbeat to go stale")
        for u in users:
            self.assertEqual(owner_of(self.sync(p2, u)), "pool1", f"{u}: owner at arrival")
            owner, epoch = self.db.owner(u)
            self.assertEqual(owner, "pool2", f"{u} not taken over")
            self.assertGreater(epoch, before[u][1])
            self.assertEqual(owner_of(self.sync(p2, u)), "pool2", u)
        after = self.db.owners()
        epochs = sorted(after[u][1] for u in users)
        self.assertEqual(len(set(epochs)), len(users), f"takeover epochs not distinct: {after}")
        self.assertEqual(max(epochs), self.db.epoch())
        self.assertEqual(p2.stats()["takeovers"], len(users))

        # The old owner comes back: it learns the new owners and, pool2 being alive, keeps off.
        p1.resume()
        wait_until(lambda: all(owner_of(p1.sync(u)) == "pool2" for u in users), 3,
                   what="pool1's cache to name pool2")
        self.assertEqual(self.db.owners(), after, "pool1 took users back from a live pool2")
        self.assertEqual(p1.stats()["takeovers"], 0)

    def test_stopped_owner_is_taken_over(self):
        p1, p2 = self.sim("pool1"), self.sim("pool2")
        self.sync(p1, "dora")
        self.assertEqual(p1.stop(), 0)
        wait_until(lambda: self.db.servers()["pool1"]["age_ms"] > (STALE_AFTER + 0.4) * 1000, 10,
                   what="pool1's heartbeat to go stale")
        self.assertEqual(owner_of(self.sync(p2, "dora")), "pool1")
        self.assertEqual(owner_of(self.sync(p2, "dora")), "pool2")
        self.assertEqual(p2.owner("dora")["owner"], "pool2")

    # ---- racing claims ----

    @harness.timeout(120)
    def test_racing_claims(self):
        p1, p2 = self.sim("pool1"), self.sim("pool2")
        users = [f"racer{i:03d}" for i in range(200)]
        base = self.db.epoch()
        seen = []
        errors = []
        lock = threading.Lock()
        threads_per_server = 2
        barrier = threading.Barrier(2 * threads_per_server)

        def run(sim):
            # Every thread asks for the same user at the same moment: both servers find it free
            # and race for it, so one of them loses inside its transaction.
            try:
                with HttpClient(sim.port) as c:
                    for u in users:
                        barrier.wait(timeout=10)
                        resp = c.request("GET", f"/Microsoft-Server-ActiveSync?Cmd=Sync&User={u}")
                        with lock:
                            seen.append((u, resp.status, resp.header("X-Served-By"), resp.header("X-Owner")))
            except Exception as e:  # noqa: BLE001 - reported by the main thread
                barrier.abort()
                with lock:
                    errors.append(repr(e))

        threads = [threading.Thread(target=run, args=(sim,)) for sim in (p1, p2) for _ in range(threads_per_server)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        self.assertEqual(errors, [])
        self.assertEqual(len(seen), 2 * threads_per_server * len(users))
        self.assertEqual({s for _, s, _, _ in seen}, {200})

        owners = self.db.owners()
        self.assertEqual(sorted(owners), users, "missing or extra rows")
        self.assertTrue(all(o in ("pool1", "pool2") for o, _ in owners.values()), owners)
        # One change per user, each under its own epoch, none lost or overwritten: the epochs are
        # exactly the next 200 numbers and the claim counters add up.
        epochs = sorted(e for _, e in owners.values())
        self.assertEqual(epochs, list(range(base + 1, base + 1 + len(users))))
        self.assertEqual(self.db.epoch(), base + len(users))
        s1, s2 = p1.stats(), p2.stats()
        self.assertEqual(s1["claims"] + s2["claims"], len(users), (s1, s2))
        self.assertEqual(s1["claims"], sum(1 for o, _ in owners.values() if o == "pool1"))
        # An owner at arrival is the final owner or nobody, never the loser.
        for u, _, served, arrival in seen:
            self.assertIn(arrival, ("", owners[u][0]), f"{u} at {served}")
        # Both caches converge on the table.
        for sim in (p1, p2):
            wait_until(lambda: all(owner_of(sim.sync(u)) == owners[u][0] for u in users[:50]), 3,
                       what=f"{sim.id}'s cache to match the table")
        self.assertEqual(self.db.owners(), owners, "ownership changed after the race")

    # ---- admin reassignment ----

    def test_assign_reaches_every_cache(self):
        p1, p2 = self.sim("pool1"), self.sim("pool2")
        self.sync(p1, "alice")
        self.assertEqual(owner_of(self.sync(p2, "alice")), "pool1")  # now in pool2's cache
        old_epoch = self.db.owner("alice")[1]

        moved = p1.assign("Alice", "pool2")
        self.assertEqual(moved["user"], "alice")
        self.assertEqual(moved["owner"], "pool2")
        self.assertGreater(moved["epoch"], old_epoch)
        self.assertEqual(self.db.owner("alice"), ("pool2", moved["epoch"]))
        self.assertEqual(p2.owner("alice"), moved)
        start = time.monotonic()
        wait_until(lambda: owner_of(p2.sync("alice")) == "pool2", 1.0, what="pool2's cache to see the move")
        self.assertEqual(owner_of(self.sync(p1, "alice")), "pool2")
        self.assertLess(time.monotonic() - start, 1.0)

        # Written by an admin outside poolsim, by the epoch rule: seen by both caches.
        epoch = self.db.admin_assign("alice", "pool1")
        self.assertGreater(epoch, moved["epoch"])
        for sim in (p1, p2):
            wait_until(lambda: owner_of(sim.sync("alice")) == "pool1", 1.0, what=f"{sim.id} to see the admin write")

        # Unassigned (a NULL tombstone): the next request that sees it claims the user again.
        freed = p2.assign("alice", "")
        self.assertEqual((freed["owner"], self.db.owner("alice")), (None, (None, freed["epoch"])))
        wait_until(lambda: owner_of(p1.sync("alice")) == "", 1.0, what="pool1 to see the tombstone")
        self.assertEqual(self.db.owner("alice")[0], "pool1")
        self.assertGreater(self.db.owner("alice")[1], freed["epoch"])
        self.assertEqual(p1.stats()["assignments"], 1)

        self.assertStatus(p1.post("/poolsim/assign?user=alice"), 400, "no server=")
        self.assertStatus(p1.get("/poolsim/assign?user=alice&server=pool1"), 405, "GET assign")
        self.assertStatus(p1.get("/poolsim/owner"), 400, "no user=")


class SqlitePoolTest(PoolSuite, harness.TestCase):
    DB_KIND = "sqlite"

    def setUp(self):
        super().setUp()
        self.db = SqlitePool()
        self.addCleanup(self.db.cleanup)

    def test_cli_errors(self):
        base = [harness.POOLSIM_BIN, "--id", "x", "--listen", "127.0.0.1:0"]
        for extra in (["--db", "mysql:pool"], ["--db", "sqlite:"], ["--availability", "101"],
                      ["--availability", "-201"], ["--heartbeat", "0"], ["--stale-after", "3"],
                      ["--advertise", "nohost"], ["--refresh", "x"]):
            with self.subTest(extra=extra):
                proc = harness.subprocess.run(base + extra, capture_output=True, timeout=5)
                self.assertEqual(proc.returncode, 2, f"{extra} accepted: {proc.stderr!r}")
                self.assertTrue(proc.stderr, f"{extra}: no message on stderr")

    def test_without_db_nothing_changes(self):
        with Poolsim("plain") as sim:
            resp = sim.sync("alice")
            self.assertStatus(resp, 200, "plain")
            self.assertIsNone(resp.header("X-Owner"), resp.describe())
            self.assertStatus(sim.get("/poolsim/owner?user=alice"), 404, "owner without --db")
            stats = sim.stats()
            self.assertIsNone(stats["db"])
            self.assertEqual(stats["requests_unowned"] + stats["requests_owned"], 0)

    def test_missing_database_file_is_survived(self):
        sim = self.sim("pool1", db="sqlite:" + self.db.path + ".missing")
        self.assertEqual(owner_of(self.sync(sim, "alice")), "")
        stats = sim.stats()
        self.assertFalse(stats["db_connected"])
        self.assertGreater(stats["db_errors"], 0)
        self.assertEqual(sim.stderr_text().count("database failed"), 1, sim.stderr_text())


class PostgresPoolTest(PoolSuite, harness.TestCase):
    DB_KIND = "postgresql"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        try:
            cls.pg = PostgresPool()
        except RuntimeError as e:
            raise harness.unittest.SkipTest(str(e))
        cls.pg.start()

    @classmethod
    def tearDownClass(cls):
        cls.pg.cleanup()
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        self.db = self.pg
        self.db.reset()

    def test_database_down_and_back(self):
        p1 = self.sim("pool1")
        self.sync(p1, "alice")
        self.assertEqual(owner_of(self.sync(p1, "alice")), "pool1")
        # The test server runs with synchronous_commit=off: without a checkpoint the crash below
        # could lose alice's claim (poolsim would cope, reloading the table, but the test wants it).
        self.pg.sql("CHECKPOINT")
        self.pg.kill()
        try:
            wait_until(lambda: not p1.stats()["db_connected"], 5, what="pool1 to notice the database is gone")
            for i in range(20):
                # Known users are still named from the cache; new ones have no owner to name.
                self.assertEqual(owner_of(self.sync(p1, "alice")), "pool1")
                self.assertEqual(owner_of(self.sync(p1, f"new{i}")), "")
            stats = p1.stats()
            self.assertGreater(stats["db_errors"], 0)
            self.assertEqual(stats["claims"], 1)
            self.assertStatus(p1.get("/poolsim/owner?user=alice"), 503, "fresh read while down")
            time.sleep(3 * HEARTBEAT)  # several failed reconnects...
            self.assertEqual(p1.stderr_text().count("database failed"), 1,
                             f"...logged once per failure streak:\n{p1.stderr_text()}")
        finally:
            self.pg.restart()
        wait_until(lambda: p1.stats()["db_connected"], 5, what="pool1 to reconnect")
        beats = p1.stats()["heartbeats"]
        wait_until(lambda: p1.stats()["heartbeats"] > beats, 3, what="heartbeats to resume")
        self.assertIn("database is back", p1.stderr_text())
        self.assertEqual(owner_of(self.sync(p1, "new0")), "")
        self.assertEqual(owner_of(self.sync(p1, "new0")), "pool1")
        self.assertEqual(self.db.owner("new0")[0], "pool1")
        self.assertEqual(p1.owner("alice")["owner"], "pool1")


if __name__ == "__main__":
    harness.main()
