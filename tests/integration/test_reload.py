#!/usr/bin/env python3
"""Live reload of the whole configuration (SIGHUP and POST /api/v1/reload), against three
poolsims and a SQLite ownership table, with bounded client threads over many users:

a) a bad file is refused by both (the old config keeps serving; the file:line:column: key:
   message comes back in the API answer and in the log); the token guards the endpoint;
   restart-only keys are reported, the rest applied;
b) the seed 000 workflow under steady load: a 4th server is added, checked before it gets
   traffic (it is started stopped, so its checks fail until it is resumed), then takes new
   users; pool3 is drained, its requests reach zero, a long-poll parks on it (its user is
   owned by pool3 in the table), pool3 is removed, and the parked long-poll completes
   normally; zero failed requests over the whole run;
c) a listener is added by reload and accepts; a keep-alive connection on the old port keeps
   working; the listener is removed again and its port closes;
d) reloads in a row (API and SIGHUP) under load, removing and adding back a server, fail no
   request.
"""
import contextlib
import json
import os
import signal
import socket
import threading
import time

import harness
from harness import Poolsim, SqlitePool, Sprayer, TestCase, wait_until

TOKEN = "reload-t0ken"
AUTH = [("Authorization", f"Bearer {TOKEN}"), *harness.ADMIN_WRITE]


def sync_target(user, device="A"):
    return (f"/Microsoft-Server-ActiveSync?Cmd=Sync&User={user}&DeviceId={device}{user}"
            f"&DeviceType=iPhone")


def Load(port, threads=4, users=400):
    """Closed-loop clients over `users` users; records (start, end, user, status, served_by)."""
    def pick(rng):
        user = f"ld{rng.randrange(users):04d}"
        return (user,), sync_target(user)
    return harness.SyncLoad(port, pick, threads=threads)


