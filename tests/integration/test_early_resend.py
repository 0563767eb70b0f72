#!/usr/bin/env python3
"""A hung owner (SIGSTOP) before the health verdict: requests safe to run twice (parked and new
ActiveSync Pings, GETs) go to the server that takes the user over as soon as the server has
answered nothing for health.stall_after; POST Syncs wait for the verdict. And the converse: a
quiet, healthy server holding parked Pings keeps them.
"""
import json
import threading
import time

import harness
from harness import HttpClient, Sprayer, TestCase, wait_until

STALL_AFTER = 0.3
HOLD = "1s"  # how long poolsim holds each Ping (query hold=), on whichever server gets it


class EarlyResendTest(TestCase):
    TIMEOUT = 90

    def setUp(self):
        super().setUp()
        self.pool = harness.pool(3)
        self.addCleanup(self.pool.stop)
        self.log_path = harness.scratch_path("access") + ".log"
        # One worker: the evidence of a hang is per worker. Checks slow enough that the verdict
        # comes seconds after the stop, so "before the verdict" is visible.
        config = harness.sprayer_config(
            self.pool, workers=1,
            timeouts={"upstream_connect": "300ms", "upstream_response": "30s"},
            health={"interval": "2s", "timeout": "1s", "rise": 2, "fall": 3,
                    "stall_after": f"{int(STALL_AFTER * 1000)}ms"},
            access_log={"enabled": True, "path": self.log_path, "format": "json"},
        )
        self.sprayer = Sprayer(config).start()
        self.addCleanup(self.sprayer.stop)
        wait_until(lambda: all(s["state"] == "up" for s in self.servers()), 10, what="every server up")

    def api(self, target):
        resp = harness.http_request(self.sprayer.admin_port, "GET", target, timeout=5)
        self.assertEqual(resp.status, 200, resp.describe())
        return json.loads(resp.body)

    def servers(self):
        return self.api("/api/v1/servers")["servers"]

    def users_of(self, owner, n):
        """n users whose first candidate is `owner`, each with its takeover server."""
        found = []
        for i in range(2000):
            user = f"er{i:04d}"
            route = self.api(f"/api/v1/route?user={user}")
            if route["candidates"][0] == owner:
                found.append((user, route["candidates"][1]))
                if len(found) == n:
                    return found
        raise AssertionError(f"fewer than {n} users land on {owner}")

    def send(self, method, user, cmd, device, results, key, hold=None):
        """One request on its own connection, recorded as (end, status, served_by) or an error."""
        target = f"/Microsoft-Server-ActiveSync?Cmd={cmd}&User={user}&DeviceId={device}&DeviceType=iPhone"
        if hold:
            target += f"&hold={hold}"
        client = HttpClient(self.sprayer.port, timeout=20)
        results[key] = ("sent", time.monotonic())

        def run():
            try:
                body = b"<Ping/>" if cmd == "Ping" else (b"sync" if method == "POST" else None)
                resp = client.request(method, target, body=body, timeout=20)
                results[key] = (time.monotonic(), resp.status, resp.header("X-Served-By"))
            except Exception as e:  # recorded: the assertions below name it
                results[key] = (time.monotonic(), f"error {e!r}", None)
            finally:
                client.close()

        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t

    def access_lines(self, n):
        def enough():
            try:
                with open(self.log_path) as f:
                    return len(f.readlines()) >= n
            except FileNotFoundError:
                return False
        wait_until(enough, 5, what=f"{n} access log lines")
        with open(self.log_path) as f:
            return [json.loads(line) for line in f]

    @harness.timeout(60)
    def test_a_pings_and_gets_leave_a_stopped_owner_before_the_verdict_syncs_wait(self):
        victim = next(p for p in self.pool if p.id == "pool2")
        users = self.users_of("pool2", 12)
        takeover = dict(users)
        results, threads = {}, []
        # Pings parked on pool2 before it stops.
        for k, (user, _) in enumerate(users[:4]):
            threads.append(self.send("POST", user, "Ping", f"p{k}", results, ("ping", user), hold=HOLD))
        wait_until(lambda: victim.stats()["holds_started"] >= 4, 5, what="four Pings parked on pool2")
        stop_at = time.monotonic()
        victim.pause()
        try:
            # In flight on the stopped server: GETs, a late Ping, and POST Syncs (not safe).
            for k, (user, _) in enumerate(users[4:7]):
                threads.append(self.send("GET", user, "Options", f"g{k}", results, ("get", user)))
            threads.append(self.send("POST", users[7][0], "Ping", "p9", results, ("ping", users[7][0]), hold=HOLD))
            for k, (user, _) in enumerate(users[8:12]):
                threads.append(self.send("POST", user, "Sync", f"s{k}", results, ("sync", user)))
            last_up = time.monotonic()
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                now = time.monotonic()
                if next(s for s in self.servers() if s["id"] == "pool2")["state"] == "down":
                    break
                last_up = now
                time.sleep(0.01)
            else:
                self.fail("pool2 was never marked down")
            down_at = time.monotonic()
            for t in threads:
                t.join(25)
        finally:
            victim.resume()
        verdict = last_up - stop_at
        print(f"\n[early re-send] pool2 still up {verdict * 1000:.0f} ms after SIGSTOP, down seen at "
              f"{(down_at - stop_at) * 1000:.0f} ms", flush=True)
        for (kind, user), r in sorted(results.items()):
            self.assertNotEqual(r[0], "sent", f"{kind} {user} never answered")
            end, status, served = r
            print(f"  {kind:4} {user}: {status} from {served} at {(end - stop_at) * 1000:.0f} ms", flush=True)
            self.assertEqual(status, 200, f"{kind} {user}")
            self.assertEqual(served, takeover[user], f"{kind} {user} not on its takeover server")
            if kind in ("ping", "get"):
                # Early: at stall_after (plus a tick), then the hold; well before the verdict.
                self.assertLess(end, stop_at + verdict - 0.5, f"{kind} {user} waited for the verdict")
            else:
                self.assertGreaterEqual(end, last_up, f"POST Sync of {user} sent again before the verdict")
        self.assertGreater(verdict, 2.0, "the verdict came too early to tell early from late")
        self.assertEqual(harness.metric(self.sprayer.admin_port, "sprayer_early_resends_total", server="pool2"), 8)
        self.assertEqual(harness.metric(self.sprayer.admin_port, "sprayer_early_resends_total", server="pool1"), 0)
        lines = self.access_lines(12)
        early = sorted((line["method"], line["user"]) for line in lines if line["reason"] == "early_resend")
        self.assertEqual(early, sorted([("POST", u) for u, _ in users[:4]] + [("GET", u) for u, _ in users[4:7]] +
                                       [("POST", users[7][0])]), lines)
        self.assertIn("sent to their takeover servers before the check's verdict", self.sprayer.stderr_text())

    @harness.timeout(30)
    def test_b_a_quiet_healthy_server_keeps_its_parked_pings(self):
        users = self.users_of("pool1", 3)
        results, threads = {}, []
        for k, (user, _) in enumerate(users):
            threads.append(self.send("POST", user, "Ping", f"q{k}", results, ("ping", user), hold="1500ms"))
        for t in threads:
            t.join(10)
        for (_, user), r in results.items():
            self.assertNotEqual(r[0], "sent", f"Ping of {user} never answered")
            self.assertEqual((r[1], r[2]), (200, "pool1"), f"Ping of {user}")
        self.assertEqual(harness.metric(self.sprayer.admin_port, "sprayer_early_resends_total", server="pool1"), 0)


if __name__ == "__main__":
    harness.main()
