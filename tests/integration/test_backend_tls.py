"""TLS toward the pool servers (servers[].tls / upstream.tls) and HTTPS health checks.

poolsim serves HTTPS (--tls-cert/--tls-key, --tls-client-ca) and reports in X-Tls-* response
headers what its side of the handshake saw (SNI, version, resumed, client certificate CN), which
sprayer passes on to the client. A scratch PKI from the openssl CLI: the pool's CA and a server
certificate for pool.test (SAN pool.test, *.pool.test, IP 127.0.0.1), a second CA that signed a
certificate for the same names (the "wrong CA" case), and a client CA with sprayer's client
certificate.
"""

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import HttpClient, Poolsim, Sprayer, wait_until  # noqa: E402

OPENSSL = shutil.which("openssl")


def run(argv):
    proc = subprocess.run(argv, capture_output=True, timeout=20)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: {proc.stderr.decode(errors='replace')[-1500:]}")


class Pki:
    def __init__(self, folder):
        self.dir = folder
        with open(self.path("ext.cnf"), "w") as f:
            f.write("[server]\nsubjectAltName=DNS:pool.test,DNS:*.pool.test,IP:127.0.0.1\n"
                    "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
                    "[client]\nbasicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")
        self.ca = self._ca("ca", "/CN=pool test CA")
        self.other_ca = self._ca("other-ca", "/CN=some other CA")
        self.client_ca = self._ca("client-ca", "/CN=pool client CA")
        self.server, self.server_key = self._leaf("server", "ca", "/CN=pool.test", "server")
        self.wrong, self.wrong_key = self._leaf("wrong", "other-ca", "/CN=pool.test", "server")
        self.client, self.client_key = self._leaf("client", "client-ca", "/CN=sprayer-client", "client")

    def path(self, name):
        return os.path.join(self.dir, name)

    def _ca(self, name, subject):
        run([OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", self.path(name + ".key"), "-out", self.path(name + ".pem"), "-days", "30",
             "-subj", subject, "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        return self.path(name + ".pem")

    def _leaf(self, name, ca, subject, ext):
        key, csr, cert = self.path(name + ".key"), self.path(name + ".csr"), self.path(name + ".pem")
        run([OPENSSL, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", key, "-out", csr, "-subj", subject])
        run([OPENSSL, "x509", "-req", "-in", csr, "-CA", self.path(ca + ".pem"), "-CAkey", self.path(ca + ".key"),
             "-CAcreateserial", "-days", "30", "-extfile", self.path("ext.cnf"), "-extensions", ext, "-out", cert])
        return cert, key


def tls_poolsim(pki, id, cert=None, key=None, client_ca=None, port=0, late_tickets=False):
    args = ["--tls-cert", cert or pki.server, "--tls-key", key or pki.server_key]
    if late_tickets:
        args.append("--tls-late-tickets")
    if client_ca:
        args += ["--tls-client-ca", client_ca]
    return Poolsim(id, port=port, args=args).start()


metric = harness.metric


class BackendTlsTest(harness.TestCase):
    TIMEOUT = 90

    @classmethod
    def setUpClass(cls):
        if not OPENSSL:
            raise AssertionError("the openssl CLI is required")
        folder = harness.scratch_path("backend-tls")
        os.unlink(folder)
        os.mkdir(folder)
        cls.pki = Pki(folder)

    def setUp(self):
        super().setUp()
        self.procs = []

    def tearDown(self):
        for p in reversed(self.procs):
            with contextlib.suppress(Exception):
                p.stop()
        super().tearDown()

    def keep(self, proc):
        self.procs.append(proc)
        return proc

    def start_sprayer(self, servers, server_tls, upstream=None, health=None, workers=1, timeouts=None):
        """servers: Poolsim list; server_tls: one tls dict (or None) per server."""
        config = harness.sprayer_config(servers, workers=workers, upstream=upstream,
                                        timeouts=timeouts or {"upstream_connect": "1s", "upstream_response": "5s"},
                                        health=health or {"enabled": False})
        for entry, tls in zip(config["servers"], server_tls):
            if tls is not None:
                entry["tls"] = tls
        return self.keep(Sprayer(config).start())

    def api(self, sprayer, target):
        resp = harness.http_request(sprayer.admin_port, "GET", target, timeout=5)
        self.assertStatus(resp, 200, target)
        return json.loads(resp.body)

    def state(self, sprayer, sid):
        return next(s for s in self.api(sprayer, "/api/v1/servers")["servers"] if s["id"] == sid)["state"]

    # ---- the data path -----------------------------------------------------------------------

    def test_verified_connection_sends_sni_and_reuses_it(self):
        pool = self.keep(tls_poolsim(self.pki, "pool1"))
        sprayer = self.start_sprayer([pool], [{"ca_file": self.pki.ca, "sni": "a.pool.test"}])
        with sprayer.client() as c:
            for i in range(5):
                resp = c.request("GET", "/poolsim/headers")
                self.assertStatus(resp, 200, f"request {i}")
                self.assertEqual(resp.header("X-Served-By"), "pool1")
                self.assertEqual(resp.header("X-Tls-Sni"), "a.pool.test", "the configured SNI reaches the server")
                self.assertEqual(resp.header("X-Tls-Version"), "TLSv1.3")
        # One upstream connection carried the five requests (TLS 1.3 tickets arriving while it
        # was idle in the pool did not close it).
        self.assertEqual(metric(sprayer.admin_port, "sprayer_upstream_tls_handshakes_total"), 1)
        self.assertEqual(metric(sprayer.admin_port, "sprayer_upstream_tls_failures_total"), 0)

    def test_tickets_arriving_on_idle_pooled_connections(self):
        # The server sends a TLS 1.3 session ticket after every response, so it reaches the
        # pooled connection while it is idle: read (not taken for a stray response byte), the
        # connection stays reusable, and the newest ticket is the one offered next time.
        pool = self.keep(tls_poolsim(self.pki, "pool1", late_tickets=True))
        sprayer = self.start_sprayer([pool], [{"ca_file": self.pki.ca, "sni": "pool.test"}])
        for i in range(5):
            resp = sprayer.request("GET", "/poolsim/headers")  # a new client connection each time
            self.assertStatus(resp, 200, f"request {i}")
            self.assertEqual(resp.header("X-Tls-Resumed"), "0", "the pooled connection is reused, not redone")
        self.assertEqual(metric(sprayer.admin_port, "sprayer_upstream_tls_handshakes_total"), 1)
        self.assertEqual(metric(sprayer.admin_port, "sprayer_upstream_connections"), 1)

    def test_ip_address_server_verified_without_sni(self):
        pool = self.keep(tls_poolsim(self.pki, "pool1"))
        # The address is 127.0.0.1: checked against the certificate's IP SAN, no SNI sent.
        sprayer = self.start_sprayer([pool], [{"ca_file": self.pki.ca}])
        resp = sprayer.request("GET", "/poolsim/headers")
        self.assertStatus(resp, 200)
        self.assertEqual(resp.header("X-Tls-Sni"), "-")

    def test_wrong_name_is_refused(self):
        pool = self.keep(tls_poolsim(self.pki, "pool1"))
        sprayer = self.start_sprayer([pool], [{"ca_file": self.pki.ca, "sni": "pool.example.org"}])
        resp = sprayer.request("GET", "/poolsim/headers")
        self.assertStatus(resp, (502, 503), "a certificate for another name")
        wait_until(lambda: "TLS handshake failed" in sprayer.stderr_text(), 5, what="the log line")
        self.assertIn("hostname mismatch", sprayer.stderr_text())

    def test_wrong_ca_fails_over_to_the_next_candidate(self):
        bad = self.keep(tls_poolsim(self.pki, "pool1", self.pki.wrong, self.pki.wrong_key))
        good = self.keep(tls_poolsim(self.pki, "pool2"))
        sprayer = self.start_sprayer([bad, good], [None, None],
                                     upstream={"tls": {"ca_file": self.pki.ca, "sni": "pool.test"}})
        for i in range(12):
            resp = sprayer.request("GET", "/poolsim/headers")
            self.assertStatus(resp, 200, f"request {i}: the good server answers")
            self.assertEqual(resp.header("X-Served-By"), "pool2")
        log = sprayer.stderr_text()
        self.assertIn("upstream pool1: TLS handshake failed", log)
        self.assertIn("certificate verify failed", log)
        self.assertGreater(metric(sprayer.admin_port, "sprayer_upstream_tls_failures_total"), 0)
        sprayer.assert_alive()

    def test_only_server_with_wrong_ca_gives_an_error_response(self):
        bad = self.keep(tls_poolsim(self.pki, "pool1", self.pki.wrong, self.pki.wrong_key))
        sprayer = self.start_sprayer([bad], [{"ca_file": self.pki.ca, "sni": "pool.test"}])
        for _ in range(3):
            self.assertStatus(sprayer.request("GET", "/poolsim/headers"), (502, 503))
        self.assertIn("unable to get local issuer certificate", sprayer.stderr_text())
        sprayer.assert_alive()

    def test_tls_and_plain_mixed_up_fail_cleanly(self):
        # TLS configured for a plain HTTP server, and plain HTTP sent to an HTTPS one: an error
        # response and a log line, never a hang or a crash.
        plain = self.keep(Poolsim("plain1").start())
        tls = self.keep(tls_poolsim(self.pki, "tls1"))
        sprayer = self.start_sprayer([plain], [{"ca_file": self.pki.ca, "sni": "pool.test"}])
        self.assertStatus(sprayer.request("GET", "/poolsim/headers"), (502, 503), "TLS to a plain server")
        self.assertIn("upstream plain1: TLS handshake failed", sprayer.stderr_text())
        other = self.start_sprayer([tls], [None])
        self.assertStatus(other.request("GET", "/poolsim/headers"), (502, 503), "plain HTTP to a TLS server")
        for s in (sprayer, other):
            s.assert_alive()
        self.assertEqual(tls.returncode, None, "poolsim survives plain HTTP on its TLS port")

    def test_a_reload_that_reorders_servers_keeps_each_servers_tls_and_metric_name(self):
        # Servers keep their pool slot across reloads while their place in the file moves: TLS
        # settings and per-server metrics must follow the server, not its position.
        tls = self.keep(tls_poolsim(self.pki, "tlspool"))
        plain = self.keep(Poolsim("plainpool").start())
        sprayer = self.start_sprayer([tls], [{"ca_file": self.pki.ca, "sni": "pool.test"}])
        self.assertStatus(sprayer.request("GET", "/poolsim/headers?User=u0"), 200, "HTTPS to tlspool")
        config = harness.sprayer_config([plain, tls], workers=1, port=sprayer.port, admin_port=sprayer.admin_port,
                                        timeouts={"upstream_connect": "1s", "upstream_response": "5s"},
                                        health={"enabled": False})
        config["servers"][1]["tls"] = {"ca_file": self.pki.ca, "sni": "pool.test"}
        with open(sprayer.config_path, "w") as f:
            f.write(harness.to_yaml(config))
        os.kill(sprayer.pid, signal.SIGHUP)
        wait_until(lambda: "reload (SIGHUP): applied" in sprayer.stderr_text(), 10, interval=0.05, what="the reload")
        served = {}
        for i in range(40):  # new connections each time: both servers, each over its own protocol
            resp = sprayer.request("GET", f"/poolsim/headers?User=user{i}", headers=[("Connection", "close")])
            self.assertStatus(resp, 200, f"user{i} after the reload")
            served[resp.header("X-Served-By")] = resp.header("X-Tls-Version")
        self.assertEqual(set(served), {"tlspool", "plainpool"}, "both servers were used")
        self.assertTrue(served["tlspool"], "tlspool is still reached over TLS")
        self.assertFalse(served["plainpool"], "plainpool is reached in plain HTTP")
        text = harness.http_request(sprayer.admin_port, "GET", "/metrics", timeout=5).body.decode()
        rows = re.findall(r'^sprayer_requests_completed_total\{server="([^"]+)"', text, re.M)
        self.assertIn("tlspool", rows)
        self.assertIn("plainpool", rows)

    def test_sighup_reloads_the_ca_file(self):
        # The pool moves to a new CA: the ca_file is replaced and SIGHUP makes sprayer use it
        # for new connections; a broken file is refused and the working CA stays.
        pool = self.keep(tls_poolsim(self.pki, "pool1"))
        ca = os.path.join(self.pki.dir, "live-ca.pem")
        shutil.copy(self.pki.other_ca, ca)
        # One request per upstream connection: each request connects (and verifies) anew.
        sprayer = self.start_sprayer([pool], [{"ca_file": ca, "sni": "pool.test"}],
                                     upstream={"max_requests_per_connection": 1})
        self.assertStatus(sprayer.request("GET", "/poolsim/headers"), (502, 503), "the old CA does not fit")
        shutil.copy(self.pki.ca, ca)
        os.kill(sprayer.pid, signal.SIGHUP)
        wait_until(lambda: sprayer.request("GET", "/poolsim/headers").status == 200, 10, interval=0.1,
                   what="requests to pass with the reloaded CA")
        self.assertIn("backend TLS reload (SIGHUP)", sprayer.stderr_text())
        self.assertEqual(sprayer.request("GET", "/poolsim/headers").header("X-Tls-Resumed"), "1")
        # Sessions made under the previous settings are not offered after a reload: the server
        # is verified again by a full handshake.
        reloads = sprayer.stderr_text().count("backend TLS reload (SIGHUP): ")
        os.kill(sprayer.pid, signal.SIGHUP)
        wait_until(lambda: sprayer.stderr_text().count("backend TLS reload (SIGHUP): ") > reloads, 10,
                   interval=0.05, what="the second reload")
        self.assertEqual(sprayer.request("GET", "/poolsim/headers").header("X-Tls-Resumed"), "0")
        self.assertEqual(sprayer.request("GET", "/poolsim/headers").header("X-Tls-Resumed"), "1")
        with open(ca, "w") as f:
            f.write("not a certificate\n")
        os.kill(sprayer.pid, signal.SIGHUP)
        # The whole-file reload is refused (the CA does not load), then the certificates of the
        # running configuration are reloaded and refused again: the working CA stays.
        wait_until(lambda: re.search(r"backend TLS reload \(SIGHUP[^)]*\) refused", sprayer.stderr_text()), 10,
                   interval=0.1, what="the broken CA file to be refused")
        self.assertStatus(sprayer.request("GET", "/poolsim/headers"), 200, "the working CA stays after a refused reload")

    def test_verify_off_accepts_any_certificate_with_a_warning(self):
        bad = self.keep(tls_poolsim(self.pki, "pool1", self.pki.wrong, self.pki.wrong_key))
        sprayer = self.start_sprayer([bad], [{"verify": False}])
        self.assertStatus(sprayer.request("GET", "/poolsim/headers"), 200)
        self.assertIn("verification is OFF", sprayer.stderr_text())

    def test_client_certificate(self):
        pool = self.keep(tls_poolsim(self.pki, "pool1", client_ca=self.pki.client_ca))
        without = self.start_sprayer([pool], [{"ca_file": self.pki.ca, "sni": "pool.test"}])
        self.assertStatus(without.request("GET", "/poolsim/headers"), (502, 503), "no client certificate")
        without.stop()
        self.procs.remove(without)
        with_cert = self.start_sprayer([pool], [{"ca_file": self.pki.ca, "sni": "pool.test",
                                                 "client_cert": self.pki.client, "client_key": self.pki.client_key}])
        resp = with_cert.request("GET", "/poolsim/headers")
        self.assertStatus(resp, 200, "with the client certificate")
        self.assertEqual(resp.header("X-Tls-Client"), "sprayer-client")

    def test_sessions_resumed_on_reconnect(self):
        pool = self.keep(tls_poolsim(self.pki, "pool1"))
        # One request per upstream connection: every request after the first reconnects.
        sprayer = self.start_sprayer([pool], [{"ca_file": self.pki.ca, "sni": "pool.test"}],
                                     upstream={"max_requests_per_connection": 1})
        resumed = []
        for i in range(6):
            resp = sprayer.request("GET", "/poolsim/headers")
            self.assertStatus(resp, 200, f"request {i}")
            resumed.append(resp.header("X-Tls-Resumed"))
        self.assertEqual(resumed[0], "0")
        self.assertEqual(resumed[1:], ["1"] * 5, "every reconnect resumes the session")
        self.assertEqual(metric(sprayer.admin_port, "sprayer_upstream_tls_handshakes_total"), 6)
        self.assertEqual(metric(sprayer.admin_port, "sprayer_upstream_tls_resumed_total"), 5)

    def test_large_response_over_tls(self):
        pool = self.keep(tls_poolsim(self.pki, "pool1"))
        sprayer = self.start_sprayer([pool], [{"ca_file": self.pki.ca, "sni": "pool.test"}])
        size = 3 * 1024 * 1024 + 17
        checker = harness.BlobChecker()
        with sprayer.client(timeout=20) as c:
            c.send(harness.build_request("GET", f"/poolsim/blob?size={size}"))
            resp = c.read_response(sink=checker)
            self.assertStatus(resp, 200)
            self.assertEqual(checker.length, size)
            self.assertIsNone(checker.first_mismatch)

    # ---- HTTPS health checks -----------------------------------------------------------------

    def test_health_check_over_https(self):
        good = self.keep(tls_poolsim(self.pki, "pool1"))
        bad = self.keep(tls_poolsim(self.pki, "pool2", self.pki.wrong, self.pki.wrong_key))
        health = {"interval": "100ms", "timeout": "500ms", "rise": 2, "fall": 2, "min_hold": "100ms",
                  "max_hold": "200ms"}
        sprayer = self.start_sprayer([good, bad], [None, None], health=health,
                                     upstream={"tls": {"ca_file": self.pki.ca, "sni": "pool.test"}})
        wait_until(lambda: self.state(sprayer, "pool1") == "up", 10, what="pool1 checked up over HTTPS")
        wait_until(lambda: self.state(sprayer, "pool2") == "down", 10, what="pool2 (wrong CA) down")
        self.assertIn("health check of pool2: TLS handshake failed", sprayer.stderr_text())

        # pool1 stops: down. It comes back on the same port: up again after `rise` checks.
        port = good.port
        good.stop()
        self.procs.remove(good)
        wait_until(lambda: self.state(sprayer, "pool1") == "down", 10, what="pool1 down once stopped")
        self.keep(tls_poolsim(self.pki, "pool1", port=port))
        wait_until(lambda: self.state(sprayer, "pool1") == "up", 10, what="pool1 up again")

        # pool2 gets a certificate from the right CA: up.
        port = bad.port
        bad.stop()
        self.procs.remove(bad)
        self.keep(tls_poolsim(self.pki, "pool2", port=port))
        wait_until(lambda: self.state(sprayer, "pool2") == "up", 10, what="pool2 up with a good certificate")
        self.assertIn("health check of pool2: TLS handshake succeeds again", sprayer.stderr_text())

    def test_health_checks_stay_on_https_after_a_reload(self):
        # A reload rebuilds the check targets: an HTTPS server must still be checked over TLS
        # (a plain-HTTP check of a TLS server fails, and the server would go down), and a
        # server the reload adds is checked with its own TLS settings.
        first = self.keep(tls_poolsim(self.pki, "pool1"))
        health = {"interval": "100ms", "timeout": "500ms", "rise": 2, "fall": 2, "min_hold": "100ms",
                  "max_hold": "200ms"}
        upstream = {"tls": {"ca_file": self.pki.ca, "sni": "pool.test"}}
        sprayer = self.start_sprayer([first], [None], health=health, upstream=upstream)
        wait_until(lambda: self.state(sprayer, "pool1") == "up", 10, what="pool1 checked up over HTTPS")

        added = self.keep(tls_poolsim(self.pki, "pool2"))
        config = harness.sprayer_config([first, added], workers=1, upstream=upstream, port=sprayer.port,
                                        admin_port=sprayer.admin_port, health=health,
                                        timeouts={"upstream_connect": "1s", "upstream_response": "5s"})
        with open(sprayer.config_path, "w") as f:
            f.write(harness.to_yaml(config))
        os.kill(sprayer.pid, signal.SIGHUP)
        wait_until(lambda: "reload (SIGHUP): applied" in sprayer.stderr_text(), 10, interval=0.05, what="the reload")
        # A server a reload adds takes no traffic until its first check passes (logged as down ->
        # up): over plain HTTP that check never passes. By then pool1 has had as many checks
        # since the reload, enough for `fall` failures had they been made over plain HTTP.
        wait_until(lambda: "server pool2: down -> up" in sprayer.stderr_text(), 10,
                   what="pool2, added by the reload, checked up over HTTPS")
        self.assertEqual(self.state(sprayer, "pool1"), "up", sprayer.stderr_text()[-3000:])
        after = sprayer.stderr_text().split("reload (SIGHUP): applied")[-1]
        self.assertNotIn("health check of pool1", after)
        self.assertNotIn("server pool1: up -> down", after)

    # ---- configuration -------------------------------------------------------------------------

    def test_config_errors(self):
        cases = [
            ({"tls": {"ca_file": "/nonexistent/ca.pem"}}, "server pool1: tls: /nonexistent/ca.pem"),
            ({"tls": {"client_cert": self.pki.client}}, "client_cert and client_key must be given together"),
            ({"tls": {"min_version": "1.1"}}, "servers[0].tls.min_version"),
            ({"tls": {"verifyy": True}}, "did you mean \"verify\""),
        ]
        for extra, expected in cases:
            config = harness.sprayer_config([("pool1", "127.0.0.1:9")], health={"enabled": False})
            config["servers"][0].update(extra)
            sprayer = Sprayer(config)
            proc = subprocess.run([harness.SPRAYER_BIN, "-c", sprayer.config_path], capture_output=True, timeout=10)
            self.assertNotEqual(proc.returncode, 0, f"{extra} must be refused")
            self.assertIn(expected, proc.stderr.decode(), f"{extra}")


if __name__ == "__main__":
    harness.main()
