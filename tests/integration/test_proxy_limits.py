#!/usr/bin/env python3
"""Limits and tunnels: the request-body limit (413), an allowed Upgrade tunnelled through a
real 101, accepting paused at max_connections and resumed when a connection closes, and a
client that pipelines requests but never reads its answers."""
import socket
import threading
import time

import harness
from harness import HttpClient, Sprayer, TestCase, build_request, wait_until


class EchoUpgradeServer:
    """An upstream that answers one Upgrade request with 101 and then echoes bytes."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(10)
        self.port = self.sock.getsockname()[1]
        self.seen = b""
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        conn.settimeout(10)
        with conn:
            while b"\r\n\r\n" not in self.seen:
                data = conn.recv(4096)
                if not data:
                    return
                self.seen += data
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
            for _ in range(100):  # bounded echo loop
                data = conn.recv(4096)
                if not data:
                    return
                conn.sendall(data)

    def close(self):
        self.sock.close()


class LimitsTest(TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pool = harness.pool(1)
        cls.sprayer = Sprayer(harness.sprayer_config(cls.pool, workers=1, limits={"max_body_bytes": 1024,
                                                                                   "max_connections": 4})).start()

    @classmethod
    def tearDownClass(cls):
        cls.sprayer.stop()
        cls.pool.stop()

    def test_content_length_over_the_limit_is_413(self):
        with self.sprayer.client() as c:
            resp = c.request("POST", "/poolsim/echo", body=b"x" * 2000)
            self.assertStatus(resp, 413, "Content-Length over limits.max_body_bytes")
            self.assertTrue(c.wait_closed(3), "the connection must close after a 413")

    def test_chunked_body_over_the_limit_is_413(self):
        with self.sprayer.client() as c:
            c.send(build_request("POST", "/poolsim/echo", headers=[("Transfer-Encoding", "chunked")]))
            for _ in range(3):
                c.send(b"258\r\n" + b"y" * 600 + b"\r\n")
            resp = c.read_response(timeout=5)
            self.assertStatus(resp, 413, "chunked body over limits.max_body_bytes")

    def test_statuses_chosen_while_reading_the_head(self):
        # Rejections decided once the head is complete keep their own status (not a plain 400).
        for request, status in ((b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
                                (b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 405),
                                (b"GET / HTTP/1.1\r\n\r\n", 400)):
            with self.sprayer.client() as c:
                c.send(request)
                self.assertStatus(c.read_response(timeout=5), status, request.split(b"\r\n")[0].decode())

    def test_body_within_the_limit_passes(self):
        with self.sprayer.client() as c:
            resp = c.request("POST", "/poolsim/echo", body=b"z" * 1024)
            self.assertStatus(resp, 200, "body exactly at the limit")
            self.assertEqual(resp.json()["bytes"], 1024)

    def test_accepting_pauses_at_max_connections_and_resumes(self):
        held = [self.sprayer.client() for _ in range(4)]
        try:
            for c in held:
                self.assertStatus(c.request("GET", "/traveler?action=getStatus"), 200, "one of the first four")
            extra = HttpClient(self.sprayer.port, timeout=5)
            extra.send(build_request("GET", "/traveler?action=getStatus"))
            # Over the limit the connection waits in the kernel's queue: no answer yet.
            with self.assertRaises(Exception):
                extra.read_response(timeout=0.7)
            held.pop().close()
            resp = extra.read_response(timeout=5)
            self.assertStatus(resp, 200, "the fifth connection, once one closed")
            extra.close()
        finally:
            for c in held:
                c.close()


class NonReadingClientTest(TestCase):
    """10,000 pipelined GETs on one connection that never reads: sprayer stops reading and
    forwarding once the bytes queued towards the client pass http.buffer_high_watermark, so it
    forwards a bounded number and its memory stays flat. The answers are 4 KiB: each comes from
    the pool server in one read, so no pause of the server side within an answer hides the
    missing one between requests (16 KiB answers often come in two reads)."""
    TIMEOUT = 60.0
    REQUESTS = 10000
    ANSWER = 4096
    # Answers that fit the watermark plus the kernel's socket buffers (the client's is set to
    # 64 KiB; sprayer's send buffer grows to tcp_wmem's maximum, 4 MiB by default).
    BOUND = (12 << 20) // ANSWER
    RSS_BUDGET_KIB = 32 * 1024

    def test_pipelined_requests_stop_while_the_client_does_not_read(self):
        with harness.pool(1) as pool:
            sprayer = Sprayer(harness.sprayer_config(pool, workers=1, timeouts={"client_send": "60s"})).start()
            self.addCleanup(sprayer.stop)
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            sock.connect(("127.0.0.1", sprayer.port))
            self.addCleanup(sock.close)
            one = build_request("GET", f"/poolsim/blob?size={self.ANSWER}")
            sender = threading.Thread(target=self._send_all, args=(sock, one * self.REQUESTS), daemon=True)
            sender.start()

            def forwarded():
                return pool[0].stats()["by_class"]["blob"]
            # Forwarding stops: the count holds still for a second (and never passes the bound).
            history = []

            def settled():
                n = forwarded()
                self.assertLess(n, self.BOUND, f"{n} of {self.REQUESTS} requests forwarded to a client that reads "
                                               f"nothing (RSS {sprayer.rss_kib()} KiB)")
                history.append((time.monotonic(), n))
                old = [c for t, c in history if t <= history[-1][0] - 1.0]
                return n > 0 and old and old[-1] == n
            wait_until(settled, 30, what="forwarding to stop", interval=0.2)
            grown = sprayer.rss_kib() - sprayer.start_rss_kib
            self.assertLess(grown, self.RSS_BUDGET_KIB, f"RSS grew by {grown} KiB for {forwarded()} forwarded answers")
            # It was a pause, not a failure: the client reads, and the answers flow again.
            sock.settimeout(10)
            received = 0
            deadline = time.monotonic() + 20
            while received < 2 * self.BOUND * self.ANSWER and time.monotonic() < deadline:
                data = sock.recv(1 << 20)
                if not data:
                    break
                received += len(data)
            self.assertGreater(received, self.BOUND * self.ANSWER, "answers after the client started reading")
            sprayer.assert_alive()

    @staticmethod
    def _send_all(sock, data):
        try:
            sock.sendall(data)
        except OSError:
            pass  # the test closes the socket while sprayer, rightly, reads no more of it


class UpgradeTest(TestCase):
    def test_allowed_upgrade_is_tunnelled(self):
        upstream = EchoUpgradeServer()
        config = harness.sprayer_config([("echo1", f"127.0.0.1:{upstream.port}")], workers=1,
                                        http={"allow_upgrade": True}, health={"enabled": False})
        sprayer = Sprayer(config).start()
        try:
            with sprayer.client() as c:
                c.send(build_request("GET", "/chat", headers=[("Connection", "Upgrade"), ("Upgrade", "echo")]))
                resp = c.read_response(timeout=5, head=True)
                self.assertStatus(resp, 101, "upgrade through sprayer")
                self.assertEqual(resp.header("Upgrade"), "echo")
                c.send(b"hello through the tunnel")
                got = b""
                deadline = time.monotonic() + 5
                while len(got) < 24 and time.monotonic() < deadline:
                    got += c.sock.recv(4096)
                self.assertEqual(got, b"hello through the tunnel")
            self.assertIn(b"upgrade: echo", upstream.seen.lower())
        finally:
            sprayer.stop()
            upstream.close()


if __name__ == "__main__":
    harness.main()
