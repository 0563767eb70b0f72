"""sprayer under hostile or broken conditions: slowloris, request smuggling and malformed
heads, limits, refused upgrades, dead and slow pool servers, and `sprayer -t` config checks.
After every case sprayer must still be alive and serving."""

import os
import re
import select
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import HttpClient, Poolsim, Sprayer, build_request  # noqa: E402

CLIENT_HEADER_S = 2
UPSTREAM_RESPONSE_S = 1
MAX_URI = 1024
MAX_HEADER_COUNT = 30
MAX_HEADER_BYTES = 4096


class ProxyErrorsBase(harness.TestCase):
    """One sprayer with small limits in front of two pool servers, and the checks each case uses."""
    TIMEOUT = 30.0

    @classmethod
    def setUpClass(cls):
        cls.pool = harness.pool(2)
        cls.addClassCleanup(cls.pool.stop)
        config = harness.sprayer_config(
            cls.pool, workers=2,
            timeouts={"client_header": f"{CLIENT_HEADER_S}s", "upstream_response": f"{UPSTREAM_RESPONSE_S}s",
                      "drain": "2s"},
            limits={"max_uri_length": MAX_URI, "max_header_count": MAX_HEADER_COUNT,
                    "max_header_bytes": MAX_HEADER_BYTES})
        cls.sprayer = Sprayer(config).start()
        cls.addClassCleanup(cls.sprayer.stop)

    def tearDown(self):
        try:
            self.assert_serving()
        finally:
            super().tearDown()

    def assert_serving(self):
        self.sprayer.assert_alive()
        try:
            resp = self.sprayer.request("GET", "/traveler?action=getStatus", timeout=5)
        except Exception as e:
            self.fail(f"sprayer no longer serves a normal request: {e!r}\n{self.sprayer.diagnostics()}")
        self.assertStatus(resp, 200, "normal request after the case")

    def assert_rejected(self, raw, expected, case, closed=True):
        """Sends raw bytes on a fresh connection: expects status `expected` and, for errors,
        that sprayer closes the connection (nothing after a broken request can be trusted)."""
        with HttpClient(self.sprayer.port, timeout=5) as c:
            try:
                c.send(raw)
            except OSError:
                pass  # sprayer may close before reading everything; the response is what counts
            try:
                resp = c.read_response(timeout=5)
            except harness.HttpError as e:
                self.fail(f"{case}: expected a {expected} response, got none ({e})")
            self.assertStatus(resp, expected, case)
            if closed:
                self.assertTrue(c.wait_closed(3), f"{case}: connection still open 3s after the {resp.status}; "
                                                  f"bytes after it: {c.after_close[:200]!r}")
                self.assertEqual(c.after_close, b"", f"{case}: bytes after the error response")
            return resp



