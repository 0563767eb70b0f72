#!/usr/bin/env python3
"""Limits and tunnels: the request-body limit (413), an allowed Upgrade tunnelled through a
real 101, and accepting paused at max_connections and resumed when a connection closes."""
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
