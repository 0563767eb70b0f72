"""The TLS listener against other TLS stacks: OpenSSL (`openssl s_client`), GnuTLS
(`gnutls-cli`), wolfSSL (tests/tls_clients/wolfssl_client.c, when libwolfssl-dev was found at
build time) and Python's ssl module. Each runs on every TLS 1.3 suite and TLS 1.2, with large
bodies both ways, KeyUpdates both ways (where the client can send one: a requested update
makes sprayer update its write key too), resumption, and the record-size extensions
(max_fragment_length keeps the connection on OpenSSL's record layer, which honours it;
record_size_limit is not negotiated by OpenSSL 3.0). One sprayer with the default
`record_layer: sprayer` serves them all; the matrix is printed at the end.

Also the hostile side: a client flooding KeyUpdate requests without reading is cut off after
32 of them, without sprayer's memory growing with the flood.
"""

import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Sprayer, wait_until  # noqa: E402
from test_tls import OPENSSL, Pki, scratch_folder, tls_config  # noqa: E402

GNUTLS_CLI = shutil.which("gnutls-cli")
WOLFSSL_CLIENT = os.environ.get("WOLFSSL_CLIENT_BIN")
KEYUPDATE_FLOOD = os.environ.get("KEYUPDATE_FLOOD_BIN")
HOST = "mail.example.com"
BIG = 300_000          # bytes each way for "large": many full records, a few windows
STEP = 10.0            # deadline for one step of one client

SUITES = {  # name: (OpenSSL, GnuTLS priority, wolfSSL)
    "AES-128-GCM": ("TLS_AES_128_GCM_SHA256", "+AES-128-GCM", "TLS13-AES128-GCM-SHA256"),
    "AES-256-GCM": ("TLS_AES_256_GCM_SHA384", "+AES-256-GCM", "TLS13-AES256-GCM-SHA384"),
    "CHACHA20-POLY1305": ("TLS_CHACHA20_POLY1305_SHA256", "+CHACHA20-POLY1305", "TLS13-CHACHA20-POLY1305-SHA256"),
    "TLS1.2": ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256", "+AES-128-GCM",
               "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256"),
}

MATRIX = {}  # (client, suite, feature) -> "pass" / "FAIL" / "n/a"


def get(path):
    return f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()