class ProxyErrorsTest(ProxyErrorsBase):
    # ---- slowloris ----

    def test_slowloris_cut_off(self):
        s = socket.create_connection(("127.0.0.1", self.sprayer.port), timeout=10)
        try:
            s.sendall(b"GET /traveler?action=getStatus HTTP/1.1\r\nHost: x\r\n")
            start = time.monotonic()
            trickle = b"X-Slow: " + b"a" * 64
            outcome, data, sent = None, b"", 0
            while time.monotonic() - start < 8:
                readable, _, _ = select.select([s], [], [], 1.0)
                if readable:
                    try:
                        data = s.recv(65536)
                        outcome = "response" if data else "close"
                    except ConnectionResetError:
                        outcome = "reset"
                    break
                try:
                    s.sendall(trickle[sent % len(trickle):][:1])  # one byte a second
                    sent += 1
                except OSError as e:
                    outcome = f"send failed ({e.__class__.__name__})"
                    break
            elapsed = time.monotonic() - start
            self.assertIsNotNone(outcome, f"a header trickled a byte a second was still accepted after "
                                          f"{elapsed:.1f}s (client_header {CLIENT_HEADER_S}s)")
            self.assertLess(elapsed, CLIENT_HEADER_S + 1.5,
                            f"slowloris cut off only after {elapsed:.1f}s ({outcome}); client_header is "
                            f"{CLIENT_HEADER_S}s")
            if outcome == "response":
                status_line = data.split(b"\r\n", 1)[0]
                self.assertRegex(status_line.decode("latin-1"), r"^HTTP/1\.[01] 408\b",
                                 f"slowloris answered with {status_line!r}, expected 408 or a close")
        finally:
            s.close()

    # ---- smuggling and malformed heads ----

    def test_content_length_and_transfer_encoding(self):
        self.assert_rejected(b"POST /poolsim/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nG", 400, "CL + TE")

    def test_two_content_lengths(self):
        self.assert_rejected(b"POST /poolsim/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                             b"Content-Length: 4\r\n\r\nabcd", 400, "two different Content-Length")

    def test_bad_chunk_size(self):
        self.assert_rejected(b"POST /poolsim/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"zz\r\nhello\r\n0\r\n\r\n", 400, "bad chunk size")

    def test_obs_fold(self):
        self.assert_rejected(b"GET /poolsim/headers HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n  b\r\n\r\n",
                             400, "obs-fold header")

    def test_bare_lf(self):
        self.assert_rejected(b"GET /poolsim/headers HTTP/1.1\nHost: x\n\n", 400, "bare LF line endings")

    def test_absolute_form_for_another_host(self):
        self.assert_rejected(b"GET http://other.example/poolsim/headers HTTP/1.1\r\nHost: sprayer.test\r\n\r\n",
                             400, "absolute-form target naming another host")

    def test_invalid_method_token(self):
        self.assert_rejected(b"G@T /poolsim/headers HTTP/1.1\r\nHost: x\r\n\r\n", 400, "invalid method token")

    def test_uri_too_long(self):
        target = "/poolsim/headers?pad=" + "a" * (MAX_URI + 100)
        self.assert_rejected(build_request("GET", target), 414, f"{len(target)}-byte URI (limit {MAX_URI})")

    def test_too_many_headers(self):
        headers = [(f"X-H{i}", "v") for i in range(MAX_HEADER_COUNT + 5)]
        self.assert_rejected(build_request("GET", "/poolsim/headers", headers), 431,
                             f"{MAX_HEADER_COUNT + 6} headers (limit {MAX_HEADER_COUNT})")

    def test_head_too_large(self):
        headers = [("X-Big", "b" * (MAX_HEADER_BYTES + 500))]
        self.assert_rejected(build_request("GET", "/poolsim/headers", headers), 431,
                             f"head over {MAX_HEADER_BYTES} bytes")

    def test_within_limits_accepted(self):
        # The limits must not cut off requests just below them.
        headers = [(f"X-H{i}", "v") for i in range(MAX_HEADER_COUNT - 5)]
        target = "/poolsim/headers?pad=" + "a" * (MAX_URI - 100)
        resp = self.sprayer.request("GET", target, headers)
        self.assertStatus(resp, 200, "request just below the limits")

    def test_websocket_upgrade_refused(self):
        raw = build_request("GET", "/poolsim/headers", [
            ("Connection", "Upgrade"), ("Upgrade", "websocket"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13")])
        with HttpClient(self.sprayer.port, timeout=5) as c:
            c.send(raw)
            resp = c.read_response(timeout=5)
        self.assertNotEqual(resp.status, 101, f"websocket upgrade was granted\n{resp.describe()}")
        if resp.status == 200:
            # Forwarded as a plain request: the upstream must not have seen the upgrade.
            self.assertNotIn("upgrade", resp.json(), f"Upgrade forwarded upstream: {resp.json()}")

    # ---- unhealthy pool servers ----

    def test_upstream_response_timeout(self):
        start = time.monotonic()
        resp = self.sprayer.request("GET", "/Microsoft-Server-ActiveSync?Cmd=Ping&User=slow&hold=5s", timeout=10)
        elapsed = time.monotonic() - start
        self.assertStatus(resp, 504, f"backend holding 5s with upstream_response {UPSTREAM_RESPONSE_S}s")
        self.assertLess(elapsed, UPSTREAM_RESPONSE_S + 2.5, f"504 came only after {elapsed:.1f}s")
        self.assertGreater(elapsed, UPSTREAM_RESPONSE_S * 0.9, f"504 after {elapsed:.2f}s, before the timeout")


class StrictFramingTest(ProxyErrorsBase):
    """RFC 9112 framing that llhttp's loose build lets through: each refused with 400 and a
    close (the whole class, as unit-tested byte by byte in http_request_parser_test)."""

    CHUNKED = b"POST /poolsim/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"

    def test_http10_with_transfer_encoding(self):
        self.assert_rejected(b"POST /poolsim/echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"5\r\nhello\r\n0\r\n\r\n", 400, "HTTP/1.0 with Transfer-Encoding: chunked")

    def test_invalid_host(self):
        for host in (b"a@b", b"a, b", b"a b:80", b"[::1", b"h:80x"):
            self.assert_rejected(b"GET /poolsim/headers HTTP/1.1\r\nHost: " + host + b"\r\n\r\n", 400,
                                 f"Host: {host!r}")

    def test_connection_never_removes_host(self):
        with HttpClient(self.sprayer.port, timeout=5) as c:
            c.send(b"GET /poolsim/headers HTTP/1.1\r\nHost: mail.example.com\r\n"
                   b"Connection: close, Host, Content-Length\r\n\r\n")
            resp = c.read_response(timeout=5)
        self.assertStatus(resp, 200, "Connection naming Host")
        seen = resp.json()
        self.assertEqual(seen.get("host"), ["mail.example.com"], f"Host removed; upstream saw {seen}")
        self.assertEqual(seen.get("x-forwarded-host"), ["mail.example.com"], f"upstream saw {seen}")

    def test_empty_field_name(self):
        self.assert_rejected(b"GET /poolsim/headers HTTP/1.1\r\nHost: x\r\n: value\r\n\r\n", 400,
                             "a field line with an empty name")

    def test_fragment_in_target(self):
        self.assert_rejected(b"GET /poolsim/headers#frag HTTP/1.1\r\nHost: x\r\n\r\n", 400,
                             "a #fragment in the request target")

    def test_bytes_after_chunk_data(self):
        self.assert_rejected(self.CHUNKED + b"5\r\nhelloXX0\r\n\r\n", 400, "two bytes after chunk data")

    def test_byte_after_cr_in_chunk_size(self):
        # llhttp itself refuses "5\rX\n"; after an extension, and in the last chunk's line, it
        # skips the byte.
        self.assert_rejected(self.CHUNKED + b"5;a\rXhello\r\n0\r\n\r\n", 400, "a byte after CR after an extension")
        self.assert_rejected(self.CHUNKED + b"5\r\nhello\r\n0\rX\r\n\r\n", 400, "a byte after CR in the last chunk")

    def test_unbounded_chunk_extension(self):
        self.assert_rejected(self.CHUNKED + b"5;" + b"x" * (1536 * 1024) + b"\r\nhello\r\n0\r\n\r\n", 400,
                             "1.5 MiB of chunk extension")

    def test_trailers_over_the_limit(self):
        trailers = b"".join(b"X-T%d: %s\r\n" % (i, b"v" * 100) for i in range(MAX_HEADER_BYTES // 100 + 10))
        self.assert_rejected(self.CHUNKED + b"0\r\n" + trailers + b"\r\n", 400, "trailers over the limit")


class RawBackend:
    """A pool server that answers each request with the bytes its path names: framings a
    strict reader and llhttp's loose build would read differently. Threads end with the test."""

    HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    ANSWERS = {
        b"/good": HEAD + b"1\r\nx\r\n0\r\n\r\n",
        b"/cr-any-byte": HEAD + b"1\r\x02x\r\n0\r\n\r\n",   # size line: CR, then not LF
        b"/no-crlf-after-data": HEAD + b"1\r\nxY0\r\n\r\n",
        b"/head-cr-any-byte": b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\x02x",
    }
    STATUS = b"HTTP/1.1 200 OK\r\nContent-Length: 31\r\n\r\nTraveler server is available.\r\n"

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stopped = False
        threading.Thread(target=self.accept_loop, daemon=True).start()

    def accept_loop(self):
        self.listener.settimeout(0.2)
        while not self.stopped:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn):
        buf = b""
        conn.settimeout(10)
        with conn:
            for _ in range(1000):  # requests per connection, bounded
                while b"\r\n\r\n" not in buf:
                    try:
                        data = conn.recv(65536)
                    except OSError:
                        return
                    if not data:
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                path = head.split(b" ")[1].split(b"?")[0]
                conn.sendall(self.ANSWERS.get(path, self.STATUS))

    def stop(self):
        self.stopped = True
        self.listener.close()


class MalformedResponseTest(harness.TestCase):
    """A pool server's chunked body or head that two readers could frame differently never
    reaches the client as a clean response: 502 before the head went, a cut connection after."""

    TIMEOUT = 30.0

    @classmethod
    def setUpClass(cls):
        cls.backend = RawBackend()
        cls.addClassCleanup(cls.backend.stop)
        config = harness.sprayer_config([("raw1", f"127.0.0.1:{cls.backend.port}")], workers=1,
                                        health={"enabled": False, "passive_failures": 0})
        cls.sprayer = Sprayer(config).start()
        cls.addClassCleanup(cls.sprayer.stop)

    def get(self, path):
        """(response or None, closed): the response if it was whole, and whether sprayer closed."""
        with HttpClient(self.sprayer.port, timeout=5) as c:
            c.send(build_request("GET", path))
            try:
                resp = c.read_response(timeout=5)
            except harness.HttpError:
                resp = None
            return resp, c.wait_closed(3)

    def test_good_chunked_body_passes(self):
        resp, _ = self.get("/good")
        self.assertIsNotNone(resp, "a well-framed chunked response")
        self.assertStatus(resp, 200, "good chunked")
        self.assertEqual(resp.body, b"x")

    def test_bad_chunk_framing_cuts_the_client(self):
        for path in ("/cr-any-byte", "/no-crlf-after-data"):
            resp, closed = self.get(path)
            # The head went out before the bad chunk: the only honest answer is an incomplete one.
            self.assertIsNone(resp, f"{path}: a whole response reached the client: {resp and resp.describe()}")
            self.assertTrue(closed, f"{path}: the client connection stays open")
        self.sprayer.assert_alive()

    def test_bad_head_line_ending_is_502(self):
        resp, closed = self.get("/head-cr-any-byte")
        self.assertIsNotNone(resp, "a 502 for a head no strict reader accepts")
        self.assertStatus(resp, 502, "head line ended by CR and another byte")
        self.sprayer.assert_alive()


class BackendDownTest(harness.TestCase):
    """All pool servers gone: sprayer answers 502/503 promptly and recovers when they return."""

    TIMEOUT = 45.0

    @classmethod
    def setUpClass(cls):
        cls.pool = harness.pool(2)
        cls.addClassCleanup(lambda: harness.Pool(cls.pool).stop())
        config = harness.sprayer_config(cls.pool, workers=2, timeouts={"upstream_connect": "1s", "drain": "2s"})
        cls.sprayer = Sprayer(config).start()
        cls.addClassCleanup(cls.sprayer.stop)

    def test_all_servers_down_then_back(self):
        """Both halves in one test, so the recovery check never depends on test order."""
        self.assertStatus(self.sprayer.request("GET", "/traveler?action=getStatus"), 200, "before the outage")
        codes = self.pool.stop()
        self.assertEqual(codes, [0] * len(codes), f"poolsim exit codes on SIGTERM: {codes}")
        for i in range(3):
            start = time.monotonic()
            resp = self.sprayer.request("GET", "/Microsoft-Server-ActiveSync?Cmd=Sync&User=u", timeout=10)
            elapsed = time.monotonic() - start
            self.assertStatus(resp, (502, 503), f"request {i} with every pool server down")
            self.assertLess(elapsed, 4.0, f"request {i}: error answer took {elapsed:.1f}s")
        self.sprayer.assert_alive()

        back = harness.Pool(Poolsim(p.id, port=p.port).start() for p in self.pool)
        self.__class__.pool = back

        def served():
            resp = self.sprayer.request("GET", "/Microsoft-Server-ActiveSync?Cmd=Sync&User=u", timeout=5)
            return resp.status == 200

        harness.wait_until(served, 30, interval=0.25, what="sprayer to serve again once the pool servers are back")


class ShutdownTest(harness.TestCase):
    """SIGTERM while a Ping is held: drain, then exit 0; a second SIGTERM cuts the drain short."""

    DRAIN_S = 2

    # The second SIGTERM's drain is long: an exit well before it ends can only come from the
    # second signal.
    LONG_DRAIN_S = 60

    def _start_with_held_ping(self, pool, drain_s=None):
        drain_s = self.DRAIN_S if drain_s is None else drain_s
        sprayer = Sprayer(harness.sprayer_config(pool, timeouts={"drain": f"{drain_s}s"})).start()
        self.addCleanup(sprayer.kill)
        client = HttpClient(sprayer.port, timeout=15)
        self.addCleanup(client.close)
        client.send(build_request("GET", "/Microsoft-Server-ActiveSync?Cmd=Ping&User=u&hold=30s"))
        harness.wait_until(lambda: sum(p.stats()["holds_started"] for p in pool) == 1, 3,
                           what="the Ping to reach a pool server")
        return sprayer

    @staticmethod
    def _accepts(port):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    def _wait_exit(self, sprayer, limit, what):
        try:
            sprayer.proc.wait(timeout=limit)
        except harness.subprocess.TimeoutExpired:
            self.fail(f"{what}: sprayer still running {limit}s later\n{sprayer.diagnostics()}")
        self.assertEqual(sprayer.proc.returncode, 0, f"{what}: exit code\n{sprayer.diagnostics()}")

    def test_sigterm_drains_then_exits_0(self):
        with harness.pool(1) as pool:
            sprayer = self._start_with_held_ping(pool)
            sprayer.kill(harness.signal.SIGTERM)
            start = time.monotonic()
            self._wait_exit(sprayer, self.DRAIN_S + 5, "SIGTERM with a held Ping")
            self.assertGreater(time.monotonic() - start, self.DRAIN_S * 0.5,
                               "sprayer exited at once instead of letting in-flight requests drain")

    def test_second_sigterm_exits_0_at_once(self):
        with harness.pool(1) as pool:
            sprayer = self._start_with_held_ping(pool, drain_s=self.LONG_DRAIN_S)
            sprayer.kill(harness.signal.SIGTERM)
            harness.wait_until(lambda: not self._accepts(sprayer.port), 5,
                               what="sprayer to stop accepting after the first SIGTERM")
            sprayer.kill(harness.signal.SIGTERM)
            self._wait_exit(sprayer, 10, f"second SIGTERM during a {self.LONG_DRAIN_S}s drain")


class ConfigCheckTest(harness.TestCase):
    """`sprayer -t -c FILE`: exit 0 on a good file; exit 1 naming file:line:column and key."""

    def test_good_config(self):
        config = harness.sprayer_config([("pool1", "127.0.0.1:18001"), ("pool2", "127.0.0.1:18002")],
                                        timeouts={"client_header": "2s"}, limits={"max_header_count": 50})
        proc, path = harness.check_config(config)
        self.assertEqual(proc.returncode, 0, f"`sprayer -t -c {path}` on a valid config: exit {proc.returncode}\n"
                                             f"stderr: {proc.stderr.decode(errors='replace')}")

    def test_example_config(self):
        path = os.path.join(harness.SOURCE_DIR, "conf", "examples", "sprayer.yaml")
        if not os.path.exists(path):
            self.skipTest(f"{path} not present")
        proc = harness.subprocess.run([harness.SPRAYER_BIN, "-t", "-c", path], capture_output=True, timeout=10)
        self.assertEqual(proc.returncode, 0, f"shipped example rejected: {proc.stderr.decode(errors='replace')}")

    BAD_CONFIGS = [
        # (description, yaml, line, key)
        ("bad port", 'workers: 2\n'
                     'listeners:\n'
                     '  - name: "http"\n'
                     '    address: "127.0.0.1:18080"\n'
                     'servers:\n'
                     '  - id: "pool1"\n'
                     '    address: "127.0.0.1:notaport"\n', 7, "servers[0].address"),
        ("duration without unit", 'listeners:\n'
                                  '  - name: "http"\n'
                                  '    address: "127.0.0.1:18080"\n'
                                  'servers:\n'
                                  '  - id: "pool1"\n'
                                  '    address: "127.0.0.1:18001"\n'
                                  'timeouts:\n'
                                  '  client_header: "2 parsecs"\n', 8, "timeouts.client_header"),
        ("negative count", 'listeners:\n'
                           '  - name: "http"\n'
                           '    address: "127.0.0.1:18080"\n'
                           'servers:\n'
                           '  - id: "pool1"\n'
                           '    address: "127.0.0.1:18001"\n'
                           'limits:\n'
                           '  max_header_count: -5\n', 8, "limits.max_header_count"),
        ("unknown key", 'listeners:\n'
                        '  - name: "http"\n'
                        '    address: "127.0.0.1:18080"\n'
                        'servers:\n'
                        '  - id: "pool1"\n'
                        '    address: "127.0.0.1:18001"\n'
                        'workerz: 2\n', 7, "workerz"),
    ]

    def test_bad_configs(self):
        for what, text, line, key in self.BAD_CONFIGS:
            with self.subTest(case=what):
                proc, path = harness.check_config(text)
                err = proc.stderr.decode(errors="replace")
                self.assertEqual(proc.returncode, 1, f"{what}: `sprayer -t` exit {proc.returncode}, expected 1\n"
                                                     f"stderr: {err}")
                pattern = rf"{re.escape(path)}:{line}:\d+: {re.escape(key)}: \S"
                self.assertRegex(err, pattern, f"{what}: expected an error naming {path}:{line} and key "
                                               f"{key!r} (format file:line:col: key: message)")

    def test_version_and_help(self):
        for flag in ("--version", "--help"):
            with self.subTest(flag=flag):
                proc = harness.subprocess.run([harness.SPRAYER_BIN, flag], capture_output=True, timeout=10)
                self.assertEqual(proc.returncode, 0, f"sprayer {flag}: exit {proc.returncode}")
                self.assertTrue(proc.stdout.strip(), f"sprayer {flag} printed nothing on stdout")


if __name__ == "__main__":
    harness.main()