class ReloadTest(TestCase):
    TIMEOUT = 90

    def setUp(self):
        super().setUp()
        self.db = SqlitePool()
        self.db.bulk_owners([("pinguser", "pool3")])
        self.pool = harness.pool(3)
        self.extra = []  # poolsims a test adds
        self.config = harness.sprayer_config(
            self.pool,
            timeouts={"upstream_connect": "500ms", "drain": "5s"},
            ownership={"source": "sqlite", "sqlite_path": self.db.path, "poll_interval": "50ms"},
            health={"interval": "200ms", "timeout": "150ms", "rise": 2, "fall": 2, "min_hold": "300ms"},
        )
        self.config["admin"]["token"] = TOKEN
        self.sprayer = Sprayer(self.config).start()
        wait_until(lambda: self.api("/api/v1/ownership")["epoch"] >= 1, 10, what="the snapshot")
        wait_until(lambda: all(s["checks"] == "up" for s in self.api("/api/v1/servers")["servers"]),
                   10, what="every server checked up")

    def tearDown(self):
        try:
            with contextlib.suppress(Exception):
                self.sprayer.stop()
            for sim in self.extra:
                with contextlib.suppress(Exception):
                    sim.resume()
                with contextlib.suppress(Exception):
                    sim.stop()
            with contextlib.suppress(Exception):
                self.pool.stop()
        finally:
            self.db.cleanup()
            super().tearDown()

    # -- helpers ---------------------------------------------------------------------------

    def api(self, target, method="GET", expect=200):
        resp = harness.http_request(self.sprayer.admin_port, method, target,
                                    headers=AUTH if method == "POST" else (), timeout=10)
        if resp.status != expect:
            raise AssertionError(f"{method} {target}: {resp.status} {resp.body[:300]!r}")
        return json.loads(resp.body)

    def servers(self):
        return {s["id"]: s for s in self.api("/api/v1/servers")["servers"]}

    def write_config(self, config=None, text=None):
        with open(self.sprayer.config_path, "w") as f:
            f.write(text if text is not None else harness.to_yaml(config))

    def reload(self, config=None, expect=200):
        if config is not None:
            self.write_config(config)
        return self.api("/api/v1/reload", method="POST", expect=expect)

    def with_servers(self, sims):
        config = json.loads(json.dumps(self.config))
        config["servers"] = [{"id": s.id, "address": s.address} for s in sims]
        return config

    def assert_no_failures(self, records, what):
        failed = [r for r in records if r[3] != 200]
        self.assertEqual(failed[:5], [], f"{len(failed)} of {len(records)} requests failed {what}")

    # -- a) bad config ---------------------------------------------------------------------

    def test_a_bad_config_is_refused_by_api_and_sighup(self):
        good = harness.to_yaml(self.config)
        # Line 1 holds an unknown key: the loader is strict.
        self.write_config(text="bogus_key: 1\n" + good)
        answer = self.reload(expect=422)
        self.assertFalse(answer["applied"])
        self.assertTrue(answer["errors"], answer)
        first = answer["errors"][0]
        self.assertTrue(first.startswith(f"{self.sprayer.config_path}:1:1: bogus_key: "), first)
        wait_until(lambda: "reload (admin API)" in self.sprayer.stderr_text() and "refused" in self.sprayer.stderr_text(),
                   5, what="the refusal in the log")
        self.assertStatus(self.sprayer.request("GET", sync_target("aa1")), 200, "after a refused reload")
        port = self.sprayer.admin_port
        self.assertGreaterEqual(harness.metric(port, "sprayer_config_reloads_total", result="refused"), 1)
        self.assertEqual(harness.metric(port, "sprayer_config_last_reload_successful"), 0)
        applied_before = harness.metric(port, "sprayer_config_reloads_total", result="applied")
        self.assertEqual(sorted(self.servers()), ["pool1", "pool2", "pool3"])

        # A wrong value, found at its line, via SIGHUP.
        bad = good.replace('interval: "200ms"', 'interval: "200 parsecs"')
        self.assertNotEqual(bad, good)
        self.write_config(text=bad)
        os.kill(self.sprayer.pid, signal.SIGHUP)
        wait_until(lambda: "reload (SIGHUP)" in self.sprayer.stderr_text() and "health.interval" in self.sprayer.stderr_text(),
                   5, what="the SIGHUP refusal with its key in the log")
        self.sprayer.assert_alive()
        self.assertStatus(self.sprayer.request("GET", sync_target("aa2")), 200, "after a refused SIGHUP")

        # The endpoint wants POST and the token.
        resp = harness.http_request(self.sprayer.admin_port, "POST", "/api/v1/reload", timeout=5)
        self.assertEqual(resp.status, 401, resp.body)
        resp = harness.http_request(self.sprayer.admin_port, "GET", "/api/v1/reload", timeout=5)
        self.assertEqual(resp.status, 405, resp.body)

        # A good file with a restart-only change: applied, and that key reported.
        config = json.loads(json.dumps(self.config))
        config["workers"] = 3
        config["timeouts"]["upstream_connect"] = "700ms"
        answer = self.reload(config)
        self.assertTrue(answer["applied"], answer)
        self.assertEqual(answer["needs_restart"], ["workers"])
        self.assertEqual(harness.metric(port, "sprayer_config_reloads_total", result="applied"), applied_before + 1)
        self.assertEqual(harness.metric(port, "sprayer_config_last_reload_successful"), 1)
        self.assertGreater(harness.metric(port, "sprayer_config_last_reload_success_timestamp_seconds"),
                           harness.metric(port, "sprayer_start_time_seconds"))
        self.assertIn("timeouts", answer["changes"])

        # An admin state set through the API survives a reload that keeps the server.
        self.api("/api/v1/servers/pool2/drain", method="POST")
        config["timeouts"]["upstream_connect"] = "800ms"
        self.assertTrue(self.reload(config)["applied"])
        self.assertEqual(self.servers()["pool2"]["admin"], "drain")
        self.assertEqual(self.servers()["pool2"]["state"], "draining")
        self.assertStatus(self.sprayer.request("GET", sync_target("aa3")), 200, "after a good reload")

    # -- b) seed 000 -----------------------------------------------------------------------

    def test_b_add_check_drain_remove_under_load(self):
        load = Load(self.sprayer.port).start()
        wait_until(lambda: load.count() >= 50, 10, what="load to run")

        # Add pool4, stopped: the checks must fail, and nothing may reach it meanwhile.
        pool4 = Poolsim("pool4").start()
        self.extra.append(pool4)
        pool4.pause()
        answer = self.reload(self.with_servers([*self.pool, pool4]))
        self.assertEqual(answer["changes"], "servers +pool4", answer)
        self.assertIn("pool4", self.servers())
        wait_until(lambda: self.servers()["pool4"]["checks"] == "down", 10, what="pool4's checks to fail")
        t_resume = time.monotonic()
        pool4.resume()
        wait_until(lambda: self.servers()["pool4"]["state"] == "up" and self.servers()["pool4"]["checks"] == "up",
                   10, what="pool4 to come up")
        wait_until(lambda: any(r[4] == "pool4" for r in load.snapshot()), 10, what="new users on pool4")
        early = [r for r in load.snapshot() if r[4] == "pool4" and r[0] < t_resume]
        self.assertEqual(early, [], "requests went to pool4 before its checks passed")
        routed = [self.api(f"/api/v1/route?user=ld{i:04d}")["candidates"][0] for i in range(0, 400, 8)]
        self.assertIn("pool4", routed, "the route API sends no user to pool4")

        # Drain pool3: its load leaves, its count reaches zero.
        self.api("/api/v1/servers/pool3/drain", method="POST")
        wait_until(lambda: self.servers()["pool3"]["active_requests"] == 0, 10,
                   what="pool3's requests to reach zero")

        # pinguser is owned by pool3: draining keeps owned users, so a long-poll parks there.
        ping = {}

        def held_ping():
            start = time.monotonic()
            try:
                resp = self.sprayer.request(
                    "GET", "/Microsoft-Server-ActiveSync?Cmd=Ping&User=pinguser&DeviceId=p1&DeviceType=iPhone&hold=3s",
                    timeout=20)
                ping.update(status=resp.status, served=resp.header("X-Served-By"), elapsed=time.monotonic() - start)
            except Exception as e:
                ping.update(error=repr(e))

        thread = threading.Thread(target=held_ping, daemon=True)
        thread.start()
        wait_until(lambda: self.servers()["pool3"]["active_requests"] == 1, 5, what="the Ping to park on pool3")

        # Remove pool3 while the Ping is parked on it.
        pool4_and_two = [self.pool[0], self.pool[1], pool4]
        answer = self.reload(self.with_servers(pool4_and_two))
        self.assertEqual(answer["changes"], "servers -pool3", answer)
        self.assertNotIn("pool3", self.servers())
        route = self.api("/api/v1/route?user=pinguser")
        self.assertNotIn("pool3", route["candidates"])
        thread.join(15)
        self.assertFalse(thread.is_alive(), "the parked Ping never completed")
        self.assertEqual(ping.get("status"), 200, f"parked Ping on the removed server: {ping}")
        self.assertEqual(ping.get("served"), "pool3", ping)
        self.assertGreaterEqual(ping["elapsed"], 2.9, f"the Ping was cut short: {ping}")

        # pinguser's next request goes to a configured server.
        resp = self.sprayer.request("GET", sync_target("pinguser"))
        self.assertStatus(resp, 200, "pinguser after pool3's removal")
        self.assertIn(resp.header("X-Served-By"), ("pool1", "pool2", "pool4"))

        t_removed = time.monotonic()
        n = load.count()
        wait_until(lambda: load.count() >= n + 100, 10, what="more load after the removal")
        load.stop()
        records = load.snapshot()
        self.assert_no_failures(records, "during add, check, drain and remove")
        late = [r for r in records if r[0] > t_removed and r[4] == "pool3"]
        self.assertEqual(late, [], "requests reached the removed server")
        # The standby of a pair, started fresh with the same file, routes every user the same.
        fresh_config = self.with_servers(pool4_and_two)
        fresh_config["listeners"] = [{"name": "http", "address": f"127.0.0.1:{harness.free_port()}"}]
        fresh_config["admin"] = {"address": f"127.0.0.1:{harness.free_port()}",
                                 "state_file": harness.scratch_path("fresh-admin-state")}
        with Sprayer(fresh_config) as fresh:
            def route(port, user):
                resp = harness.http_request(port, "GET", f"/api/v1/route?user={user}", timeout=5)
                return json.loads(resp.body)["candidates"]
            wait_until(lambda: json.loads(harness.http_request(fresh.admin_port, "GET", "/api/v1/ownership").body)
                       ["epoch"] >= 1, 10, what="the fresh sprayer's snapshot")
            users = ["pinguser"] + [f"ld{i:04d}" for i in range(0, 400, 4)]
            self.assertEqual([route(self.sprayer.admin_port, u) for u in users],
                             [route(fresh.admin_port, u) for u in users],
                             "a reloaded sprayer and a fresh one with the same file route differently")
        by = {}
        for r in records:
            by[r[4]] = by.get(r[4], 0) + 1
        print(f"\n[seed 000] {len(records)} requests, 0 failed; served by {dict(sorted(by.items()))}")

    # -- c) listeners ----------------------------------------------------------------------

    def test_c_listener_added_and_removed(self):
        old = self.sprayer.client(timeout=10)
        self.addCleanup(old.close)
        self.assertStatus(old.request("GET", sync_target("cc1")), 200, "old port, before")
        port2 = harness.free_port()
        config = json.loads(json.dumps(self.config))
        config["listeners"].append({"name": "second", "address": f"127.0.0.1:{port2}"})
        answer = self.reload(config)
        self.assertEqual(answer["changes"], "listeners +second", answer)
        wait_until(lambda: harness.port_accepts(port2), 5, what="the new listener to accept")
        resp = harness.http_request(port2, "GET", sync_target("cc2"))
        self.assertStatus(resp, 200, "new port")
        # The keep-alive connection accepted before the reload still works, on the same socket.
        self.assertStatus(old.request("GET", sync_target("cc3")), 200, "old port, same connection, after")
        self.assertStatus(self.sprayer.request("GET", sync_target("cc4")), 200, "old port, new connection")

        # A new listener whose port another process holds: refused whole, nothing changes.
        holder = socket.socket()
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        held_port = holder.getsockname()[1]
        blocked = json.loads(json.dumps(config))
        blocked["listeners"].append({"name": "blocked", "address": f"127.0.0.1:{held_port}"})
        blocked["timeouts"]["upstream_connect"] = "900ms"
        answer = self.reload(blocked, expect=422)
        self.assertFalse(answer["applied"])
        self.assertIn(f"listener blocked: cannot listen on 127.0.0.1:{held_port}", answer["errors"][0])
        self.assertStatus(harness.http_request(port2, "GET", sync_target("cc6")), 200, "second port after a refusal")

        # And away again: the port closes, the old connection still works.
        answer = self.reload(self.config)
        self.assertEqual(answer["changes"], "listeners -second", answer)
        wait_until(lambda: not harness.port_accepts(port2), 5, what="the removed listener to close")
        self.assertStatus(old.request("GET", sync_target("cc5")), 200, "old port, same connection, at the end")

    # -- d) reloads under load -------------------------------------------------------------

    def test_d_reloads_under_load_fail_no_request(self):
        load = Load(self.sprayer.port, threads=6).start()
        wait_until(lambda: load.count() >= 50, 10, what="load to run")
        reloads = 0
        api_times = []
        for k in range(10):
            config = json.loads(json.dumps(self.config))
            config["timeouts"]["client_idle"] = f"{30 + k}s"
            config["servers"][k % 3]["weight"] = 1 + k % 4
            if k % 4 in (1, 2):
                del config["servers"][2]  # pool3 out while its requests are in flight, then back
            if k % 2:
                self.write_config(config)
                mark = self.sprayer.stderr_text().count("reload (SIGHUP): applied")
                os.kill(self.sprayer.pid, signal.SIGHUP)
                wait_until(lambda: self.sprayer.stderr_text().count("reload (SIGHUP): applied") > mark, 5,
                           what="the SIGHUP reload")
            else:
                t0 = time.monotonic()
                self.assertTrue(self.reload(config)["applied"])
                api_times.append(time.monotonic() - t0)
            reloads += 1
            n = load.count()
            wait_until(lambda: load.count() >= n + 20, 10, what="load between reloads")
        load.stop()
        records = load.snapshot()
        self.assert_no_failures(records, f"across {reloads} reloads")
        print(f"\n[reload under load] {reloads} reloads, {len(records)} requests, 0 failed; "
              f"POST /api/v1/reload answered in {min(api_times) * 1000:.1f}-{max(api_times) * 1000:.1f} ms")