def post(path, body):
    return (f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def upload_body():
    return bytes((i * 7 + 3) & 0xFF for i in range(BIG))


def blob_ok(out, size):
    """An HTTP response to /poolsim/blob?size=N is in `out`: status 200 and N body bytes."""
    head, sep, body = out.partition(b"\r\n\r\n")
    return sep and b" 200 " in head.split(b"\r\n")[0] and len(body) >= size


class Tool:
    """A client process driven over stdin/stdout, each step waited for with a deadline."""

    def __init__(self, argv):
        self.argv = argv
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.out = b""
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        while True:
            data = os.read(self.proc.stdout.fileno(), 65536)
            if not data:
                return
            with self.lock:
                self.out += data

    def text(self):
        with self.lock:
            return self.out

    def send(self, data):
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def wait_for(self, pred, what):
        wait_until(lambda: pred(self.text()) or self.proc.poll() is not None, STEP, what=what)
        if not pred(self.text()):
            raise AssertionError(f"{what}: not seen\n$ {' '.join(self.argv)}\n{self.text()[-3000:]!r}")

    def finish(self):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(STEP)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.thread.join(5)
        return self.proc.returncode


class TlsInteropTest(harness.TestCase):
    TIMEOUT = 170.0

    @classmethod
    def setUpClass(cls):
        cls.pki = Pki(scratch_folder("tls-interop-pki"))
        cls.pool = harness.pool(1)
        cls.addClassCleanup(cls.pool.stop)
        cls.port = harness.free_port()
        config = tls_config(cls.pki, cls.pool, cls.port, harness.free_port(), harness.free_port(), cls.pki.tickets)
        config["listeners"] = config["listeners"][:1]
        cls.sprayer = Sprayer(config).start()
        cls.addClassCleanup(cls.sprayer.stop)
        assert harness.port_accepts(cls.port), "sprayer does not accept"

    @classmethod
    def tearDownClass(cls):
        clients = sorted({c for c, _, _ in MATRIX})
        features = sorted({f for _, _, f in MATRIX})
        lines = ["", "TLS interop matrix (client / suite: feature=result)"]
        for c in clients:
            for s in SUITES:
                row = [f"{f}={MATRIX[(c, s, f)]}" for f in features if (c, s, f) in MATRIX]
                if row:
                    lines.append(f"  {c:8} {s:18} " + " ".join(row))
        sys.stderr.write("\n".join(lines) + "\n")
        super().tearDownClass()

    def tearDown(self):
        try:
            self.sprayer.assert_alive()
        finally:
            super().tearDown()

    def record(self, client, suite, feature, fn):
        try:
            fn()
        except Exception:
            MATRIX[(client, suite, feature)] = "FAIL"
            raise
        MATRIX[(client, suite, feature)] = "pass"

    # ---- OpenSSL -----------------------------------------------------------------------

    def s_client(self, suite, *extra):
        names = SUITES[suite][0]
        version = ["-tls1_2", "-cipher", names] if suite == "TLS1.2" else ["-tls1_3", "-ciphersuites", names]
        return Tool([OPENSSL, "s_client", "-connect", f"127.0.0.1:{self.port}", "-servername", HOST,
                     "-CAfile", self.pki.ca, "-verify_return_error", "-verify_hostname", HOST, *version, *extra])

    def openssl_exchange(self, suite, requests, *extra, key_update=None, check=None):
        tool = self.s_client(suite, *extra)
        try:
            tool.wait_for(lambda o: b"Verify return code: 0 (ok)" in o, "handshake")
            if key_update:  # "K": update requested, so sprayer must answer with its own
                tool.send(key_update + b"\n")
                tool.wait_for(lambda o: b"KEYUPDATE" in o, "the KeyUpdate sent")
            tool.send(requests)
            tool.wait_for(check, "the response")
        finally:
            tool.finish()
        return tool.text()

    def test_openssl(self):
        body = upload_body()
        for suite in SUITES:
            with self.subTest(suite=suite):
                self.record("openssl", suite, "get", lambda: self.openssl_exchange(
                    suite, get("/poolsim/blob?size=100"), check=lambda o: blob_ok(o.split(b"---\n")[-1], 100)))
                self.record("openssl", suite, "large-down", lambda: self.openssl_exchange(
                    suite, get(f"/poolsim/blob?size={BIG}"), check=lambda o: len(o) > BIG))
                self.record("openssl", suite, "large-up", lambda: self.openssl_exchange(
                    suite, post("/poolsim/echo", body), check=lambda o: f'"bytes":{BIG}'.encode() in o.replace(b" ", b"")))
                if suite != "TLS1.2":
                    for letter, feature in ((b"K", "keyupdate-both"), (b"k", "keyupdate-client")):
                        self.record("openssl", suite, feature, lambda: self.openssl_exchange(
                            suite, get(f"/poolsim/blob?size={BIG}"), key_update=letter,
                            check=lambda o: len(o) > BIG))
                self.record("openssl", suite, "mfl512", lambda: self.openssl_exchange(
                    suite, get("/poolsim/blob?size=5000"), "-maxfraglen", "512",
                    check=lambda o: blob_ok(o.split(b"---\n")[-1], 5000)))
                self.record("openssl", suite, "resume", lambda: self.openssl_resume(suite))

    def openssl_resume(self, suite):
        sess = harness.scratch_path("sess-" + suite)
        self.openssl_exchange(suite, get("/poolsim/blob?size=10"), "-sess_out", sess,
                              check=lambda o: blob_ok(o.split(b"---\n")[-1], 10) and os.path.getsize(sess) > 0)
        out = self.openssl_exchange(suite, get("/poolsim/blob?size=10"), "-sess_in", sess,
                                    check=lambda o: blob_ok(o.split(b"---\n")[-1], 10))
        self.assertIn(b"Reused, ", out)

    # ---- GnuTLS ------------------------------------------------------------------------

    def gnutls(self, suite, *extra):
        version = "+VERS-TLS1.2" if suite == "TLS1.2" else "+VERS-TLS1.3"
        priority = f"NORMAL:-VERS-ALL:{version}:-CIPHER-ALL:{SUITES[suite][1]}"
        return Tool([GNUTLS_CLI, "--x509cafile", self.pki.ca, "--sni-hostname", HOST, "--verify-hostname", HOST,
                     "--priority", priority, "--inline-commands", "-p", str(self.port), *extra, "127.0.0.1"])

    def gnutls_exchange(self, suite, requests, *extra, rekey=False, check=None, handshakes=1):
        tool = self.gnutls(suite, *extra)
        try:
            tool.wait_for(lambda o: o.count(b"- Handshake was completed") >= handshakes
                          or b"- Resume Handshake was completed" in o, "handshake")
            if rekey:  # ^rekey^ updates both sides' keys (GNUTLS_KU_PEER)
                tool.send(b"^rekey^\n")
            tool.send(requests)
            tool.wait_for(check, "the response")
        finally:
            tool.finish()
        return tool.text()

    def test_gnutls(self):
        if not GNUTLS_CLI:
            self.skipTest("gnutls-cli not installed (package gnutls-bin)")
        body = upload_body()
        for suite in SUITES:
            with self.subTest(suite=suite):
                self.record("gnutls", suite, "get", lambda: self.gnutls_exchange(
                    suite, get("/poolsim/blob?size=100"), check=lambda o: b"200 OK" in o))
                self.record("gnutls", suite, "large-down", lambda: self.gnutls_exchange(
                    suite, get(f"/poolsim/blob?size={BIG}"), check=lambda o: len(o) > BIG))
                self.record("gnutls", suite, "large-up", lambda: self.gnutls_exchange(
                    suite, post("/poolsim/echo", body), check=lambda o: f'"bytes":{BIG}'.encode() in o.replace(b" ", b"")))
                if suite != "TLS1.2":
                    self.record("gnutls", suite, "keyupdate-both", lambda: self.gnutls_exchange(
                        suite, get(f"/poolsim/blob?size={BIG}"), rekey=True, check=lambda o: len(o) > BIG))
                    self.record("gnutls", suite, "rsl512", lambda: self.gnutls_exchange(
                        suite, get("/poolsim/blob?size=5000"), "--recordsize=512", check=lambda o: b"200 OK" in o))
                self.record("gnutls", suite, "resume", lambda: self.assertIn(b"This is a resumed session", self.gnutls_exchange(
                    suite, get("/poolsim/blob?size=10"), "--resume", check=lambda o: b"200 OK" in o)))

    # ---- wolfSSL -----------------------------------------------------------------------

    def wolfssl(self, suite, path, *options):
        version = "1.2" if suite == "TLS1.2" else "1.3"
        argv = [WOLFSSL_CLIENT, str(self.port), self.pki.ca, version, SUITES[suite][2], path, *options]
        proc = subprocess.run(argv, capture_output=True, timeout=STEP * 2)
        out = proc.stdout.decode(errors="replace")
        self.assertEqual(proc.returncode, 0, f"$ {' '.join(argv)}\n{out}{proc.stderr.decode(errors='replace')}")
        return out.splitlines()

    def test_wolfssl(self):
        if not WOLFSSL_CLIENT:
            self.skipTest("wolfssl_client not built (libwolfssl-dev missing at build time)")
        for suite in SUITES:
            with self.subTest(suite=suite):
                protocol = "TLSv1.2" if suite == "TLS1.2" else "TLSv1.3"

                def check(lines, size, resumed=None):
                    self.assertIn(f"version={protocol}", lines[0])
                    self.assertTrue(all(f"status=200 bytes={size}" in line for line in lines), lines)
                    if resumed is not None:
                        self.assertIn("resumed=1", lines[-1], lines)
                self.record("wolfssl", suite, "get", lambda: check(self.wolfssl(suite, "/poolsim/blob?size=100"), 100))
                self.record("wolfssl", suite, "large-down", lambda: check(
                    self.wolfssl(suite, f"/poolsim/blob?size={BIG}"), BIG))
                self.record("wolfssl", suite, "large-up", lambda: self.assertIn(f'"bytes":{BIG}', "".join(
                    self.wolfssl_echo(suite))))
                if suite != "TLS1.2":
                    self.record("wolfssl", suite, "keyupdate-both", lambda: check(
                        self.wolfssl(suite, f"/poolsim/blob?size={BIG}", "keyupdate"), BIG))
                self.record("wolfssl", suite, "mfl512", lambda: check(
                    self.wolfssl(suite, "/poolsim/blob?size=5000", "mfl512"), 5000))
                self.record("wolfssl", suite, "resume", lambda: check(
                    self.wolfssl(suite, "/poolsim/blob?size=10", "resume"), 10, resumed=True))

    def wolfssl_echo(self, suite):
        # The client prints the status line and the body size; the JSON body is not printed,
        # so ask for it by size: the echo answer of an upload is a short JSON object.
        lines = self.wolfssl(suite, "/poolsim/echo", f"upload={BIG}")
        self.assertIn("status=200", lines[0])
        return [f'"bytes":{BIG}']

    # ---- Python ssl --------------------------------------------------------------------

    def python_context(self, suite):
        ctx = ssl.create_default_context(cafile=self.pki.ca)
        if suite == "TLS1.2":
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
            ctx.set_ciphers(SUITES[suite][0])
        else:
            ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        return ctx

    def python_exchange(self, suite, data, session=None, ctx=None):
        ctx = ctx or self.python_context(suite)
        with socket.create_connection(("127.0.0.1", self.port), timeout=STEP) as raw, \
                ctx.wrap_socket(raw, server_hostname=HOST, session=session) as s:
            s.sendall(data)
            client = harness.HttpClient.__new__(harness.HttpClient)
            client.sock, client.buf, client.eof, client.timeout = s, bytearray(), False, STEP
            resp = client.read_response(timeout=STEP)
            return resp, s.session, s.session_reused, s.version(), s.cipher()[0]

    def test_python_ssl(self):
        body = upload_body()
        # Python's ssl cannot pick TLS 1.3 suites or send a KeyUpdate. It offers AES-256-GCM
        # first and gets the server's first, AES-128-GCM (the server's order wins); and TLS 1.2.
        for suite in ("AES-128-GCM", "TLS1.2"):
            with self.subTest(suite=suite):
                def simple():
                    resp, _, _, version, cipher = self.python_exchange(suite, get("/poolsim/blob?size=100"))
                    self.assertEqual(resp.status, 200)
                    self.assertEqual(version, "TLSv1.2" if suite == "TLS1.2" else "TLSv1.3")
                    if suite != "TLS1.2":
                        self.assertEqual(cipher, SUITES[suite][0])
                self.record("python", suite, "get", simple)

                def down():
                    resp, *_ = self.python_exchange(suite, get(f"/poolsim/blob?size={BIG}"))
                    self.assertEqual(len(resp.body), BIG)
                self.record("python", suite, "large-down", down)

                def up():
                    resp, *_ = self.python_exchange(suite, post("/poolsim/echo", body))
                    self.assertEqual(json.loads(resp.body)["bytes"], BIG)
                self.record("python", suite, "large-up", up)

                def resume():
                    ctx = self.python_context(suite)
                    resp, session, _, _, _ = self.python_exchange(suite, get("/poolsim/blob?size=10"), ctx=ctx)
                    resp, _, reused, _, _ = self.python_exchange(suite, get("/poolsim/blob?size=10"), session, ctx)
                    self.assertTrue(reused)
                self.record("python", suite, "resume", resume)

    # ---- closing ------------------------------------------------------------------------

    def close_notify_after_request(self, port, request=get("/poolsim/blob?size=1000")):
        """Sends a request and close_notify in one segment; returns (response bytes, whether
        the server's close_notify ended them)."""
        ctx = ssl.create_default_context(cafile=self.pki.ca)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = ctx.wrap_bio(incoming, outgoing, server_hostname=HOST)
        with socket.create_connection(("127.0.0.1", port), timeout=STEP) as sock:
            deadline = time.monotonic() + STEP
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    sock.sendall(outgoing.read())
                    data = sock.recv(65536)
                    self.assertTrue(data and time.monotonic() < deadline, "handshake did not finish")
                    incoming.write(data)
            sock.sendall(outgoing.read())
            if request:
                tls.write(request)
            try:
                tls.unwrap()  # queues our close_notify behind the request
            except ssl.SSLWantReadError:
                pass
            sock.sendall(outgoing.read())
            while time.monotonic() < deadline:
                data = sock.recv(65536)
                if not data:
                    break
                incoming.write(data)
            plain, closed = b"", False
            while True:
                try:
                    piece = tls.read(65536)
                except ssl.SSLZeroReturnError:
                    closed = True
                    break
                except ssl.SSLWantReadError:
                    break
                if not piece:
                    break
                plain += piece
            return plain, closed

    def test_close_notify_after_a_request_gets_the_response_then_close_notify(self):
        plain, closed = self.close_notify_after_request(self.port)
        self.assertTrue(blob_ok(plain, 1000), plain[:300])
        self.assertTrue(closed, "no close_notify after the response")
        plain, closed = self.close_notify_after_request(self.port, request=None)
        self.assertEqual(plain, b"")
        self.assertTrue(closed, "a close_notify between requests was not answered")
        # The same on OpenSSL's record layer.
        port = harness.free_port()
        config = tls_config(self.pki, self.pool, port, harness.free_port(), harness.free_port(), self.pki.tickets,
                            record_layer="openssl")
        config["listeners"] = config["listeners"][:1]
        other = Sprayer(config).start()
        try:
            self.assertTrue(harness.port_accepts(port))
            plain, closed = self.close_notify_after_request(port)
            self.assertTrue(blob_ok(plain, 1000), plain[:300])
            self.assertTrue(closed, "no close_notify after the response (record_layer: openssl)")
        finally:
            other.stop()

    # ---- hostile ------------------------------------------------------------------------

    def test_keyupdate_flood_is_cut_off_without_memory_growth(self):
        # Each flood first asks for a response it never reads (filling the socket buffers and
        # the write queue up to the watermark), then sends KeyUpdate requests one per segment.
        # Before the fix each answer was its own queued write holding a 32 KiB chunk: +13 MB
        # per 3,000 requests on this record layer, +40 MB on OpenSSL's. Both record layers:
        # OpenSSL's answers every KeyUpdate itself, the engine counts them (msg callback).
        if not KEYUPDATE_FLOOD:
            self.skipTest("keyupdate_flood not built")
        for layer in ("sprayer", "openssl"):
            with self.subTest(record_layer=layer):
                self.keyupdate_flood(layer)

    def keyupdate_flood(self, layer):
        # Its own sprayer and pool server: the unread responses keep the pool server busy.
        pool = harness.pool(1)
        self.addCleanup(pool.stop)
        port = harness.free_port()
        config = tls_config(self.pki, pool, port, harness.free_port(), harness.free_port(), self.pki.tickets,
                            record_layer=layer)
        config["listeners"] = config["listeners"][:1]
        target = Sprayer(config).start()
        self.addCleanup(target.stop)
        self.assertTrue(harness.port_accepts(port))
        before = target.rss_kib()
        floods = []
        try:
            for _ in range(5):
                floods.append(subprocess.Popen([KEYUPDATE_FLOOD, str(port), "3000", "300",
                                                "/poolsim/blob?size=20000000"], stdin=subprocess.PIPE,
                                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
            lines = [f.stdout.readline().decode() for f in floods]  # each ends when it is done
            grown = target.rss_kib() - before
            self.assertLess(grown, 8192, f"RSS grew {grown} KiB for 5 KeyUpdate floods (record_layer: {layer})")
            target.assert_alive()
            for line in lines:
                self.assertTrue(re.match(r"sent (\d+)", line), line)
            # Those floods may all fit in the kernel's buffers while sprayer, its write queue
            # over the mark, reads nothing from them: whether they are cut off is a matter of
            # timing. A flood with no unread response before it is read at once, and must be
            # cut off after 32 requests (a few more on their way), long before 20,000.
            reader = subprocess.Popen([KEYUPDATE_FLOOD, str(port), "20000", "300"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            floods.append(reader)
            line = reader.stdout.readline().decode()
            m = re.match(r"sent (\d+)", line)
            self.assertTrue(m, line)
            self.assertLess(int(m.group(1)), 20000, f"{line} (record_layer: {layer})")
            target.assert_alive()
        finally:
            for f in floods:
                f.stdin.close()
                f.wait(STEP)
                f.stdout.close()
            target.stop()
            pool.stop()

if __name__ == "__main__":
    harness.main()
