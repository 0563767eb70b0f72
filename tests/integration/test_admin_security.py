"""The admin API against a browser it does not trust and callers without the right token:
a forged cross-origin form POST (the CSRF that put a server into maintenance) is refused and
changes nothing; state changes need a JSON content type or X-Sprayer-Admin and no foreign
Origin; a missing token is 401, a wrong one 403, and each refusal is logged with the client
address and never the token; off loopback every read but /healthz (/metrics, /status and its
JSON, servers, ownership, route) needs a read token, which a browser may give at its login
prompt."""

import base64

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Sprayer, wait_until  # noqa: E402

TOKEN = "write-t0ken-sprayer"
READ_TOKEN = "read-t0ken-sprayer"


def admin_state(sprayer, sid, headers=()):
    resp = harness.http_request(sprayer.admin_port, "GET", "/api/v1/servers", headers=list(headers), timeout=5)
    return next(s for s in json.loads(resp.body)["servers"] if s["id"] == sid)["admin"]


class NoTokenTest(harness.TestCase):
    """The default: no token, admin on loopback. The CSRF rules are all that stand."""

    @classmethod
    def setUpClass(cls):
        cls.pool = harness.pool(2)
        cls.addClassCleanup(cls.pool.stop)
        cls.sprayer = Sprayer(harness.sprayer_config(cls.pool)).start()
        cls.addClassCleanup(cls.sprayer.stop)

    def post(self, target, headers, body=None):
        return harness.http_request(self.sprayer.admin_port, "POST", target, headers=headers, body=body,
                                    host=f"127.0.0.1:{self.sprayer.admin_port}", timeout=5)

    def test_forged_form_post_is_refused(self):
        # What <form method=post action=http://127.0.0.1:9100/api/v1/servers/pool1/maintenance>
        # on another site sends from the operator's browser.
        resp = self.post("/api/v1/servers/pool1/maintenance",
                         [("Origin", "http://evil.example"), ("Content-Type", "application/x-www-form-urlencoded")],
                         body=b"x=1")
        self.assertEqual(resp.status, 403, resp.body)
        self.assertIn(b"X-Sprayer-Admin", resp.body)
        self.assertEqual(admin_state(self.sprayer, "pool1"), "ready", "a refused call must change nothing")
        # text/plain, the other content type a form (or a no-cors fetch) may send.
        resp = self.post("/api/v1/servers/pool1/maintenance", [("Content-Type", "text/plain")], body=b"{}")
        self.assertEqual(resp.status, 403, resp.body)
        self.assertEqual(admin_state(self.sprayer, "pool1"), "ready")
        wait_until(lambda: "refused (403)" in self.sprayer.stderr_text(), 5, what="the refusal in the log")
        self.assertIn("from 127.0.0.1", self.sprayer.stderr_text())

    def test_foreign_origin_refused_even_with_the_header(self):
        resp = self.post("/api/v1/servers/pool1/drain",
                         [("Origin", "http://evil.example"), *harness.ADMIN_WRITE])
        self.assertEqual(resp.status, 403, resp.body)
        self.assertIn(b"cross-origin", resp.body)
        resp = self.post("/api/v1/servers/pool1/drain", [("Origin", "null"), ("Content-Type", "application/json")],
                         body=b"{}")
        self.assertEqual(resp.status, 403, resp.body)
        self.assertEqual(admin_state(self.sprayer, "pool1"), "ready")

    def test_same_origin_json_and_header_are_accepted(self):
        try:
            resp = self.post("/api/v1/servers/pool2/drain",
                             [("Origin", f"http://127.0.0.1:{self.sprayer.admin_port}"),
                              ("Content-Type", "application/json; charset=utf-8")], body=b"{}")
            self.assertEqual(resp.status, 200, resp.body)
            self.assertEqual(admin_state(self.sprayer, "pool2"), "drain")
            resp = self.post("/api/v1/servers/pool2/ready", harness.ADMIN_WRITE)  # curl, no Origin
            self.assertEqual(resp.status, 200, resp.body)
            self.assertEqual(admin_state(self.sprayer, "pool2"), "ready")
        finally:
            self.post("/api/v1/servers/pool2/ready", harness.ADMIN_WRITE)

    def test_rebinding_host_refused(self):
        # A page at http://evil.example:PORT whose name now resolves to 127.0.0.1 is "same origin"
        # to the browser: Origin and Host agree, and it may send the header. Its Host gives it away.
        port = self.sprayer.admin_port
        resp = harness.http_request(port, "POST", "/api/v1/servers/pool1/maintenance",
                                    headers=[("Origin", f"http://evil.example:{port}"), ("X-Sprayer-Admin", "1")],
                                    host=f"evil.example:{port}", timeout=5)
        self.assertEqual(resp.status, 403, resp.body)
        self.assertIn(b"Host", resp.body)
        self.assertEqual(admin_state(self.sprayer, "pool1"), "ready")

    def test_reads_open_on_loopback(self):
        for target in ("/metrics", "/api/v1/route?user=jdoe", "/api/v1/servers", "/api/v1/status",
                       "/api/v1/ownership", "/status", "/healthz"):
            with self.subTest(target=target):
                resp = harness.http_request(self.sprayer.admin_port, "GET", target, timeout=5)
                self.assertEqual(resp.status, 200, resp.body[:200])


