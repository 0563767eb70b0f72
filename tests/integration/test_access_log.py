"""The access log end to end: JSON lines with every field checked against the requests sent,
the combined format, no password or Authorization header in the log, SIGUSR1 after a rename
(logrotate) makes a new file, a SIGTERM drain lets an in-flight request finish, logs it,
and exits 0, and after a reload that removed the first server every line still names the
server that answered."""

import base64
import json
import os
import re
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import HttpClient, Sprayer, TestCase, build_request, wait_until  # noqa: E402

PASSWORD = "S3cr3t-Pa55w0rd!"


def lines_of(path):
    text = harness.read_text(path)
    return [line for line in text.splitlines() if line]


class AccessLogJsonTest(TestCase):
    TIMEOUT = 60.0

    @classmethod
    def setUpClass(cls):
        cls.pool = harness.pool(2)
        cls.addClassCleanup(cls.pool.stop)
        cls.log_path = harness.scratch_path("access") + ".log"
        config = harness.sprayer_config(cls.pool, access_log={"enabled": True, "path": cls.log_path,
                                                              "format": "json"})
        cls.sprayer = Sprayer(config).start()
        cls.addClassCleanup(cls.sprayer.stop)

    def wait_lines(self, path, n, what):
        return wait_until(lambda: len(lines_of(path)) >= n and lines_of(path), 5,
                          what=f"{n} access log lines ({what}) in {path}")

    def test_a_fields_and_no_secrets(self):
        start = len(lines_of(self.log_path))
        auth = base64.b64encode(f"Alice.Example:{PASSWORD}".encode()).decode()
        with self.sprayer.client(timeout=10) as c:
            resp = c.request("POST", "/Microsoft-Server-ActiveSync?Cmd=Sync&DeviceId=d1&DeviceType=iPhone",
                             headers=[("Authorization", f"Basic {auth}"), ("User-Agent", "Apple-iPhone9C1/1402.1")],
                             body=b"0123456789")
            self.assertStatus(resp, 200, "Sync with Basic auth")
            served_by = resp.header("X-Served-By")
            resp2 = c.request("GET", "/traveler?action=getStatus")
            self.assertStatus(resp2, 200, "status probe")
        lines = self.wait_lines(self.log_path, start + 2, "two requests")[start:]
        records = [json.loads(line) for line in lines]
        sync, probe = records[0], records[1]
        self.assertEqual(sync["method"], "POST")
        self.assertTrue(sync["target"].startswith("/Microsoft-Server-ActiveSync?Cmd=Sync"))
        self.assertEqual(sync["status"], 200)
        self.assertEqual(sync["client"], "127.0.0.1")
        self.assertEqual(sync["user"], "alice.example", "the normalised user key")
        self.assertEqual(sync["server"], served_by)
        self.assertIn(sync["reason"], ("new_user", "owner"))
        self.assertEqual(sync["protocol"], "HTTP/1.1")
        self.assertGreater(sync["bytes_in"], 10)  # head plus the 10-byte body
        self.assertGreater(sync["bytes_out"], 0)
        self.assertGreaterEqual(sync["duration_ms"], sync["ttfb_ms"])
        self.assertIsNotNone(sync["connect_ms"], "first request: a new upstream connection")
        self.assertEqual(sync["user_agent"], "Apple-iPhone9C1/1402.1")
        self.assertTrue(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", sync["time"]), sync["time"])
        self.assertIsNone(probe["user"])
        self.assertEqual(probe["reason"], "no_user")
        self.assertEqual(probe["status"], 200)
        text = harness.read_text(self.log_path)
        self.assertNotIn(PASSWORD, text)
        self.assertNotIn(auth, text)
        self.assertNotIn("Authorization", text)

    def test_b_error_and_unanswered_requests_are_logged(self):
        start = len(lines_of(self.log_path))
        # A client that leaves while its Ping is held: logged with status 0.
        c = HttpClient(self.sprayer.port, timeout=5)
        c.send(build_request("GET", "/Microsoft-Server-ActiveSync?Cmd=Ping&User=bob&hold=30s"))
        wait_until(lambda: sum(p.stats()["holds_started"] for p in self.pool) >= 1, 5, what="the Ping held")
        c.close()
        records = [json.loads(x) for x in self.wait_lines(self.log_path, start + 1, "the abandoned Ping")[start:]]
        ping = records[0]
        self.assertEqual(ping["status"], 0)
        self.assertEqual(ping["user"], "bob")
        self.assertIsNone(ping["ttfb_ms"])
        # A head sprayer rejects itself (no Host on HTTP/1.1): logged as answered locally.
        with HttpClient(self.sprayer.port, timeout=5) as c:
            c.send(b"GET /Microsoft-Server-ActiveSync?Cmd=Sync&User=zed HTTP/1.1\r\n\r\n")
            self.assertStatus(c.read_response(), 400, "request without Host")
        records = [json.loads(x) for x in self.wait_lines(self.log_path, start + 2, "the rejected head")[start:]]
        bad = records[1]
        self.assertEqual((bad["status"], bad["reason"], bad["server"]), (400, "local", None))
        self.assertEqual(bad["method"], "GET")
        self.assertTrue(bad["target"].startswith("/Microsoft-Server-ActiveSync"), bad)

    def test_bb_masked_queries_raw_bytes_and_rejection_reasons(self):
        start = len(lines_of(self.log_path))
        # A password in the query (some clients put it there): masked by default.
        self.assertStatus(self.sprayer.request("GET", f"/traveler?user=dora&Password={PASSWORD}&pwd={PASSWORD}"),
                          200, "Traveler request with a password in the query")
        # Bytes that are not UTF-8 in the target: the line stays valid JSON.
        with HttpClient(self.sprayer.port, timeout=5) as c:
            c.send(b"GET /traveler?user=eve&x=\xff\xc3\xa9\xc0 HTTP/1.1\r\nHost: a\r\n\r\n")
            raw_status = c.read_response().status
        # Refused by a rule: Transfer-Encoding sprayer cannot frame.
        with HttpClient(self.sprayer.port, timeout=5) as c:
            c.send(b"POST /traveler?user=fay HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked, x\r\n\r\n")
            self.assertStatus(c.read_response(), 400, "a bad Transfer-Encoding")
        with HttpClient(self.sprayer.port, timeout=5) as c:
            c.send(b"GET /traveler?user=gus HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
            self.assertStatus(c.read_response(), 400, "two Host headers")
        lines = self.wait_lines(self.log_path, start + 4, "four requests")[start:]
        records = [json.loads(line) for line in lines]  # every line is valid JSON
        self.assertNotIn(PASSWORD, "\n".join(lines))
        # Workers write their lines in batches: find each request by its user.
        by_user = {re.search(r"user=(\w+)", r["target"]).group(1): (r, line) for r, line in zip(records, lines)}
        masked = by_user["dora"][0]
        self.assertEqual(masked["target"], "/traveler?user=dora&Password=***&pwd=***")
        self.assertNotIn("rejected", masked, "a request that was served has no rejection")
        raw, raw_line = by_user["eve"]
        self.assertEqual(raw["status"], raw_status)
        # 0xff and 0xc0 are no UTF-8: each is written as \u00XX; é (0xc3 0xa9) is kept.
        self.assertEqual(raw["target"], "/traveler?user=eve&x=\u00ff\u00e9\u00c0")
        self.assertIn("x=\\u00ff\u00e9\\u00c0", raw_line)
        fay, gus = by_user["fay"][0], by_user["gus"][0]
        self.assertEqual((fay["status"], fay["reason"], fay["rejected"]), (400, "local", "bad_transfer_encoding"))
        self.assertEqual((gus["status"], gus["rejected"]), (400, "duplicate_host"))

    def test_c_sigusr1_reopens_after_rename(self):
        self.sprayer.request("GET", "/traveler?action=getStatus")
        self.wait_lines(self.log_path, 1, "before rotation")
        rotated = self.log_path + ".1"
        os.rename(self.log_path, rotated)
        before_rotation = len(lines_of(rotated))
        self.sprayer.kill(signal.SIGUSR1)
        wait_until(lambda: os.path.exists(self.log_path), 5, what="SIGUSR1 to create a new access log")
        for _ in range(3):
            self.assertStatus(self.sprayer.request("GET", "/traveler?action=getStatus"), 200, "after rotation")
        self.wait_lines(self.log_path, 3, "after rotation")
        self.assertEqual(len(lines_of(rotated)), before_rotation, "nothing more went to the renamed file")
        self.sprayer.assert_alive()


class AccessLogAfterReloadTest(TestCase):
    """Servers keep their slot across reloads while their position in the list changes: the
    log and the per-server metrics must follow the slot."""
    TIMEOUT = 60.0

    def test_server_field_after_sighup_removed_the_first_server(self):
        with harness.pool(3) as pool:
            log_path = harness.scratch_path("access-reload") + ".log"
            config = harness.sprayer_config(pool, access_log={"enabled": True, "path": log_path, "format": "json"})
            sprayer = Sprayer(config).start()
            self.addCleanup(sprayer.stop)
            self.assertStatus(sprayer.request("GET", "/traveler?action=getStatus"), 200, "before the reload")
            config["servers"] = config["servers"][1:]
            with open(sprayer.config_path, "w") as f:
                f.write(harness.to_yaml(config))
            sprayer.kill(signal.SIGHUP)
            wait_until(lambda: harness.metric(sprayer.admin_port, "sprayer_config_reloads_total", result="applied") >= 1,
                       10, what="the SIGHUP reload applied")
            before = {sid: harness.metric(sprayer.admin_port, "sprayer_requests_completed_total", server=sid,
                                          code="2xx", reason="new_user")
                      if self.has_series(sprayer, sid) else 0.0 for sid in ("pool2", "pool3")}
            served = {}
            with sprayer.client(timeout=10) as c:
                for i in range(40):
                    target = f"/Microsoft-Server-ActiveSync?Cmd=Sync&User=reload{i:02d}&DeviceId=d{i}&DeviceType=iPhone"
                    resp = c.request("POST", target, body=b"x")
                    self.assertStatus(resp, 200, target)
                    served[target] = resp.header("X-Served-By")
            self.assertEqual(set(served.values()), {"pool2", "pool3"}, "40 users spread over both servers")
            wait_until(lambda: sum(json.loads(x)["target"] in served for x in lines_of(log_path)) >= len(served), 5,
                       what="a log line for every request after the reload")
            logged = {r["target"]: r["server"] for r in map(json.loads, lines_of(log_path)) if r["target"] in served}
            self.assertEqual(logged, served, "the access log names the server that answered (X-Served-By)")
            for sid in ("pool2", "pool3"):
                got = harness.metric(sprayer.admin_port, "sprayer_requests_completed_total", server=sid, code="2xx",
                                     reason="new_user") - before[sid]
                self.assertEqual(got, sum(v == sid for v in served.values()), f"requests counted for {sid}")

    @staticmethod
    def has_series(sprayer, sid):
        try:
            harness.metric(sprayer.admin_port, "sprayer_requests_completed_total", server=sid, code="2xx",
                           reason="new_user")
            return True
        except AssertionError:
            return False


class AccessLogCombinedAndShutdownTest(TestCase):
    TIMEOUT = 60.0

    def test_combined_format_and_drain_on_sigterm(self):
        with harness.pool(1) as pool:
            log_path = harness.scratch_path("access-combined") + ".log"
            config = harness.sprayer_config(pool, timeouts={"drain": "10s"},
                                            access_log={"enabled": True, "path": log_path, "format": "combined"})
            sprayer = Sprayer(config).start()
            self.addCleanup(sprayer.kill)
            auth = base64.b64encode(f"carol:{PASSWORD}".encode()).decode()
            with sprayer.client(timeout=10) as c:
                resp = c.request("GET", "/traveler?user=carol", headers=[("Authorization", f"Basic {auth}"),
                                                                         ("User-Agent", 'Quote"Agent')])
                self.assertStatus(resp, 200, "Traveler request")
            # An in-flight request (held 1.5 s by the pool server) when SIGTERM arrives: it must
            # complete, be logged, and sprayer must then exit 0 well before the drain bound.
            held = HttpClient(sprayer.port, timeout=10)
            self.addCleanup(held.close)
            held.send(build_request("GET", "/Microsoft-Server-ActiveSync?Cmd=Ping&User=dan&hold=1500ms"))
            wait_until(lambda: pool[0].stats()["holds_started"] >= 1, 5, what="the Ping held")
            sent = time.monotonic()
            sprayer.kill(signal.SIGTERM)
            resp = held.read_response(timeout=10)
            self.assertStatus(resp, 200, "in-flight request during the drain")
            try:
                sprayer.proc.wait(timeout=8)
            except harness.subprocess.TimeoutExpired:
                self.fail(f"sprayer still running 8 s after SIGTERM with nothing in flight\n{sprayer.diagnostics()}")
            self.assertEqual(sprayer.proc.returncode, 0, sprayer.diagnostics())
            sprayer.stop()  # already exited: closes its log file
            self.assertLess(time.monotonic() - sent, 8)
            lines = lines_of(log_path)
            self.assertEqual(len(lines), 2, "\n".join(lines))
            first = re.match(r'^127\.0\.0\.1 - (\S+) \[[^]]+\] "GET /traveler\?user=carol HTTP/1\.1" 200 (\d+) '
                             r'"-" "Quote\\x22Agent" server=pool1 reason=(\S+) in=\d+ total_ms=[\d.]+ '
                             r'connect_ms=[\d.]+ ttfb_ms=[\d.]+$', lines[0])
            self.assertIsNotNone(first, lines[0])
            self.assertEqual(first.group(1), "carol")
            self.assertIn('"GET /Microsoft-Server-ActiveSync?Cmd=Ping&User=dan&hold=1500ms HTTP/1.1" 200', lines[1])
            self.assertNotIn(PASSWORD, harness.read_text(log_path))


if __name__ == "__main__":
    harness.main()
