"""sprayer in front of three poolsims: keep-alive, pipelining, spreading, streaming 100 MB both
ways in bounded memory, long-held Pings, HEAD, 1xx responses, Connection: close and header
rewriting. Run with `python3 test_proxy_core.py` (SPRAYER_BIN and POOLSIM_BIN from ctest)."""

import collections
import contextlib
import os
import re
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import HttpClient, Sprayer, build_request, send_chunked  # noqa: E402

MIB = 1024 * 1024
BIG = 100 * MIB               # 104857600 bytes, the size the spec names
RSS_BUDGET_KIB = 64 * 1024    # sprayer may grow at most this much during a big transfer
PING_HOLD_S = 60


class HeldPing(threading.Thread):
    """A Ping held PING_HOLD_S seconds by the pool, run alongside the other tests."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.response = None
        self.error = None
        self.elapsed = None
        self.client = None

    def run(self):
        start = time.monotonic()
        try:
            self.client = HttpClient(self.port, timeout=PING_HOLD_S + 30)
            self.response = self.client.request(
                "GET", f"/Microsoft-Server-ActiveSync?Cmd=Ping&User=pinger&DeviceId=d1&hold={PING_HOLD_S}s")
        except Exception as e:  # reported by the test that joins this thread
            self.error = e
        finally:
            self.elapsed = time.monotonic() - start

    def abandon(self):
        if self.client is not None:
            # shutdown, not just close: run() is blocked in recv on this socket, and a close
            # from another thread sends no FIN while that recv holds the file.
            with contextlib.suppress(OSError):
                self.client.sock.shutdown(socket.SHUT_RDWR)
            self.client.close()


class ProxyCoreTest(harness.TestCase):
    TIMEOUT = 90.0

    @classmethod
    def setUpClass(cls):
        cls.pool = harness.pool(3)
        cls.addClassCleanup(cls.pool.stop)
        config = harness.sprayer_config(cls.pool, workers=2, timeouts={"drain": "5s"})
        cls.sprayer = Sprayer(config).start()
        cls.addClassCleanup(cls._stop_sprayer)
        cls.ping = HeldPing(cls.sprayer.port)
        cls.ping.start()

    @classmethod
    def _stop_sprayer(cls):
        if cls.ping.is_alive():
            # Only when a subset of the tests ran: let sprayer see the client leave before the
            # SIGTERM, so this stop tests the ordinary path (ShutdownTest covers draining).
            cls.ping.abandon()
            try:
                harness.wait_until(lambda: sum(p.stats()["holds_cancelled"] for p in cls.pool) > 0, 3,
                                   what="the abandoned Ping to be cancelled upstream")
            except harness.WaitTimeout as e:
                sys.stderr.write(f"note: {e}\n")
        cls.sprayer.stop()

    def setUp(self):
        super().setUp()
        self.sprayer.assert_alive()

    def client(self, timeout=10.0):
        return HttpClient(self.sprayer.port, timeout=timeout)

    def served_by_counts(self):
        return {p.id: p.stats()["total_connections"] for p in self.pool}

    # ---- connections ----

    def test_keep_alive_reuse(self):
        with self.client() as c:
            for i in range(100):
                resp = c.request("GET", f"/Microsoft-Server-ActiveSync?Cmd=Sync&User=ka{i}&DeviceId=d{i}")
                self.assertStatus(resp, 200, f"request {i} on one keep-alive connection")
                self.assertEqual(resp.header("X-User"), f"ka{i}", f"request {i}: answer to another request?")
                self.assertFalse(resp.has_token("Connection", "close"),
                                 f"request {i}: sprayer asked to close a keep-alive connection\n{resp.describe()}")

    def test_upstream_connections_reused(self):
        n = 60
        before = sum(p.stats()["total_connections"] for p in self.pool)
        with self.client() as c:
            for i in range(n):
                self.assertStatus(c.request("GET", "/Microsoft-Server-ActiveSync?Cmd=Sync"), 200, f"request {i}")
        # Each stats() call below opens one connection of its own (3 in all).
        opened = sum(p.stats()["total_connections"] for p in self.pool) - before - len(self.pool)
        self.assertLess(opened, n // 2, f"{n} requests opened {opened} upstream connections: "
                                        "pooled keep-alive connections are not reused")

    def test_pipelining_in_order(self):
        reqs = [
            build_request("GET", "/poolsim/status/201"),
            build_request("POST", "/poolsim/echo", body=b"hello"),
            build_request("GET", "/Microsoft-Server-ActiveSync?Cmd=Sync&User=p3"),
            build_request("GET", "/poolsim/status/202"),
            build_request("GET", "/poolsim/headers", {"X-Seq": "5"}),
        ]
        with self.client() as c:
            c.send(b"".join(reqs))  # one write
            resps = c.read_responses(len(reqs))
        got = [r.status for r in resps]
        self.assertEqual(got, [201, 200, 200, 202, 200], f"statuses out of order: {got}")
        self.assertEqual(resps[1].json()["bytes"], 5, resps[1].describe())
        self.assertEqual(resps[2].header("X-User"), "p3", resps[2].describe())
        self.assertEqual(resps[4].json().get("x-seq"), ["5"], resps[4].describe())

    def test_round_robin_spread(self):
        n = 30
        ids = {p.id for p in self.pool}
        with self.client() as c:
            one_conn = collections.Counter(
                c.request("OPTIONS", "/Microsoft-Server-ActiveSync").header("X-Served-By") for _ in range(n))
        fresh = collections.Counter(
            self.sprayer.request("OPTIONS", "/Microsoft-Server-ActiveSync").header("X-Served-By") for _ in range(n))
        for name, counts in (("one connection", one_conn), ("fresh connections", fresh)):
            self.assertEqual(set(counts), ids, f"{name}: requests without a user reached {dict(counts)}, "
                                               f"expected all of {sorted(ids)}")
            low = min(counts.values())
            self.assertGreaterEqual(low, n // 6, f"{name}: uneven spread {dict(counts)} over {n} requests")

    def test_concurrent_clients(self):
        errors = []

        def worker(k):
            try:
                with self.client() as c:
                    for i in range(40):
                        user = f"c{k}-{i}"
                        resp = c.request("GET", f"/Microsoft-Server-ActiveSync?Cmd=Sync&User={user}")
                        if resp.status != 200 or resp.header("X-User") != user:
                            errors.append(f"{user}: got {resp.status} X-User={resp.header('X-User')!r}")
                            return
            except Exception as e:
                errors.append(f"client {k}: {e!r}")

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(24)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        self.assertEqual(errors, [], "concurrent clients saw wrong answers")

    def test_connection_close_honoured(self):
        with self.client() as c:
            resp = c.request("GET", "/traveler?action=getStatus", {"Connection": "close"})
            self.assertStatus(resp, 200, "Connection: close")
            self.assertTrue(resp.has_token("Connection", "close"),
                            f"response to Connection: close lacks Connection: close\n{resp.describe()}")
            self.assertTrue(c.wait_closed(3), "sprayer kept the connection open after Connection: close")
        with self.client() as c:
            c.send(build_request("GET", "/traveler?action=getStatus", version="HTTP/1.0"))
            self.assertStatus(c.read_response(), 200, "HTTP/1.0")
            self.assertTrue(c.wait_closed(3), "HTTP/1.0 request without keep-alive: connection not closed")

    def test_client_disconnect_cancels_upstream_ping(self):
        # A device that gives up on its Ping must not leave a held request (and an upstream
        # connection) behind for the whole upstream_response timeout.
        def total(key):
            return sum(p.stats()[key] for p in self.pool)

        started, cancelled = total("holds_started"), total("holds_cancelled")
        c = self.client()
        c.send(build_request("GET", "/Microsoft-Server-ActiveSync?Cmd=Ping&User=leaver&hold=30s"))
        harness.wait_until(lambda: total("holds_started") > started, 3, what="the Ping to reach a pool server")
        c.close()
        harness.wait_until(lambda: total("holds_cancelled") > cancelled, 5,
                           what="sprayer to drop the upstream request after its client disconnected "
                                "(poolsim holds_cancelled did not move)")

    # ---- message forms ----

    def test_head(self):
        with self.client() as c:
            resp = c.request("HEAD", "/poolsim/blob?size=12345")
            self.assertStatus(resp, 200, "HEAD blob")
            self.assertEqual(resp.header("Content-Length"), "12345", resp.describe())
            resp = c.request("HEAD", "/poolsim/blob?size=100&chunked=1")
            self.assertStatus(resp, 200, "HEAD chunked blob")
            # Had sprayer forwarded or expected body bytes, this response would be garbled or late.
            try:
                resp = c.request("GET", "/poolsim/status/202", timeout=5)
            except harness.HttpError as e:
                self.fail(f"the response after two HEADs is broken, so sprayer sent body bytes (e.g. a "
                          f"last chunk) for a HEAD or lost the connection's framing: {e}")
            self.assertStatus(resp, 202, "request after two HEADs on the same connection")
            self.assertEqual(resp.body, b"status 202\n")

    def test_status_and_body_pass_through(self):
        with self.client() as c:
            for code in (201, 404, 500, 503):
                resp = c.request("GET", f"/poolsim/status/{code}")
                self.assertStatus(resp, code, f"upstream {code}")
                self.assertEqual(resp.body, f"status {code}\n".encode(), resp.describe())
                self.assertIn(resp.header("X-Served-By"), {p.id for p in self.pool}, resp.describe())

    def test_expect_100_continue(self):
        body = b"q" * 10_000
        with self.client() as c:
            c.send(build_request("POST", "/poolsim/echo",
                                 {"Expect": "100-continue", "Content-Length": str(len(body))}))
            try:
                interim = c.read_head(timeout=3)
            except harness.HttpError as e:
                self.fail(f"no 100 Continue within 3s of a head with Expect: 100-continue ({e})")
            self.assertEqual(interim.status, 100, f"expected 100 Continue first\n{interim.describe()}")
            c.send(body)
            resp = c.read_response()
            self.assertStatus(resp, 200, "echo after 100 Continue")
            self.assertEqual(resp.json()["bytes"], len(body))

    def test_early_hints_passed_through(self):
        with self.client() as c:
            resp = c.request("GET", "/poolsim/early-hints")
            self.assertStatus(resp, 200, "early hints")
            self.assertEqual([r.status for r in resp.interim], [103],
                             f"expected one 103 before the 200, got {[r.status for r in resp.interim]}")
            self.assertIn("rel=preload", resp.interim[0].header("Link", ""), resp.interim[0].describe())
            self.assertStatus(c.request("GET", "/poolsim/status/200"), 200, "next request")

    def test_header_rewriting(self):
        headers = [
            ("Host", "mail.example.com"),
            ("X-Forwarded-For", "10.0.0.1"),
            ("Connection", "foo, keep-alive"),
            ("Foo", "bar"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Proxy-Connection", "keep-alive"),
            ("X-Custom", "kept"),
        ]
        with self.client() as c:
            resp = c.request("GET", "/poolsim/headers", headers, host=None)
        self.assertStatus(resp, 200, "headers echo")
        seen = resp.json()
        detail = f"\nupstream saw: {seen}"
        xff = [v.strip() for value in seen.get("x-forwarded-for", []) for v in value.split(",")]
        self.assertEqual(xff, ["10.0.0.1", "127.0.0.1"], "X-Forwarded-For must be appended to" + detail)
        self.assertEqual(seen.get("x-forwarded-proto"), ["http"], detail)
        self.assertEqual(seen.get("x-forwarded-host"), ["mail.example.com"], detail)
        self.assertTrue(any("sprayer" in v for v in seen.get("via", [])), "Via lacks sprayer" + detail)
        self.assertEqual(seen.get("host"), ["mail.example.com"], "Host not preserved" + detail)
        self.assertEqual(seen.get("x-custom"), ["kept"], "end-to-end header lost" + detail)
        for hop in ("foo", "keep-alive", "te", "proxy-connection"):
            self.assertNotIn(hop, seen, f"hop-by-hop header {hop!r} forwarded" + detail)
        conn_tokens = {t.strip().lower() for v in seen.get("connection", []) for t in v.split(",")}
        self.assertNotIn("foo", conn_tokens, "client's Connection tokens forwarded" + detail)

    # ---- 100 MB streams ----

    def _assert_rss_bounded(self, sampler, what):
        grown = sampler.max_kib - self.sprayer.start_rss_kib
        self.assertLess(grown, RSS_BUDGET_KIB,
                        f"{what}: sprayer RSS peaked at {sampler.max_kib} KiB, {grown} KiB above its start "
                        f"({self.sprayer.start_rss_kib} KiB); budget {RSS_BUDGET_KIB} KiB "
                        f"({sampler.samples} samples)")

    def _expected_echo(self, seed, total):
        """What poolsim computes for this stream when it is sent to it directly."""
        with HttpClient(self.pool[0].port, timeout=60) as c:
            c.send(build_request("POST", "/poolsim/echo", {"Transfer-Encoding": "chunked"}))
            send_chunked(c, harness.random_stream(seed, total))
            return c.read_response(timeout=60).json()

    def _upload(self, chunked):
        seed = 11 if chunked else 12
        expected = self._expected_echo(seed, BIG)
        self.assertEqual(expected["bytes"], BIG)
        headers = {"Transfer-Encoding": "chunked"} if chunked else {"Content-Length": str(BIG)}
        with self.client(timeout=120) as c, harness.RssSampler(self.sprayer) as sampler:
            c.send(build_request("POST", "/poolsim/echo", headers))
            try:
                if chunked:
                    send_chunked(c, harness.random_stream(seed, BIG))
                else:
                    for piece in harness.random_stream(seed, BIG):
                        c.send(piece)
            except OSError as e:
                early = None
                try:
                    early = c.read_response(timeout=2).describe()
                except Exception:
                    pass
                self.fail(f"upload failed after a partial send ({e!r}); early response: {early}")
            resp = c.read_response(timeout=120)
        self.assertStatus(resp, 200, "100 MB upload")
        self.assertEqual(resp.json(), expected, "bytes or hash of the upload changed on the way through sprayer")
        self._assert_rss_bounded(sampler, "100 MB upload")

    @harness.timeout(180)
    def test_upload_100mb_chunked(self):
        self._upload(chunked=True)

    @harness.timeout(180)
    def test_upload_100mb_content_length(self):
        self._upload(chunked=False)

    def _download(self, chunked):
        target = f"/poolsim/blob?size={BIG}" + ("&chunked=1" if chunked else "")
        expected_fnv = _blob_fnv(self.pool[0], BIG)
        checker = harness.BlobChecker()
        with self.client(timeout=120) as c, harness.RssSampler(self.sprayer) as sampler:
            c.send(build_request("GET", target))
            head = c.read_head(timeout=10)
            self.assertStatus(head, 200, target)
            # A client that stops reading for a second: sprayer must stop reading upstream
            # rather than buffer the rest of the 100 MB.
            time.sleep(1.0)
            paused_kib = self.sprayer.rss_kib()
            resp = c.read_body(head, timeout=120, sink=checker)
        self.assertEqual(checker.length, BIG, f"{target}: body length")
        self.assertIsNone(checker.first_mismatch, f"{target}: body differs at byte {checker.first_mismatch}")
        self.assertEqual(head.header("X-Blob-Fnv1a64"), expected_fnv, head.describe())
        if not chunked:
            self.assertEqual(head.header("Content-Length"), str(BIG), head.describe())
        self.assertLess(paused_kib - self.sprayer.start_rss_kib, RSS_BUDGET_KIB,
                        f"sprayer RSS {paused_kib} KiB while the client was not reading (start "
                        f"{self.sprayer.start_rss_kib} KiB): no back-pressure toward the pool server")
        self._assert_rss_bounded(sampler, f"100 MB download {target}")
        self.assertStatus(resp, 200, target)

    @harness.timeout(180)
    def test_download_100mb_content_length(self):
        self._download(chunked=False)

    @harness.timeout(180)
    def test_download_100mb_chunked(self):
        self._download(chunked=True)

    # ---- long-held Ping (started in setUpClass; runs last, in name order) ----

    @harness.timeout(PING_HOLD_S + 45)
    def test_zz_ping_held_60s(self):
        self.ping.join(timeout=PING_HOLD_S + 35)
        self.assertFalse(self.ping.is_alive(), "the held Ping did not finish in time")
        if self.ping.error is not None:
            self.fail(f"held Ping failed after {self.ping.elapsed:.1f}s: {self.ping.error!r}")
        resp = self.ping.response
        self.assertStatus(resp, 200, f"Ping held {PING_HOLD_S}s")
        self.assertEqual(resp.header("X-User"), "pinger", resp.describe())
        self.assertGreaterEqual(self.ping.elapsed, PING_HOLD_S - 1,
                                f"Ping answered after {self.ping.elapsed:.1f}s, before its hold")


def _blob_fnv(sim, size):
    with HttpClient(sim.port, timeout=30) as c:
        return c.request("HEAD", f"/poolsim/blob?size={size}").header("X-Blob-Fnv1a64")


class ClientCloseTest(harness.TestCase):
    """A client that asks to close gets its answer, then the connection is closed at once:
    no lingering half-close (that is kept for closes sprayer decides, where input may follow)."""
    TIMEOUT = 30.0

    def test_connection_closed_at_once_after_the_last_request(self):
        pool = harness.pool(1)
        self.addCleanup(pool.stop)
        sprayer = Sprayer(harness.sprayer_config(pool, workers=1)).start()
        self.addCleanup(sprayer.stop)

        def open_connections():
            text = harness.http_request(sprayer.admin_port, "GET", "/metrics", timeout=5).body.decode()
            m = re.search(r'^sprayer_downstream_connections\{listener="http"\} (\S+)$', text, re.M)
            return float(m.group(1)) if m else -1

        with harness.HttpClient(sprayer.port) as c:
            resp = c.request("GET", "/traveler?action=getStatus", {"Connection": "close"})
            self.assertStatus(resp, 200, "Connection: close")
            self.assertTrue(c.wait_closed(3), "no EOF after the response to Connection: close")
            # The client keeps its socket: a lingering close would hold sprayer's side for 2 s.
            started = time.monotonic()
            harness.wait_until(lambda: open_connections() == 0, 1.0, interval=0.02,
                               what="sprayer to close its side at once (not after the 2 s linger)")
            self.assertLess(time.monotonic() - started, 1.0)


if __name__ == "__main__":
    harness.main()
