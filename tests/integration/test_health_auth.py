#!/usr/bin/env python3
"""Status checks with credentials: a pool server whose status URL wants a Basic login and a
header (as a real Traveler server may). sprayer reads the login from health.auth_file, sends
health.headers, takes the server up only with the right login, follows a changed file on
SIGHUP, and never writes the password to its log.

The server here is a small HTTP server of the test's own (poolsim has no login on its status
URL); it answers getStatus like Traveler and everything else like a pool server.
"""
import base64
import http.server
import os
import signal
import threading

import harness
from harness import Sprayer, TestCase, wait_until

PASSWORD = "s3cret-Check-Pw"


class StatusServer:
    """getStatus: 200 with the Traveler text for the login `want`, else 401."""

    def __init__(self, user, password):
        self.want = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.seen = []  # (Authorization, X-Check) of each status request
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                auth = self.headers.get("Authorization")
                check = self.headers.get("X-Check")
                if self.path.startswith("/traveler?action=getStatus"):
                    with outer.lock:
                        outer.seen.append((auth, check))
                    ok = auth == outer.want and check == "sprayer"
                    body = b"Traveler server is available." if ok else b"login required"
                    self.send_response(200 if ok else 401)
                else:
                    body = b"hello"
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:
                    pass  # the checker may close once it has read what it needs

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def count(self):
        with self.lock:
            return len(self.seen)

    def last(self):
        with self.lock:
            return self.seen[-1] if self.seen else None

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class HealthAuthTest(TestCase):
    def setUp(self):
        super().setUp()
        self.server = StatusServer("svc-check", PASSWORD)
        self.auth_file = harness.scratch_path("check") + ".auth"
        self.write_auth("svc-check:wrong-password")
        health = {"interval": "100ms", "timeout": "500ms", "rise": 1, "fall": 1, "min_hold": "0s",
                  "max_hold": "0s", "auth_file": self.auth_file, "headers": {"X-Check": "sprayer"}}
        config = harness.sprayer_config([("pool1", f"127.0.0.1:{self.server.port}")], health=health,
                                        log_level="debug")
        self.sprayer = Sprayer(config).start()

    def tearDown(self):
        self.sprayer.stop()
        self.server.stop()
        super().tearDown()

    def write_auth(self, text):
        tmp = self.auth_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(text + "\n")
        os.chmod(tmp, 0o600)
        os.rename(tmp, self.auth_file)

    def up(self):
        return harness.metric(self.sprayer.admin_port, "sprayer_server_up", server="pool1")

    @harness.timeout(60)
    def test_login_from_file_headers_and_reload(self):
        # Started with a wrong password in the file: checks fail, the server is down.
        wait_until(lambda: self.server.count() >= 2 and self.up() == 0, 10.0,
                   what="pool1 down while the checks send the wrong login")
        auth, check = self.server.last()
        self.assertEqual(auth, "Basic " + base64.b64encode(b"svc-check:wrong-password").decode())
        self.assertEqual(check, "sprayer")
        self.assertEqual(self.sprayer.request("GET", "/Microsoft-Server-ActiveSync?Cmd=Ping&User=a").status, 503)

        # The right one, reloaded by SIGHUP: the server comes up and takes requests.
        self.write_auth("svc-check:" + PASSWORD)
        os.kill(self.sprayer.pid, signal.SIGHUP)
        wait_until(lambda: self.up() == 1, 10.0, what="pool1 up once the login was fixed")
        self.assertEqual(self.server.last(), (self.server.want, "sprayer"))
        self.assertStatus(self.sprayer.request("GET", "/Microsoft-Server-ActiveSync?Cmd=Ping&User=a"), 200)

        # A file that is not there refuses the reload; the running login stays.
        os.rename(self.auth_file, self.auth_file + ".away")
        os.kill(self.sprayer.pid, signal.SIGHUP)
        wait_until(lambda: "health.auth_file" in self.sprayer.stderr_text(), 10.0, what="the refused reload logged")
        before = self.server.count()
        wait_until(lambda: self.server.count() >= before + 3, 10.0, what="more checks after the refused reload")
        self.assertEqual(self.up(), 1)
        self.assertEqual(self.server.last()[0], self.server.want)

        log = self.sprayer.stderr_text()
        self.assertNotIn(PASSWORD, log)
        self.assertNotIn("wrong-password", log)
        self.assertNotIn(self.server.want.split()[1], log)


if __name__ == "__main__":
    harness.main()