class AccessLogReloadTest(TestCase):
    """Changing access_log (enabled, path, format) and reloading applies it at once: the reload
    names it (never "no change") and the next request is written the new way, in the new place."""

    TIMEOUT = 60

    def setUp(self):
        super().setUp()
        self.pool = harness.pool(1)
        self.config = harness.sprayer_config(self.pool)
        self.sprayer = Sprayer(self.config).start()
        self.first = harness.scratch_path("access-a") + ".log"
        self.second = harness.scratch_path("access-b") + ".log"

    def tearDown(self):
        with contextlib.suppress(Exception):
            self.sprayer.stop()
        self.pool.stop()
        super().tearDown()

    def reload(self, access_log):
        self.config["access_log"] = access_log
        with open(self.sprayer.config_path, "w") as f:
            f.write(harness.to_yaml(self.config))
        resp = harness.http_request(self.sprayer.admin_port, "POST", "/api/v1/reload", headers=harness.ADMIN_WRITE,
                                    timeout=10)
        self.assertEqual(resp.status, 200, resp.body)
        answer = json.loads(resp.body)
        self.assertTrue(answer["applied"], answer)
        self.assertIn("access_log", answer["changes"])
        self.assertNotIn("access_log", answer["needs_restart"])
        return answer

    def lines(self, path):
        return [line for line in harness.read_text(path).splitlines() if line] if os.path.exists(path) else []

    def request(self, user):
        self.assertEqual(self.sprayer.request("GET", sync_target(user)).status, 200)

    def test_access_log_changes_apply_live(self):
        self.request("before")
        for path in (self.first, self.second):
            with open(path, "w"):
                pass  # empty: only what sprayer writes from here on counts
        self.reload({"enabled": True, "path": self.first, "format": "json"})
        self.request("jsonuser")
        line = wait_until(lambda: self.lines(self.first), 5, what="a JSON line in the new access log")[0]
        self.assertEqual(json.loads(line)["user"], "jsonuser")

        self.reload({"enabled": True, "path": self.second, "format": "combined"})
        self.request("combineduser")
        line = wait_until(lambda: self.lines(self.second), 5, what="a combined line in the second file")[0]
        self.assertIn('"GET /Microsoft-Server-ActiveSync?Cmd=Sync&User=combineduser', line)
        self.assertFalse(line.startswith("{"), line)
        self.assertEqual(len(self.lines(self.first)), 1, "the old file must get nothing after the switch")

        self.reload({"enabled": False, "path": self.second, "format": "combined"})
        self.request("offuser")
        # Switched on again: the request made while it was off must be nowhere, the next one is.
        self.reload({"enabled": True, "path": self.second, "format": "json"})
        self.request("backuser")
        wait_until(lambda: any("backuser" in line for line in self.lines(self.second)), 5,
                   what="the line of the request after switching the log back on")
        self.assertFalse(any("offuser" in line for line in self.lines(self.second)),
                         "a request served while the log was off must not be logged")
        self.assertIn("reload (admin API): applied: live: access_log", self.sprayer.stderr_text())


if __name__ == "__main__":
    harness.main()
