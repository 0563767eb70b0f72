"""sprayer's log says what happened, once: only real server transitions (not the healthy
servers whose availability drifted when another one changes), a stall only when the check
confirms it (a quiet server holding a Ping is normal), a stop says how many connections
and parked Pings it waits for and how many it cut, and the descriptor limit is mentioned once,
only when it caps limits.max_connections, with the cap it gives."""

import json
import os
import re
import signal
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Sprayer, SqlitePool, TestCase, wait_until  # noqa: E402

PING = "/Microsoft-Server-ActiveSync?Cmd=Ping&User=amy&DeviceId=d1&DeviceType=iPhone"


class LogTest(TestCase):
    TIMEOUT = 90.0

    def start(self, pool, **kw):
        config = harness.sprayer_config(pool, workers=1, **kw)
        sprayer = Sprayer(config).start()
        self.addCleanup(sprayer.stop)
        return sprayer

    @staticmethod
    def api(sprayer, target):
        resp = harness.http_request(sprayer.admin_port, "GET", target, timeout=5)
        if resp.status != 200:
            raise AssertionError(f"GET {target}: {resp.status}")
        return json.loads(resp.body)

    def lines(self, sprayer, pattern):
        return [line for line in sprayer.stderr_text().splitlines() if re.search(pattern, line)]

    def ping_in_background(self, sprayer, results, timeout=20):
        def run():
            try:
                with sprayer.client(timeout=timeout) as c:
                    results.append(c.request("POST", PING, body=b"p").status)
            except Exception as e:  # noqa: BLE001 - the test reads what happened
                results.append(repr(e))
        t = threading.Thread(target=run, daemon=True)
        t.start()
        self.addCleanup(t.join, timeout + 5)
        return t

    def test_a_only_real_transitions(self):
        db = SqlitePool()
        self.addCleanup(db.cleanup)
        pool = harness.pool(2)
        self.addCleanup(pool.stop)
        for sim in pool:
            db.execute(f"INSERT INTO pool_server VALUES ('{sim.id}', '{sim.address}', CURRENT_TIMESTAMP, 100);")
        sprayer = self.start(pool, ownership={"source": "sqlite", "sqlite_path": db.path, "poll_interval": "100ms"})
        # pool1's index drifts inside "available"; then pool2 really changes.
        db.execute("UPDATE pool_server SET availability = 90 WHERE server_id = 'pool1';")
        wait_until(lambda: next(s for s in self.api(sprayer, "/api/v1/servers")["servers"]
                                if s["id"] == "pool1")["availability"] == 90, 10, what="pool1 at availability 90")
        resp = harness.http_request(sprayer.admin_port, "POST", "/api/v1/servers/pool2/maintenance",
                                     headers=harness.ADMIN_WRITE)
        self.assertStatus(resp, 200, "maintenance")
        wait_until(lambda: self.lines(sprayer, r"server pool2: up -> maintenance \(admin_maintenance\)"), 10,
                   what="pool2's transition in the log")
        # A change of class is news, said once.
        db.execute("UPDATE pool_server SET availability = -10 WHERE server_id = 'pool1';")
        wait_until(lambda: self.lines(sprayer, r"server pool1: availability 90 -> -10 \(constrained"), 10,
                   what="pool1's change of availability class in the log")
        self.assertEqual(self.lines(sprayer, r"server pool\d: up -> up"), [], "no transition that is none")
        self.assertEqual(len(self.lines(sprayer, r"server pool2: up -> maintenance")), 1)

    def test_b_quiet_ping_is_no_stall(self):
        pool = harness.pool(1, args=["--ping-hold", "1500ms"])
        self.addCleanup(pool.stop)
        sprayer = self.start(pool, log_level="debug", health={"stall_after": "300ms", "interval": "10s"})
        results = []
        self.ping_in_background(sprayer, results).join(20)
        self.assertEqual(results, [200])
        wait_until(lambda: self.lines(sprayer, r"server pool1: answers its check while holding requests"), 10,
                   what="the check that clears the stall (debug)")
        self.assertTrue(self.lines(sprayer, r" debug server pool1: requests wait and nothing came back"))
        self.assertEqual(self.lines(sprayer, r" (info|warn) .*nothing came back"), [], "a held Ping is normal")
        self.assertEqual(self.lines(sprayer, r"it is stalled"), [])

    def test_c_stall_confirmed_by_the_check(self):
        pool = harness.pool(1, args=["--ping-hold", "30s"])
        self.addCleanup(pool.stop)
        sprayer = self.start(pool, health={"stall_after": "300ms", "interval": "10s", "timeout": "300ms", "fall": 1},
                             timeouts={"upstream_response": "20s"})
        self.assertStatus(sprayer.request("GET", "/traveler?action=getStatus"), 200, "before the hang")
        pool[0].pause()
        self.addCleanup(pool[0].resume)
        results = []
        self.ping_in_background(sprayer, results, timeout=25)
        line = wait_until(lambda: self.lines(sprayer, r"server pool1: requests waited 300 ms with nothing back, "
                                                      r"and its check failed too \(check_timeout\): it is stalled"),
                          15, what="the confirmed stall in the log")
        self.assertIn(" warn ", line[0])

    def test_d_stop_counts_what_it_waits_for_and_cuts(self):
        pool = harness.pool(1, args=["--ping-hold", "30s"])
        self.addCleanup(pool.stop)
        sprayer = self.start(pool, timeouts={"drain": "1s"})
        results = []
        self.ping_in_background(sprayer, results)
        wait_until(lambda: harness.metric(sprayer.admin_port, "sprayer_upstream_connections") >= 1, 10,
                   what="the Ping parked on pool1")
        wait_until(lambda: next(d for d in self.api(sprayer, "/api/v1/status")["server_details"]
                                if d["id"] == "pool1")["parked"] == 1, 10, what="the Ping counted as parked")
        sprayer.proc.send_signal(signal.SIGTERM)
        sprayer.proc.wait(timeout=15)
        text = sprayer.stderr_text()
        self.assertIn("waiting up to 1000 ms for 1 client connections (1 parked long-polls among them)", text)
        self.assertIn("drain deadline passed: cutting 1 client connections still open (1 parked long-polls)", text)
        self.assertIn("sprayer stopped: 1 client connections were cut (1 parked long-polls)", text)

    def test_e_clean_stop_says_so(self):
        pool = harness.pool(1)
        self.addCleanup(pool.stop)
        sprayer = self.start(pool)
        self.assertStatus(sprayer.request("GET", "/traveler?action=getStatus"), 200, "a request")
        sprayer.proc.send_signal(signal.SIGTERM)
        sprayer.proc.wait(timeout=15)
        text = sprayer.stderr_text()
        self.assertIn("waiting up to", text)
        self.assertIn("sprayer stopped: every connection finished", text)

    def test_f_a_large_table_says_what_it_loads(self):
        db = SqlitePool()
        self.addCleanup(db.cleanup)
        db.bulk_owners([(f"user{i:06d}", "pool1") for i in range(250_000)])
        pool = harness.pool(1)
        self.addCleanup(pool.stop)
        sprayer = self.start(pool, ownership={"source": "sqlite", "sqlite_path": db.path})
        done = wait_until(lambda: self.lines(sprayer, r"ownership source: first snapshot, 250000 users"), 30,
                          what="the end of the load in the log")
        self.assertRegex(done[0], r"\(epoch 250000\), \d+\.\d\d s after the read began")
        self.assertTrue(self.lines(sprayer, r"ownership source: reading the table from SQLite " + re.escape(db.path)))
        progress = self.lines(sprayer, r"ownership source: \d+ rows read so far")
        self.assertEqual([re.search(r"(\d+) rows", p).group(1) for p in progress], ["100000", "200000"])
        text = sprayer.stderr_text()
        self.assertLess(text.index("reading the table"), text.index("100000 rows read so far"))
        self.assertLess(text.index("200000 rows read so far"), text.index("first snapshot"))

    def test_g_descriptor_limit_warned_once_and_only_when_it_caps(self):
        # A shell wrapper lowers both the soft and the hard limit, so sprayer cannot raise it.
        wrapper = harness.scratch_path("low-nofile.sh")
        with open(wrapper, "w") as f:
            f.write(f"#!/bin/sh\nulimit -n 300 || exit 99\nexec {harness.SPRAYER_BIN} \"$@\"\n")
        os.chmod(wrapper, 0o755)
        pool = harness.pool(1)
        self.addCleanup(pool.stop)
        for max_connections, capped in ((1000, True), (50, False)):
            with self.subTest(max_connections=max_connections):
                config = harness.sprayer_config(pool, workers=1, limits={"max_connections": max_connections})
                sprayer = Sprayer(config, binary=wrapper).start()
                try:
                    self.assertStatus(sprayer.request("GET", "/traveler?action=getStatus"), 200, "a request")
                    # One worker, one listener, one server: 32 + 1 + 1 * (4 + 1) reserved, the rest halved.
                    warned = self.lines(sprayer, r"descriptor limit")
                    if capped:
                        self.assertEqual(len(warned), 1, sprayer.stderr_text())
                        self.assertIn("(300) caps client connections at about 131", warned[0])
                        self.assertIn("max_connections=1000", warned[0])
                        self.assertIn("raise the limit to 2038", warned[0])
                    else:
                        self.assertEqual(warned, [], "no warning when the limit leaves room for max_connections")
                finally:
                    sprayer.stop()


if __name__ == "__main__":
    harness.main()