class TokenTest(harness.TestCase):
    """A write token and a read token, admin listening on every address (not loopback)."""

    @classmethod
    def setUpClass(cls):
        cls.pool = harness.pool(1)
        cls.addClassCleanup(cls.pool.stop)
        token_file = harness.scratch_path("read-token")
        with open(token_file, "w") as f:
            f.write(READ_TOKEN + "\n")
        port = harness.free_port()
        config = harness.sprayer_config(cls.pool, admin_port=port)
        config["admin"] = {"address": f"0.0.0.0:{port}", "token": TOKEN, "read_token_file": token_file,
                           "state_file": harness.scratch_path("admin-state")}
        cls.sprayer = Sprayer(config)
        cls.sprayer.admin_port = port
        cls.sprayer.start()
        cls.addClassCleanup(cls.sprayer.stop)

    def call(self, method, target, headers=()):
        return harness.http_request(self.sprayer.admin_port, method, target, headers=list(headers), timeout=5)

    def test_missing_and_wrong_tokens(self):
        target = "/api/v1/servers/pool1/drain"
        resp = self.call("POST", target, harness.ADMIN_WRITE)
        self.assertEqual(resp.status, 401, resp.body)
        self.assertIn(b"token required", resp.body)
        resp = self.call("POST", target, [("Authorization", "Bearer not-" + TOKEN), *harness.ADMIN_WRITE])
        self.assertEqual(resp.status, 403, resp.body)
        self.assertIn(b"wrong token", resp.body)
        # The read token does not change state.
        resp = self.call("POST", target, [("Authorization", "Bearer " + READ_TOKEN), *harness.ADMIN_WRITE])
        self.assertEqual(resp.status, 403, resp.body)
        self.assertEqual(admin_state(self.sprayer, "pool1", [("Authorization", "Bearer " + READ_TOKEN)]), "ready")
        wait_until(lambda: self.sprayer.stderr_text().count("refused (403)") >= 2, 5, what="refusals logged")
        log = self.sprayer.stderr_text()
        self.assertIn("refused (401)", log)
        self.assertIn("from 127.0.0.1", log)
        self.assertNotIn(TOKEN, log, "a refused token must never be logged")
        self.assertNotIn(READ_TOKEN, log)
        resp = self.call("POST", target, [("Authorization", "Bearer " + TOKEN), *harness.ADMIN_WRITE])
        self.assertEqual(resp.status, 200, resp.body)
        resp = self.call("POST", "/api/v1/servers/pool1/ready", [("Authorization", "Bearer " + TOKEN),
                                                                  *harness.ADMIN_WRITE])
        self.assertEqual(resp.status, 200, resp.body)

    def test_guarded_reads_need_a_token_off_loopback(self):
        for target in ("/metrics", "/api/v1/route?user=jdoe", "/status", "/api/v1/status", "/api/v1/servers",
                       "/api/v1/ownership"):
            with self.subTest(target=target):
                refused = self.call("GET", target)
                self.assertEqual(refused.status, 401)
                self.assertNotIn(b"pool1", refused.body, "a refused read must not tell about servers")
                # A browser opening the page is asked for the token (any user name, the token as password).
                self.assertIn("Basic", refused.header("WWW-Authenticate", ""))
                self.assertEqual(self.call("GET", target, [("Authorization", "Bearer nope")]).status, 403)
                self.assertEqual(self.call("GET", target, [("Authorization", "Bearer " + READ_TOKEN)]).status, 200)
                self.assertEqual(self.call("GET", target, [("Authorization", "Bearer " + TOKEN)]).status, 200)
                basic = base64.b64encode(f"operator:{READ_TOKEN}".encode()).decode()
                self.assertEqual(self.call("GET", target, [("Authorization", "Basic " + basic)]).status, 200)
                wrong = base64.b64encode(b"operator:guess").decode()
                self.assertEqual(self.call("GET", target, [("Authorization", "Basic " + wrong)]).status, 401)
        # /healthz stays open: keepalived's check script asks it without a token.
        self.assertEqual(self.call("GET", "/healthz").status, 200)


if __name__ == "__main__":
    harness.main()
