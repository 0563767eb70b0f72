"""poolsim on its own: every endpoint, HTTP/1.1 framing (keep-alive, pipelining, chunked,
100-continue, 103, HEAD, Connection: close), holds, fault injection and clean shutdown.
The proxy tests rely on poolsim, so this suite pins its behaviour first."""

import os
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import HttpClient, Poolsim, build_request, fnv1a64, send_chunked  # noqa: E402


class PoolsimTest(harness.TestCase):
    TIMEOUT = 30.0

    @classmethod
    def setUpClass(cls):
        cls.sim = Poolsim("pool7").start()

    @classmethod
    def tearDownClass(cls):
        code = cls.sim.stop()
        if code != 0:
            raise AssertionError(f"poolsim exited with {code} on SIGTERM, expected 0; stderr:\n"
                                 f"{cls.sim.stderr_text()}")

    def client(self, timeout=10.0):
        return HttpClient(self.sim.port, timeout=timeout)

    def get(self, target, headers=(), **kw):
        return harness.http_request(self.sim.port, "GET", target, headers, **kw)

    def tearDown(self):
        super().tearDown()
        self.assertIsNone(self.sim.returncode, f"poolsim died; stderr:\n{self.sim.stderr_text()}")

    # ---- status and availability ----

    def test_get_status_both_urls(self):
        for target in ("/traveler?action=getStatus", "/servlet/traveler?action=getStatus",
                       "/traveler?Action=GETSTATUS"):
            with self.subTest(target=target):
                resp = self.get(target)
                self.assertStatus(resp, 200, target)
                self.assertEqual(resp.body, b"Traveler server is available.")
                self.assertEqual(resp.header("X-Served-By"), "pool7")

    def test_availability_toggle(self):
        with self.client() as c:
            try:
                self.assertStatus(c.request("POST", "/poolsim/available?value=0"), 200, "set 0")
                resp = c.request("GET", "/traveler?action=getStatus")
                self.assertStatus(resp, 503, "getStatus while unavailable")
                self.assertEqual(resp.body, b"Traveler server is not available.")
                self.assertFalse(c.request("GET", "/poolsim/stats").json()["available"])
                # ActiveSync traffic is not affected by the availability flag.
                self.assertStatus(c.request("GET", "/Microsoft-Server-ActiveSync?Cmd=Sync"), 200, "sync")
            finally:
                self.assertStatus(c.request("POST", "/poolsim/available?value=1"), 200, "set 1")
            self.assertStatus(c.request("GET", "/traveler?action=getStatus"), 200, "available again")
            self.assertStatus(c.request("POST", "/poolsim/available?value=maybe"), 400, "bad value")
            self.assertStatus(c.request("GET", "/poolsim/available?value=1"), 405, "GET")

    def test_unavailable_flag(self):
        with Poolsim("down1", args=["--unavailable"]) as sim:
            resp = sim.get("/traveler?action=getStatus")
            self.assertStatus(resp, 503, "--unavailable")
            self.assertEqual(resp.body, b"Traveler server is not available.")

    # ---- ActiveSync ----

    def test_activesync_paths(self):
        paths = ["/Microsoft-Server-ActiveSync", "/traveler/Microsoft-Server-ActiveSync",
                 "/servlet/traveler/Microsoft-Server-ActiveSync", "/microsoft-server-activesync",
                 "/traveler", "/servlet/traveler", "/traveler/sync"]
        with self.client() as c:
            for path in paths:
                for method in ("GET", "POST", "OPTIONS"):
                    with self.subTest(path=path, method=method):
                        body = b"x" * 10 if method == "POST" else None
                        resp = c.request(method, path + "?Cmd=Sync&User=alice&DeviceId=d1", body=body)
                        self.assertStatus(resp, 200, f"{method} {path}")
                        self.assertEqual(resp.header("X-Served-By"), "pool7")
                        self.assertEqual(resp.header("X-User"), "alice")
                        self.assertEqual(resp.json(), {"server": "pool7", "user": "alice", "cmd": "Sync",
                                                       "bytes_in": 10 if body else 0})

    def test_activesync_user_sources(self):
        cases = [
            ("?Cmd=Sync&User=DOMAIN%5Cjoe", {}, "DOMAIN\\joe"),
            ("?cmd=Sync&user=Mixed.Case%40example.com", {}, "Mixed.Case@example.com"),
            ("?Cmd=Sync", {"Authorization": "Basic " + "Ym9iOnNlY3JldA=="}, "bob"),  # bob:secret
            ("?Cmd=Sync", {"Authorization": "basic Y2Fyb2w="}, "carol"),            # carol, no ':'
            ("?Cmd=Sync&User=qp", {"Authorization": "Basic Ym9iOnNlY3JldA=="}, "qp"),  # query wins
            ("?Cmd=Sync", {"Authorization": "Bearer abc"}, ""),
            ("?Cmd=Sync", {}, ""),
        ]
        for query, headers, user in cases:
            with self.subTest(query=query, headers=headers):
                resp = self.get("/Microsoft-Server-ActiveSync" + query, headers)
                self.assertStatus(resp, 200, query)
                self.assertEqual(resp.header("X-User"), user)
                self.assertEqual(resp.json()["user"], user)

    def test_activesync_user_cannot_inject_headers(self):
        resp = self.get("/Microsoft-Server-ActiveSync?Cmd=Sync&User=a%0D%0AX-Evil:%201")
        self.assertStatus(resp, 200, "CRLF in user")
        self.assertIsNone(resp.header("X-Evil"), resp.describe())
        self.assertEqual(resp.json()["user"], "a\r\nX-Evil: 1")

    # ---- echo ----

    def test_echo_content_length(self):
        body = os.urandom(200_000)
        with self.client() as c:
            resp = c.request("POST", "/poolsim/echo", body=body)
            self.assertStatus(resp, 200, "echo")
            self.assertEqual(resp.json(), {"bytes": len(body), "fnv1a64": f"{fnv1a64(body):016x}"})
            resp = c.request("PUT", "/poolsim/echo", body=b"")
            self.assertEqual(resp.json(), {"bytes": 0, "fnv1a64": f"{harness.FNV_OFFSET:016x}"})
            self.assertStatus(c.request("GET", "/poolsim/echo"), 405, "GET echo")

    def test_echo_chunked_streamed(self):
        pieces = [os.urandom(n) for n in (1, 100, 65536, 3, 200_000, 7)]
        data = b"".join(pieces)
        with self.client() as c:
            c.send(build_request("POST", "/poolsim/echo", {"Transfer-Encoding": "chunked"}))
            send_chunked(c, pieces)
            resp = c.read_response()
            self.assertStatus(resp, 200, "chunked echo")
            self.assertEqual(resp.json(), {"bytes": len(data), "fnv1a64": f"{fnv1a64(data):016x}"})

    def test_echo_large_upload_is_not_buffered(self):
        # 64 MiB through a streaming hash: poolsim's RSS must not grow by the body size.
        total = 64 * 1024 * 1024
        rss_before = _rss_kib(self.sim.proc.pid)
        requests_before = self.sim.stats()["requests"]
        with self.client(timeout=60) as c:
            c.send(build_request("POST", "/poolsim/echo", {"Transfer-Encoding": "chunked"}))
            sent = send_chunked(c, harness.random_stream(1, total, 256 * 1024))
            resp = c.read_response(timeout=60)
        self.assertEqual(resp.json()["bytes"], sent)
        grown = _rss_kib(self.sim.proc.pid) - rss_before
        self.assertLess(grown, 16 * 1024, f"poolsim RSS grew by {grown} KiB during a 64 MiB upload")

    def test_hash_paths_agree(self):
        # The upload hash (request bodies) and the blob hash (generated content) are two code
        # paths; the proxy tests use one to check the other.
        size = 300_001
        blob = self.get(f"/poolsim/blob?size={size}")
        echo = harness.http_request(self.sim.port, "POST", "/poolsim/echo", body=harness.blob_bytes(0, size))
        self.assertEqual(blob.header("X-Blob-Fnv1a64"), echo.json()["fnv1a64"])

    # ---- blob ----

    def test_blob_content_length(self):
        size = 150_000
        resp = self.get(f"/poolsim/blob?size={size}")
        self.assertStatus(resp, 200, "blob")
        self.assertEqual(resp.header("Content-Length"), str(size))
        self.assertFalse(resp.chunked)
        self.assertEqual(resp.body, harness.blob_bytes(0, size))
        self.assertEqual(resp.header("X-Blob-Fnv1a64"), f"{fnv1a64(resp.body):016x}")

    def test_blob_chunked(self):
        size = 200_003
        resp = self.get(f"/poolsim/blob?size={size}&chunked=1")
        self.assertStatus(resp, 200, "chunked blob")
        self.assertTrue(resp.chunked, resp.describe())
        self.assertIsNone(resp.header("Content-Length"))
        self.assertEqual(resp.body, harness.blob_bytes(0, size))
        self.assertEqual(resp.header("X-Blob-Fnv1a64"), f"{fnv1a64(resp.body):016x}")

    def test_blob_sizes_and_errors(self):
        with self.client() as c:
            for size in (0, 1, 255, 256, 65536, 65537):
                for chunked in ("0", "1"):
                    resp = c.request("GET", f"/poolsim/blob?size={size}&chunked={chunked}")
                    self.assertEqual(resp.body, harness.blob_bytes(0, size), f"size {size} chunked={chunked}")
            self.assertStatus(c.request("GET", "/poolsim/blob"), 400, "missing size")
            self.assertStatus(c.request("GET", "/poolsim/blob?size=-1"), 400, "negative size")
            self.assertStatus(c.request("POST", "/poolsim/blob?size=1", body=b""), 405, "POST blob")

    def test_blob_large_streams_with_backpressure(self):
        size = 200 * 1024 * 1024
        checker = harness.BlobChecker()
        with self.client(timeout=60) as c:
            c.send(build_request("GET", f"/poolsim/blob?size={size}"))
            head = c.read_head()
            self.assertStatus(head, 200, "large blob")
            # Read nothing for a while: poolsim must stop producing, not queue 200 MB.
            time.sleep(0.5)
            rss = _rss_kib(self.sim.proc.pid)
            self.assertLess(rss, 64 * 1024, f"poolsim RSS {rss} KiB while its client is not reading")
            remaining = size
            deadline = time.monotonic() + 60
            while remaining:
                if not c.buf:
                    c._fill(deadline, "blob body")
                take = min(remaining, len(c.buf))
                checker(c.buf[:take])
                del c.buf[:take]
                remaining -= take
        self.assertEqual(checker.length, size)
        self.assertIsNone(checker.first_mismatch, f"blob differs from the pattern at byte {checker.first_mismatch}")

    def test_head_requests(self):
        with self.client() as c:
            resp = c.request("HEAD", "/poolsim/blob?size=12345")
            self.assertStatus(resp, 200, "HEAD blob")
            self.assertEqual(resp.header("Content-Length"), "12345")
            self.assertIsNotNone(resp.header("X-Blob-Fnv1a64"))
            resp = c.request("HEAD", "/poolsim/blob?size=100&chunked=1")
            self.assertEqual(resp.header("Transfer-Encoding"), "chunked", resp.describe())
            resp = c.request("HEAD", "/traveler?action=getStatus")
            self.assertEqual(resp.header("Content-Length"), str(len(b"Traveler server is available.")))
            # No body bytes were sent: the next response parses cleanly on the same connection.
            resp = c.request("GET", "/poolsim/status/202")
            self.assertStatus(resp, 202, "request after HEAD")

    # ---- 1xx ----

    def test_early_hints(self):
        resp = self.get("/poolsim/early-hints")
        self.assertStatus(resp, 200, "early hints")
        self.assertEqual([r.status for r in resp.interim], [103], resp.describe())
        self.assertIn("rel=preload", resp.interim[0].header("Link", ""))

    def test_expect_100_continue(self):
        body = b"z" * 5000
        with self.client() as c:
            c.send(build_request("POST", "/poolsim/echo",
                                 {"Expect": "100-continue", "Content-Length": str(len(body))}))
            interim = c.read_head(timeout=3)
            self.assertEqual(interim.status, 100, "expected 100 Continue before the body is sent")
            c.send(body)
            resp = c.read_response()
            self.assertStatus(resp, 200, "echo after 100")
            self.assertEqual(resp.json()["bytes"], len(body))

    # ---- holds and delays ----

    def test_ping_hold_override(self):
        start = time.monotonic()
        resp = self.get("/Microsoft-Server-ActiveSync?Cmd=Ping&User=u1&hold=300ms")
        elapsed = time.monotonic() - start
        self.assertStatus(resp, 200, "held Ping")
        self.assertEqual(resp.json()["cmd"], "Ping")
        self.assertGreaterEqual(elapsed, 0.29, "Ping answered before its hold")
        self.assertLess(elapsed, 2.0, "Ping held far longer than hold=300ms")

    def test_ping_hold_default_from_cli(self):
        with Poolsim("hold1", args=["--ping-hold", "250ms"]) as sim:
            start = time.monotonic()
            resp = sim.get("/Microsoft-Server-ActiveSync?Cmd=Ping")
            elapsed = time.monotonic() - start
            self.assertStatus(resp, 200, "Ping")
            self.assertGreaterEqual(elapsed, 0.24)
            self.assertLess(elapsed, 2.0)
            start = time.monotonic()
            sim.get("/Microsoft-Server-ActiveSync?Cmd=Sync")
            self.assertLess(time.monotonic() - start, 0.2, "only Ping is held")

    def test_ping_cancelled_on_disconnect(self):
        before = self.sim.stats()["holds_cancelled"]
        c = self.client()
        c.send(build_request("GET", "/Microsoft-Server-ActiveSync?Cmd=Ping&hold=20s"))
        harness.wait_until(lambda: self.sim.stats()["holds_started"] > 0, 3, what="the hold to start")
        c.close()
        harness.wait_until(lambda: self.sim.stats()["holds_cancelled"] == before + 1, 3,
                           what="poolsim to cancel the held Ping after the client left")

    def test_latency(self):
        with Poolsim("slow1", args=["--latency-ms", "150"]) as sim:
            start = time.monotonic()
            resp = sim.get("/traveler?action=getStatus")
            elapsed = time.monotonic() - start
            self.assertStatus(resp, 200, "delayed getStatus")
            self.assertGreaterEqual(elapsed, 0.14)
            # Early hints go out at once; only the final response waits.
            with HttpClient(sim.port) as c:
                c.send(build_request("GET", "/poolsim/early-hints"))
                start = time.monotonic()
                hint = c.read_head(timeout=2)
                self.assertEqual(hint.status, 103)
                self.assertLess(time.monotonic() - start, 0.12)
                self.assertStatus(c.read_response(), 200, "after hints")

    def test_error_rate_is_deterministic(self):
        def sample(seed):
            with Poolsim("flaky", args=["--error-rate", "0.3", "--seed", str(seed)]) as sim:
                with HttpClient(sim.port) as c:
                    statuses = [c.request("GET", "/Microsoft-Server-ActiveSync?Cmd=Sync").status
                                for _ in range(200)]
                    # getStatus is never failed on purpose.
                    self.assertStatus(c.request("GET", "/traveler?action=getStatus"), 200, "getStatus")
                    stats = c.request("GET", "/poolsim/stats").json()
            return statuses, stats
        a, stats = sample(7)
        b, _ = sample(7)
        c, _ = sample(8)
        errors = a.count(503)
        self.assertEqual(set(a), {200, 503})
        self.assertTrue(30 <= errors <= 90, f"expected about 60 of 200 answers to be 503, got {errors}")
        self.assertEqual(stats["injected_errors"], errors)
        self.assertEqual(a, b, "same seed must give the same sequence")
        self.assertNotEqual(a, c, "different seeds should give different sequences")

    # ---- connection handling ----

    def test_keep_alive_many_requests(self):
        before = self.sim.stats()["total_connections"]
        with self.client() as c:
            for i in range(200):
                resp = c.request("GET", f"/Microsoft-Server-ActiveSync?Cmd=Sync&User=u{i}")
                self.assertEqual(resp.header("X-User"), f"u{i}")
        after = self.sim.stats()["total_connections"]
        self.assertEqual(after - before, 2, "200 requests should use one connection (+1 for stats)")

    def test_pipelining_in_order(self):
        reqs = [
            build_request("GET", "/poolsim/status/201"),
            build_request("POST", "/poolsim/echo", body=b"abc"),
            build_request("GET", "/Microsoft-Server-ActiveSync?Cmd=Ping&hold=200ms&User=held"),
            build_request("HEAD", "/poolsim/blob?size=10"),
            build_request("GET", "/poolsim/blob?size=70000&chunked=1"),
            build_request("GET", "/Microsoft-Server-ActiveSync?Cmd=Sync&User=last"),
        ]
        with self.client() as c:
            c.send(b"".join(reqs))
            resps = c.read_responses(len(reqs), heads={3})
        self.assertEqual([r.status for r in resps], [201, 200, 200, 200, 200, 200])
        self.assertEqual(resps[1].json()["bytes"], 3)
        self.assertEqual(resps[2].header("X-User"), "held")
        self.assertEqual(resps[3].header("Content-Length"), "10")
        self.assertEqual(resps[4].body, harness.blob_bytes(0, 70000))
        self.assertEqual(resps[5].header("X-User"), "last")

    def test_pipelining_flood(self):
        n = 2000
        with self.client(timeout=30) as c:
            c.send(b"".join(build_request("GET", f"/Microsoft-Server-ActiveSync?Cmd=Sync&User=p{i}")
                            for i in range(n)))
            users = [c.read_response().header("X-User") for _ in range(n)]
        self.assertEqual(users, [f"p{i}" for i in range(n)])

    def test_pipelining_client_not_reading(self):
        # 100k pipelined requests from a client that reads nothing for a while: poolsim must
        # stop reading instead of queueing ~20 MB of answers, then answer them all in order.
        n = 100_000
        data = b"".join(build_request("GET", f"/Microsoft-Server-ActiveSync?Cmd=Sync&User=q{i}")
                        for i in range(n))
        rss_before = _rss_kib(self.sim.proc.pid)
        requests_before = self.sim.stats()["requests"]
        with self.client(timeout=60) as c:
            errors = []

            def send():
                try:
                    c.sock.sendall(data)
                except OSError as e:
                    errors.append(e)

            sender = harness.threading.Thread(target=send, daemon=True)
            sender.start()
            time.sleep(1.0)
            grown = _rss_kib(self.sim.proc.pid) - rss_before
            answered = self.sim.stats()["requests"] - requests_before - 1
            # Kernel socket buffers absorb some answers; the rest must wait unread.
            self.assertLess(answered, n * 0.8, f"poolsim answered {answered} of {n} requests while the "
                                               "client read nothing: no back-pressure")
            self.assertLess(grown, 16 * 1024, f"poolsim RSS grew {grown} KiB for a client that does not read")
            for i in range(n):
                resp = c.read_response()
                if resp.header("X-User") != f"q{i}":
                    self.fail(f"response {i} is for {resp.header('X-User')!r}")
            sender.join(timeout=10)
            self.assertEqual(errors, [])

    def test_connection_close(self):
        with self.client() as c:
            c.send(build_request("GET", "/traveler?action=getStatus", {"Connection": "close"})
                   + build_request("GET", "/poolsim/status/500"))
            resp = c.read_response()
            self.assertStatus(resp, 200, "Connection: close")
            self.assertTrue(resp.has_token("Connection", "close"), resp.describe())
            self.assertTrue(c.wait_closed(3), "poolsim kept the connection open after Connection: close")
            self.assertEqual(c.after_close, b"", "a pipelined request after close was answered")

    def test_http10(self):
        with self.client() as c:
            c.send(build_request("GET", "/traveler?action=getStatus", version="HTTP/1.0"))
            self.assertStatus(c.read_response(), 200, "HTTP/1.0")
            self.assertTrue(c.wait_closed(3), "HTTP/1.0 without keep-alive must close")
        with self.client() as c:
            resp = c.request("GET", "/traveler?action=getStatus", {"Connection": "keep-alive"}, version="HTTP/1.0")
            self.assertTrue(resp.has_token("Connection", "keep-alive"), resp.describe())
            self.assertStatus(c.request("GET", "/poolsim/status/200", version="HTTP/1.0"), 200, "second")

    def test_half_close_still_answered(self):
        with self.client() as c:
            c.send(build_request("POST", "/poolsim/echo", body=b"12345"))
            c.sock.shutdown(socket.SHUT_WR)
            self.assertEqual(c.read_response().json()["bytes"], 5)
            self.assertTrue(c.wait_closed(3))

    def test_malformed_requests(self):
        cases = {
            "garbage": b"HELLO\r\n\r\n",
            "bad method": b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n",
            "bad version": b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
            "bad chunk size": b"POST /poolsim/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                              b"zz\r\nhello\r\n0\r\n\r\n",
            "CL and TE": b"POST /poolsim/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "two CL": b"POST /poolsim/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
            "header without colon": b"GET / HTTP/1.1\r\nNoColon\r\n\r\n",
            "bare LF": b"GET / HTTP/1.1\nHost: x\n\n",
            "bad transfer coding": b"POST /poolsim/echo HTTP/1.1\r\nHost: x\r\n"
                                   b"Transfer-Encoding: chunked, gzip\r\n\r\n",
            "HTTP/2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "NUL in target": b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
            "binary": bytes(range(256)) * 4,
        }
        for name, raw in cases.items():
            with self.subTest(case=name):
                with self.client() as c:
                    c.send(raw)
                    resp = c.read_response(timeout=3)
                    self.assertStatus(resp, 400, name)
                    self.assertTrue(resp.has_token("Connection", "close"), resp.describe())
                    self.assertTrue(c.wait_closed(3), f"{name}: connection not closed after 400")
        self.assertStatus(self.get("/traveler?action=getStatus"), 200, "after malformed requests")

    def test_mutated_requests_never_crash(self):
        # Byte-level mutations of valid requests, each on its own connection, sent in random
        # splits: whatever poolsim answers, it must stay up.
        rng = harness.random.Random(5)
        seeds = [
            build_request("POST", "/Microsoft-Server-ActiveSync?Cmd=Sync&User=a%41", body=b"hello"),
            build_request("POST", "/poolsim/echo", {"Transfer-Encoding": "chunked"}) + b"5\r\nhello\r\n0\r\n\r\n",
            build_request("GET", "/poolsim/blob?size=100&chunked=1", {"Authorization": "Basic Ym9iOng="}),
            build_request("GET", "/poolsim/early-hints", {"Expect": "100-continue", "Content-Length": "3"}) + b"abc",
        ]
        answered = 0
        for i in range(300):
            raw = bytearray(rng.choice(seeds) * rng.randint(1, 3))
            for _ in range(rng.randint(1, 6)):
                pos = rng.randrange(len(raw))
                op = rng.randrange(3)
                if op == 0:
                    raw[pos] = rng.randrange(256)
                elif op == 1:
                    del raw[pos:pos + rng.randint(1, 8)]
                else:
                    raw[pos:pos] = bytes(rng.choice(b"\r\n :;%0Fz\x00\x7f\xff") for _ in range(rng.randint(1, 4)))
            sent = bytes(raw)
            s = socket.create_connection(("127.0.0.1", self.sim.port), timeout=2)
            try:
                while raw:
                    n = rng.randint(1, len(raw))
                    s.sendall(raw[:n])
                    del raw[:n]
                s.shutdown(socket.SHUT_WR)
                while True:
                    data = s.recv(65536)
                    if not data:
                        break
                    answered += data.count(b"HTTP/1.1 ")
            except OSError:
                pass
            finally:
                s.close()
            self.assertIsNone(self.sim.returncode, f"poolsim died on mutation {i}: {sent!r}\n"
                                                   f"{self.sim.stderr_text()}")
        self.assertGreater(answered, 300, "the mutated requests got almost no answers: test is broken")
        self.assertStatus(self.get("/traveler?action=getStatus"), 200, "after the mutations")

    def test_oversized_head(self):
        with self.client() as c:
            c.send(b"GET /" + b"a" * (70 * 1024) + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            self.assertStatus(c.read_response(timeout=3), 414, "70 KiB URI")
        with self.client() as c:
            c.send(b"GET / HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(600)) + b"\r\n")
            self.assertStatus(c.read_response(timeout=3), 431, "600 headers")

    def test_abrupt_disconnects(self):
        # Half-sent requests, resets in the middle of a blob: poolsim must shrug them off.
        for raw in (b"GET /poolsim/blob?size=50000000 HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"POST /poolsim/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc",
                    b"GET /traveler?act"):
            s = socket.create_connection(("127.0.0.1", self.sim.port))
            s.sendall(raw)
            time.sleep(0.05)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()  # RST
        harness.wait_until(lambda: self.sim.stats()["open_connections"] == 1, 3,
                           what="poolsim to drop the aborted connections")

    # ---- other endpoints ----

    def test_status_codes(self):
        with self.client() as c:
            for code in (200, 201, 404, 418, 500, 502, 503, 504):
                resp = c.request("POST", f"/poolsim/status/{code}", body=b"ignored")
                self.assertStatus(resp, code, f"/poolsim/status/{code}")
                self.assertEqual(resp.body, f"status {code}\n".encode())
            resp = c.request("GET", "/poolsim/status/204")
            self.assertStatus(resp, 204, "204")
            self.assertIsNone(resp.header("Content-Length"))
            for bad in ("999", "abc", "100"):
                self.assertStatus(c.request("GET", f"/poolsim/status/{bad}"), 400, bad)
            self.assertStatus(c.request("GET", "/nothing/here"), 404, "unknown path")
            self.assertStatus(c.request("GET", "/poolsim/nothing"), 404, "unknown poolsim path")

    def test_headers_echo(self):
        resp = self.get("/poolsim/headers", [("Host", "mail.example.com"), ("X-Forwarded-For", "1.1.1.1"),
                                             ("x-forwarded-for", "2.2.2.2"), ("Via", "1.1 a"),
                                             ("Empty", ""), ("Trailing", "v  ")])
        self.assertStatus(resp, 200, "headers")
        h = resp.json()
        self.assertEqual(h["host"], ["mail.example.com"])
        self.assertEqual(h["x-forwarded-for"], ["1.1.1.1", "2.2.2.2"])
        self.assertEqual(h["via"], ["1.1 a"])
        self.assertEqual(h["empty"], [""])
        self.assertEqual(h["trailing"], ["v"])

    def test_stats(self):
        before = self.sim.stats()
        with self.client() as c:
            c.request("GET", "/traveler?action=getStatus")
            c.request("GET", "/Microsoft-Server-ActiveSync?Cmd=Sync")
            c.request("GET", "/nope")
            stats = c.request("GET", "/poolsim/stats").json()
        self.assertEqual(stats["server"], "pool7")
        self.assertEqual(stats["requests"] - before["requests"], 4)  # 3 + this stats call
        by = stats["by_class"]
        self.assertEqual(by["status"] - before["by_class"]["status"], 1)
        self.assertEqual(by["activesync"] - before["by_class"]["activesync"], 1)
        self.assertEqual(by["not_found"] - before["by_class"]["not_found"], 1)
        self.assertGreaterEqual(stats["open_connections"], 1)

    # ---- process ----

    def test_cli_errors(self):
        for argv in ([], ["--id", "x"], ["--id", "x", "--listen", "nonsense"],
                     ["--id", "x", "--listen", "127.0.0.1:0", "--error-rate", "2"],
                     ["--id", "x", "--listen", "127.0.0.1:0", "--ping-hold", "30"]):
            with self.subTest(argv=argv):
                proc = harness.subprocess.run([harness.POOLSIM_BIN, *argv], capture_output=True, timeout=5)
                self.assertNotEqual(proc.returncode, 0, f"{argv} accepted")
                self.assertTrue(proc.stderr, f"{argv}: no message on stderr")
        busy = self.sim.port
        proc = harness.subprocess.run([harness.POOLSIM_BIN, "--id", "x", "--listen", f"127.0.0.1:{busy}"],
                                      capture_output=True, timeout=5)
        self.assertEqual(proc.returncode, 1, f"listening on a busy port: {proc.stderr!r}")

    def test_sigterm_with_open_connections_exits_0(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            with self.subTest(signal=sig.name):
                sim = Poolsim("term1").start()
                idle = HttpClient(sim.port)
                idle.request("GET", "/traveler?action=getStatus")
                held = HttpClient(sim.port)
                held.send(build_request("GET", "/Microsoft-Server-ActiveSync?Cmd=Ping&hold=30s"))
                streaming = HttpClient(sim.port)
                streaming.send(build_request("GET", "/poolsim/blob?size=500000000"))
                streaming.read_head()
                partial = HttpClient(sim.port)
                partial.send(b"POST /poolsim/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab")
                harness.wait_until(lambda: sim.stats()["open_connections"] >= 5, 3, what="5 connections")
                sim.kill(sig)
                try:
                    sim.proc.wait(timeout=5)
                except harness.subprocess.TimeoutExpired:
                    sim.stop()
                    self.fail(f"poolsim did not exit within 5s of {sig.name}")
                self.assertEqual(sim.returncode, 0, f"exit code after {sig.name}; stderr:\n{sim.stderr_text()}")
                for c in (idle, held, streaming, partial):
                    c.close()
                sim.stop()


def _rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


if __name__ == "__main__":
    harness.main()
