"""TLS termination on the device-facing listener, checked with the real `openssl` and `curl` tools.

A scratch PKI is made at class set-up with the openssl CLI: a test CA; a wildcard *.example.com
certificate (SAN *.example.com and example.com) in ECDSA P-256 and in RSA-2048; an ECDSA
certificate for pool1.other.test; an expired and a not-yet-valid certificate (`openssl ca`
with -startdate/-enddate, as OpenSSL 3.0's `x509 -req` cannot back-date); and two ticket key
files. One sprayer runs in front of three poolsims with a TLS listener (wildcard RSA, wildcard
ECDSA, pool1.other.test) and a plain listener that redirects to it.

Served certificates are identified by the SHA-256 of the DER that s_client prints, compared
with the generated files, so "the right certificate" means exactly that file.
"""

import base64
import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import HttpClient, Sprayer, wait_until  # noqa: E402

OPENSSL = shutil.which("openssl")
CURL = shutil.which("curl")

CLIENT_HEADER_S = 2          # also bounds a TLS handshake that never completes
TOOL_TIMEOUT = 15.0          # any one openssl/curl run
AS_PATH = "/Microsoft-Server-ActiveSync?Cmd=Sync&User=jdoe&DeviceId=d1&DeviceType=test"
POOL_IDS = {"pool1", "pool2", "pool3"}
TICKET_MARKER = "Post-Handshake New Session Ticket arrived"


# ---------------------------------------------------------------------------------------------
# Tools.

def run_tool(argv, timeout=TOOL_TIMEOUT, input=b"", check=True):
    """Runs a CLI tool with a deadline; with check, a non-zero exit fails with its output."""
    proc = subprocess.run(argv, input=input, capture_output=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited with {proc.returncode}\n"
                             f"stdout: {proc.stdout.decode(errors='replace')[-2000:]}\n"
                             f"stderr: {proc.stderr.decode(errors='replace')[-2000:]}")
    return proc


def pem_blocks(text):
    return re.findall(r"-----BEGIN CERTIFICATE-----\s*(.*?)\s*-----END CERTIFICATE-----", text, re.S)


def pem_fingerprint(b64):
    return hashlib.sha256(base64.b64decode("".join(b64.split()))).hexdigest()


def file_fingerprint(path):
    with open(path) as f:
        return pem_fingerprint(pem_blocks(f.read())[0])


class Pki:
    """The scratch certificates, keys and ticket key files."""

    def __init__(self, folder):
        self.dir = folder
        p = lambda name: os.path.join(folder, name)  # noqa: E731
        self.ca, self.ca_key = p("ca.pem"), p("ca.key")
        with open(p("ext.cnf"), "w") as f:
            f.write("[wild]\nsubjectAltName=DNS:*.example.com,DNS:example.com\nbasicConstraints=CA:FALSE\n"
                    "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
                    "[pool1]\nsubjectAltName=DNS:pool1.other.test\nbasicConstraints=CA:FALSE\n"
                    "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
        run_tool([OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                  "-keyout", self.ca_key, "-out", self.ca, "-days", "3650", "-subj", "/CN=sprayer test CA",
                  "-addext", "basicConstraints=critical,CA:TRUE",
                  "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        self.wild_ec, self.wild_ec_key = self._leaf("wild-ec", "ec", "/CN=*.example.com", "wild")
        self.wild_rsa, self.wild_rsa_key = self._leaf("wild-rsa", "rsa", "/CN=*.example.com", "wild")
        self.pool1, self.pool1_key = self._leaf("pool1", "ec", "/CN=pool1.other.test", "pool1")
        # `openssl ca` takes explicit dates, so a certificate can be made already expired.
        os.mkdir(p("cadb"))
        open(p("cadb/index.txt"), "w").close()
        with open(p("cadb/serial"), "w") as f:
            f.write("1000\n")
        with open(p("ca.cnf"), "w") as f:
            f.write(f"[ca]\ndefault_ca = test_ca\n[test_ca]\ndatabase = {p('cadb/index.txt')}\n"
                    f"new_certs_dir = {p('cadb')}\nserial = {p('cadb/serial')}\ncertificate = {self.ca}\n"
                    f"private_key = {self.ca_key}\ndefault_md = sha256\npolicy = any\nunique_subject = no\n"
                    f"[any]\ncommonName = supplied\n"
                    f"[dated]\nsubjectAltName=DNS:dated.example.com\nbasicConstraints=CA:FALSE\n")
        self.expired, self.expired_key = self._dated("expired", "20200101000000Z", "20200201000000Z")
        self.future, self.future_key = self._dated("future", "20990101000000Z", "20990201000000Z")
        self.tickets = p("tickets.key")
        self.tickets_other = p("tickets-other.key")
        run_tool([OPENSSL, "rand", "-out", self.tickets, "80"])            # raw bytes
        run_tool([OPENSSL, "rand", "-base64", "-out", self.tickets_other, "80"])  # base64 text
        self.tickets_short = p("tickets-short.key")
        with open(self.tickets_short, "wb") as f:
            f.write(os.urandom(79))
        self.fingerprints = {file_fingerprint(c): name for name, c in
                             (("wild-ec", self.wild_ec), ("wild-rsa", self.wild_rsa), ("pool1", self.pool1))}
        run_tool([OPENSSL, "verify", "-CAfile", self.ca, self.wild_ec, self.wild_rsa, self.pool1])
        dates = run_tool([OPENSSL, "x509", "-in", self.expired, "-noout", "-enddate"]).stdout.decode()
        assert "2020" in dates, f"expired certificate has the wrong dates: {dates}"

    def _leaf(self, name, kind, subject, ext):
        key, csr, cert = (os.path.join(self.dir, name + s) for s in (".key", ".csr", ".pem"))
        newkey = ["-newkey", "rsa:2048"] if kind == "rsa" else ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
        run_tool([OPENSSL, "req", "-new", *newkey, "-nodes", "-keyout", key, "-out", csr, "-subj", subject])
        run_tool([OPENSSL, "x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key, "-CAcreateserial",
                  "-days", "30", "-extfile", os.path.join(self.dir, "ext.cnf"), "-extensions", ext, "-out", cert])
        return cert, key

    def _dated(self, name, start, end):
        key, csr, cert = (os.path.join(self.dir, name + s) for s in (".key", ".csr", ".pem"))
        run_tool([OPENSSL, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                  "-keyout", key, "-out", csr, "-subj", "/CN=dated.example.com"])
        run_tool([OPENSSL, "ca", "-batch", "-config", os.path.join(self.dir, "ca.cnf"), "-notext",
                  "-startdate", start, "-enddate", end, "-extensions", "dated", "-in", csr, "-out", cert])
        return cert, key


def scratch_folder(name):
    path = harness.scratch_path(name)
    os.unlink(path)
    os.mkdir(path)
    return path


class SClient:
    """One `openssl s_client` run. Without wait_for_session stdin closes at once (like
    </dev/null): s_client finishes the handshake, prints, sends close_notify and exits. With
    wait_for_session=PATH (also passed as -sess_out PATH), stdin stays open until a complete
    session has been written there: a TLS 1.3 ticket arrives only after the handshake, and
    s_client's stdout is block-buffered in a pipe, so the file is the reliable signal."""

    def __init__(self, port, *args, servername=None, ca=None, wait_for_session=None, timeout=TOOL_TIMEOUT):
        argv = [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}"]
        argv += ["-servername", servername] if servername else ["-noservername"]
        if ca:
            argv += ["-CAfile", ca]
        argv += list(args)
        if wait_for_session:
            argv += ["-sess_out", wait_for_session]
        self.argv = argv
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        chunks = []
        done = threading.Event()

        def reader():
            while True:
                data = os.read(proc.stdout.fileno(), 65536)
                if not data:
                    break
                chunks.append(data)
            done.set()

        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        deadline = time.monotonic() + timeout
        self.session_seen = None
        if wait_for_session:
            def session_written():
                if done.is_set():
                    return True  # s_client ended (failed handshake): stop waiting
                try:
                    with open(wait_for_session) as f:
                        return "-----END SSL SESSION PARAMETERS-----" in f.read()
                except OSError:
                    return False
            with contextlib.suppress(harness.WaitTimeout):  # reported by session_seen = False
                harness.wait_until(session_written, timeout / 2, interval=0.01, what="a session from s_client")
            with contextlib.suppress(OSError), open(wait_for_session) as f:
                self.session_seen = "-----END SSL SESSION PARAMETERS-----" in f.read()
        try:
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            thread.join(5)
            raise AssertionError(f"s_client did not finish within {timeout}s: {' '.join(argv)}\n"
                                 f"{b''.join(chunks).decode(errors='replace')[-3000:]}")
        thread.join(5)
        proc.stdout.close()
        self.rc = proc.returncode
        self.out = b"".join(chunks).decode(errors="replace")

    def leaf(self, pki):
        """Name of the generated certificate the server sent ("wild-ec", ...), None when it sent
        none, or "unknown:<sha256>"."""
        blocks = pem_blocks(self.out)
        if not blocks:
            return None
        fp = pem_fingerprint(blocks[0])
        return pki.fingerprints.get(fp, "unknown:" + fp)

    def field(self, pattern):
        m = re.search(pattern, self.out, re.M)
        return m.group(1) if m else None

    @property
    def new_or_reused(self):
        return self.field(r"^(New|Reused), ")

    @property
    def protocol(self):
        return self.field(r"^(?:New|Reused), (TLSv[\d.]+|\(NONE\))")

    def describe(self):
        return f"$ {' '.join(self.argv)}\nexit {self.rc}\n{self.out[-3500:]}"


def curl(*args, timeout=TOOL_TIMEOUT):
    proc = run_tool([CURL, "-sS", "--max-time", str(int(timeout) - 2), *args], timeout=timeout, check=False)
    return proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")


metric = harness.metric


def tls_config(pki, pool, tls_port, http_port, admin_port, ticket_key_file, plain_port=None, **tls_extra):
    config = harness.sprayer_config(
        pool, workers=2, port=tls_port, admin_port=admin_port,
        timeouts={"client_header": f"{CLIENT_HEADER_S}s", "drain": "2s"})
    config["listeners"] = [
        {"name": "https", "address": f"127.0.0.1:{tls_port}",
         "tls": {"certificates": [{"cert": pki.wild_rsa, "key": pki.wild_rsa_key},
                                  {"cert": pki.wild_ec, "key": pki.wild_ec_key},
                                  {"cert": pki.pool1, "key": pki.pool1_key}],
                 "ticket_key_file": ticket_key_file, **tls_extra}},
        {"name": "http", "address": f"127.0.0.1:{http_port}", "redirect_to_https": True, "https_port": tls_port},
    ]
    if plain_port:  # a plain proxying listener: the control for what TLS must not change
        config["listeners"].append({"name": "plain", "address": f"127.0.0.1:{plain_port}"})
    return config


def read_until_closed(sock, timeout):
    """Reads until EOF/reset; returns (closed, bytes)."""
    deadline = time.monotonic() + timeout
    data = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            piece = sock.recv(65536)
        except socket.timeout:
            break
        except (ConnectionResetError, BrokenPipeError):
            return True, data
        if not piece:
            return True, data
        data += piece
    return False, data


class TlsHttpClient(HttpClient):
    """harness.HttpClient over TLS (Python's ssl module), verifying the chain and the name."""

    def __init__(self, port, ca, server_hostname="mail.example.com", timeout=10.0):
        self.timeout = timeout
        ctx = ssl.create_default_context(cafile=ca)
        ctx.options |= getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)  # a close without close_notify reads as EOF
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = ctx.wrap_socket(raw, server_hostname=server_hostname)
        self.buf = bytearray()
        self.eof = False


def send_corked(client, data):
    """Sends data in one go: TCP_CORK holds the segments until all TLS records are written, so
    sprayer sees the same reads on every run."""
    client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
    try:
        client.sock.settimeout(client.timeout)
        client.sock.sendall(data)
    finally:
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)


def pipelined_sequence(client, n, pad):
    """Sends n pipelined GET /poolsim/headers (X-Seq: i, X-Pad of `pad` bytes) in one write and
    returns what comes back per request: "i" for a 200 echoing X-Seq i, "status N" otherwise,
    and the error that ended the reading, if any."""
    data = b"".join(harness.build_request("GET", "/poolsim/headers", {"X-Seq": str(i), "X-Pad": "p" * pad},
                                          host="mail.example.com") for i in range(n))
    send_corked(client, data)
    got = []
    try:
        for _ in range(n):
            resp = client.read_response(timeout=5)
            got.append((resp.json().get("x-seq") or ["?"])[0] if resp.status == 200 else f"status {resp.status}")
    except (harness.HttpError, OSError) as e:
        got.append(f"{type(e).__name__}: {str(e)[:120]}")
    return len(data), got


# ---------------------------------------------------------------------------------------------

class TlsTest(harness.TestCase):
    TIMEOUT = 60.0

    @classmethod
    def setUpClass(cls):
        missing = [n for n, t in (("openssl", OPENSSL), ("curl", CURL)) if not t]
        if missing:
            raise AssertionError(f"required tools not on PATH: {missing}")
        started = time.monotonic()
        cls.pki = Pki(scratch_folder("tls-pki"))
        cls.pki_seconds = time.monotonic() - started
        cls.pool = harness.pool(3)
        cls.addClassCleanup(cls.pool.stop)
        cls.tls_port, cls.http_port, cls.plain_port = harness.free_port(), harness.free_port(), harness.free_port()
        cls.config = tls_config(cls.pki, cls.pool, cls.tls_port, cls.http_port, harness.free_port(),
                                cls.pki.tickets, plain_port=cls.plain_port)
        cls.sprayer = Sprayer(cls.config).start()
        cls.addClassCleanup(cls.sprayer.stop)
        cls.admin_port = cls.sprayer.admin_port
        for port in (cls.tls_port, cls.http_port, cls.plain_port):
            assert harness.port_accepts(port), f"sprayer does not accept on {port}"

    def tearDown(self):
        try:
            self.sprayer.assert_alive()
        finally:
            super().tearDown()

    # -- helpers --

    def s_client(self, *args, servername="mail.example.com", port=None, **kw):
        return SClient(port or self.tls_port, *args, servername=servername, ca=self.pki.ca, **kw)

    def assert_handshake(self, r, leaf=None, verified=True, context=""):
        self.assertEqual(r.rc, 0, f"{context}: s_client failed\n{r.describe()}")
        self.assertEqual(r.new_or_reused, "New", f"{context}: no completed handshake\n{r.describe()}")
        if leaf is not None:
            got = r.leaf(self.pki)
            expected = leaf if isinstance(leaf, (set, tuple)) else {leaf}
            self.assertIn(got, expected, f"{context}: served certificate {got}, expected {leaf}\n{r.describe()}")
        if verified:
            self.assertIn("Verify return code: 0 (ok)", r.out, f"{context}: chain not verified\n{r.describe()}")

    def https_url(self, path, host="mail.example.com"):
        return f"https://{host}:{self.tls_port}{path}"

    def resolve(self, host="mail.example.com", port=None):
        return ["--resolve", f"{host}:{port or self.tls_port}:127.0.0.1"]

    def normal_https_request(self, context):
        code, out, err = curl("--cacert", self.pki.ca, *self.resolve(), "-o", "/dev/null",
                              "-w", "%{http_code} %header{x-served-by}", self.https_url(AS_PATH))
        self.assertEqual(code, 0, f"{context}: curl failed: {err}")
        status, _, served = out.partition(" ")
        self.assertEqual(status, "200", f"{context}: {out!r} {err}")
        self.assertIn(served, POOL_IDS, f"{context}: X-Served-By {served!r}")

    # ---- requests over HTTPS --------------------------------------------------------------

    def test_curl_request_and_connection_reuse(self):
        fmt = "%{http_code} %{num_connects} %{local_port} %{ssl_verify_result} %{http_version} %header{x-served-by}\n"
        code, out, err = curl("--cacert", self.pki.ca, *self.resolve(), "-o", "/dev/null", "-o", "/dev/null",
                              "-w", fmt, self.https_url(AS_PATH), self.https_url(AS_PATH))
        self.assertEqual(code, 0, f"curl failed: {err}")
        lines = [line.split(" ") for line in out.strip().splitlines()]
        self.assertEqual(len(lines), 2, f"curl -w output: {out!r}")
        (s1, c1, p1, v1, h1, x1), (s2, c2, p2, v2, h2, x2) = lines
        self.assertEqual((s1, s2), ("200", "200"), out)
        self.assertEqual((v1, h1, v2, h2), ("0", "1.1", "0", "1.1"), f"certificate verification / HTTP version: {out}")
        self.assertIn(x1, POOL_IDS, f"X-Served-By of the first response: {out}")
        self.assertIn(x2, POOL_IDS, f"X-Served-By of the second response: {out}")
        self.assertEqual(x1, x2, f"the same user went to two servers: {out}")
        self.assertEqual(c1, "1", f"first transfer should open one connection: {out}")
        self.assertEqual(c2, "0", f"second transfer opened a new connection instead of reusing: {out}")
        self.assertEqual(p1, p2, f"the two transfers used different local ports: {out}")

    def test_forwarded_proto_is_https(self):
        code, out, err = curl("--cacert", self.pki.ca, *self.resolve(), self.https_url("/poolsim/headers"))
        self.assertEqual(code, 0, f"curl failed: {err}")
        headers = json.loads(out)
        self.assertEqual(headers.get("x-forwarded-proto"), ["https"], out)
        self.assertEqual(headers.get("x-forwarded-host"), [f"mail.example.com:{self.tls_port}"], out)

    @harness.timeout(60)
    def test_large_bodies_over_tls(self):
        # Many TLS records each way through the engine's buffers.
        size = 8_000_000
        out = harness.scratch_path("blob")
        code, text, err = curl("--cacert", self.pki.ca, *self.resolve(), "-o", out,
                               "-w", "%{http_code} %{size_download}", self.https_url(f"/poolsim/blob?size={size}"),
                               timeout=40)
        self.assertEqual(code, 0, f"curl failed: {err}")
        self.assertEqual(text, f"200 {size}", text)
        period = bytes(((i * 31 + 7) & 0xFF) for i in range(256))
        expected = hashlib.sha256(period * (size // 256) + period[:size % 256]).hexdigest()
        with open(out, "rb") as f:
            got = hashlib.sha256(f.read()).hexdigest()
        self.assertEqual(got, expected, "downloaded blob differs from poolsim's pattern")
        upload = harness.scratch_path("upload")
        data = random.Random(7).randbytes(2_000_000)
        with open(upload, "wb") as f:
            f.write(data)
        code, text, err = curl("--cacert", self.pki.ca, *self.resolve(), "--data-binary", "@" + upload,
                               "-H", "Content-Type: application/octet-stream", self.https_url("/poolsim/echo"),
                               timeout=40)
        self.assertEqual(code, 0, f"curl failed: {err}")
        echo = json.loads(text)
        self.assertEqual(echo["bytes"], len(data), text)
        self.assertEqual(echo["fnv1a64"], f"{harness.fnv1a64(data):016x}", text)

    def test_pipelined_requests_over_tls(self):
        # Pipelined requests must be answered in order, exactly as on a plain listener. Shapes:
        # (requests, X-Pad bytes); the last two span several 16 KiB TLS records.
        for n, pad in ((5, 0), (300, 100), (60, 1000)):
            with self.subTest(requests=n, pad=pad):
                expected = [str(i) for i in range(n)]
                with HttpClient(self.plain_port, timeout=10) as c:
                    size, plain = pipelined_sequence(c, n, pad)
                self.assertEqual(plain, expected, f"control: {n} pipelined requests ({size} bytes) on the plain "
                                                  f"listener came back wrong")
                with TlsHttpClient(self.tls_port, self.pki.ca) as c:
                    size, over_tls = pipelined_sequence(c, n, pad)
                # Input is parsed in arrival order even when reading pauses and resumes
                # mid-stream (held pipelined bytes first, then what TLS decrypted since).
                if over_tls != expected:
                    first = next(i for i in range(len(over_tls)) if i >= n or over_tls[i] != expected[i])
                    self.fail(f"{n} pipelined requests ({size} bytes) over TLS diverge at request {first}: got "
                              f"{over_tls[max(0, first - 2):first + 2]} where the plain listener answered all "
                              f"{n} in order")
        self.normal_https_request("after pipelining")

    def test_parked_ping_over_tls_is_answered_after_the_keys_rested(self):
        # A Ping held past the worker's one-second sweep: the record layer gave its cipher
        # contexts back while it waited and rebuilds them for the answer (sequence numbers kept),
        # and the connection goes on in both directions.
        with TlsHttpClient(self.tls_port, self.pki.ca, timeout=15) as c:
            for round_ in range(2):
                started = time.monotonic()
                resp = c.request("POST", "/Microsoft-Server-ActiveSync?Cmd=Ping&User=jdoe&DeviceId=d1"
                                         "&DeviceType=test&hold=2500ms", body=b"<Ping/>", host="mail.example.com")
                self.assertEqual(resp.status, 200, resp.describe())
                self.assertGreaterEqual(time.monotonic() - started, 2.4, "the Ping was not held")
                self.assertEqual(resp.json()["cmd"], "Ping", resp.describe())
                resp = c.request("GET", "/poolsim/headers", headers={"X-Seq": str(round_)}, host="mail.example.com")
                self.assertEqual(resp.status, 200, f"request after parked Ping {round_}: {resp.describe()}")

    # ---- certificate choice ---------------------------------------------------------------

    def test_sni_wildcard_name(self):
        for name in ("mail.example.com", "Traveler.EXAMPLE.com", "example.com"):
            with self.subTest(sni=name):
                r = self.s_client("-verify_return_error", "-verify_hostname", name.lower(), servername=name)
                self.assert_handshake(r, {"wild-ec", "wild-rsa"}, context=f"SNI {name}")
                self.assertIn("subject=CN = *.example.com", r.out, r.describe())

    def test_sni_exact_name(self):
        for name in ("pool1.other.test", "POOL1.other.TEST"):
            with self.subTest(sni=name):
                r = self.s_client("-verify_return_error", "-verify_hostname", "pool1.other.test", servername=name)
                self.assert_handshake(r, "pool1", context=f"SNI {name}")
                self.assertIn("subject=CN = pool1.other.test", r.out, r.describe())
                self.assertIn("Verified peername: pool1.other.test", r.out, r.describe())

    def test_no_sni_and_unknown_sni_get_the_default(self):
        r = self.s_client("-verify_return_error", servername=None)
        self.assert_handshake(r, {"wild-ec", "wild-rsa"}, context="no SNI")
        r = self.s_client(servername="unknown.nowhere.test")
        self.assert_handshake(r, {"wild-ec", "wild-rsa"}, context="unknown SNI (strict_sni off)")
        # Control for the -verify_hostname checks above and elsewhere: they do fail on a name the
        # served certificate does not cover (a wildcard covers one label only).
        r = self.s_client("-verify_return_error", "-verify_hostname", "a.b.example.com", servername="a.b.example.com")
        self.assertNotEqual(r.rc, 0, f"*.example.com must not verify for a.b.example.com\n{r.describe()}")

    def test_ecdsa_and_rsa_side_by_side(self):
        cases = [
            (("-tls1_3", "-sigalgs", "ECDSA+SHA256"), "wild-ec", "256", "ECDSA"),
            (("-tls1_3", "-sigalgs", "RSA-PSS+SHA256:RSA+SHA256"), "wild-rsa", "2048", "RSA-PSS"),
            (("-tls1_2", "-sigalgs", "ECDSA+SHA256"), "wild-ec", "256", "ECDSA"),
            (("-tls1_2", "-sigalgs", "RSA+SHA256"), "wild-rsa", "2048", "RSA"),
            (("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"), "wild-ec", "256", None),
            (("-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"), "wild-rsa", "2048", None),
        ]
        for args, leaf, bits, sigtype in cases:
            with self.subTest(args=" ".join(args)):
                r = self.s_client("-verify_return_error", "-verify_hostname", "mail.example.com", *args)
                self.assert_handshake(r, leaf, context=" ".join(args))
                self.assertIn(f"Server public key is {bits} bit", r.out, r.describe())
                if sigtype:
                    self.assertEqual(r.field(r"^Peer signature type: (\S+)"), sigtype, r.describe())
        # pool1.other.test exists only as ECDSA: a client that takes only RSA gets no certificate
        # of another name in its place.
        r = self.s_client("-tls1_2", "-sigalgs", "RSA+SHA256", servername="pool1.other.test")
        self.assertNotEqual(r.rc, 0, f"RSA-only client got a certificate for pool1.other.test\n{r.describe()}")
        self.assertIsNone(r.leaf(self.pki), r.describe())

    # ---- protocol versions and ALPN -------------------------------------------------------

    def test_tls12_and_tls13_negotiate(self):
        for flag, version in (("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")):
            with self.subTest(version=version):
                r = self.s_client(flag, "-verify_return_error")
                self.assert_handshake(r, {"wild-ec", "wild-rsa"}, context=flag)
                self.assertEqual(r.protocol, version, r.describe())

    def test_old_versions_refused_by_the_server(self):
        # SECLEVEL=0 lets this client offer TLS 1.0/1.1 at all; the refusal must be the server's
        # protocol_version alert (70), not a local "no protocols available".
        for flag in ("-tls1_1", "-tls1"):
            with self.subTest(version=flag):
                r = self.s_client(flag, "-cipher", "DEFAULT@SECLEVEL=0")
                self.assertNotEqual(r.rc, 0, r.describe())
                self.assertIn("alert protocol version", r.out, r.describe())
                self.assertIn("SSL alert number 70", r.out, r.describe())
                self.assertIsNone(r.leaf(self.pki), r.describe())
        self.normal_https_request("after refused old versions")

    def test_alpn(self):
        r = self.s_client("-alpn", "http/1.1")
        self.assert_handshake(r, context="ALPN http/1.1")
        self.assertIn("ALPN protocol: http/1.1", r.out, r.describe())
        r = self.s_client("-alpn", "h2,http/1.1")
        self.assert_handshake(r, context="ALPN h2,http/1.1")
        self.assertIn("ALPN protocol: http/1.1", r.out, r.describe())
        r = self.s_client()
        self.assert_handshake(r, context="no ALPN")
        self.assertIn("No ALPN negotiated", r.out, r.describe())
        # RFC 7301 3.2: no common protocol is a no_application_protocol alert (120).
        r = self.s_client("-alpn", "h2")
        self.assertNotEqual(r.rc, 0, r.describe())
        self.assertIn("SSL alert number 120", r.out, r.describe())

    # ---- plain HTTP on the TLS port, and the redirect listener ----------------------------

    def test_plain_http_on_the_tls_port(self):
        with HttpClient(self.tls_port, timeout=5) as c:
            resp = c.request("GET", AS_PATH, host=f"mail.example.com:{self.tls_port}")
            self.assertStatus(resp, 400, "plain HTTP on the TLS port")
            self.assertIn(b"HTTPS", resp.body, resp.describe())
            self.assertTrue(resp.has_token("Connection", "close"), resp.describe())
            self.assertTrue(c.wait_closed(5), f"connection left open after the 400; {c.after_close[:200]!r}")
        self.normal_https_request("after plain HTTP on the TLS port")

    def test_redirect_listener(self):
        target = "/Microsoft-Server-ActiveSync?Cmd=Ping&User=jdoe&DeviceId=d1&DeviceType=test"
        expected = f"https://mail.example.com:{self.tls_port}{target}"
        with HttpClient(self.http_port, timeout=5) as c:
            resp = c.request("GET", target, host=f"mail.example.com:{self.http_port}")
            self.assertStatus(resp, 308, "redirect listener")
            self.assertEqual(resp.header("Location"), expected, resp.describe())
            # Keep-alive: a POST with a body on the same connection (the body is read and dropped).
            resp = c.request("POST", target, host="mail.example.com", body=b"x" * 3000,
                             headers={"Content-Type": "application/vnd.ms-sync.wbxml"})
            self.assertStatus(resp, 308, "second request on the redirect connection")
            self.assertEqual(resp.header("Location"), expected, resp.describe())
        # End to end: curl follows the redirect to the TLS listener and gets a pool answer.
        fmt = "%{http_code} %{num_redirects} %{url_effective} %header{x-served-by}"
        code, out, err = curl("-L", "--cacert", self.pki.ca, *self.resolve(port=self.http_port), *self.resolve(),
                              "-o", "/dev/null", "-w", fmt, f"http://mail.example.com:{self.http_port}{AS_PATH}")
        self.assertEqual(code, 0, f"curl -L failed: {err}")
        self.assertEqual(out.split(" ")[:3], ["200", "1", self.https_url(AS_PATH)], out)
        self.assertIn(out.split(" ")[3], POOL_IDS, out)

    # ---- session resumption ---------------------------------------------------------------

    @harness.timeout(90)
    def test_resumption_off_means_full_handshakes(self):
        # session_tickets: false and session_cache_size: 0 (the handshake benchmark's setting):
        # no ticket is issued in either version, and a TLS 1.2 session ID is not resumed.
        tls_port, http_port, admin_port = harness.free_port(), harness.free_port(), harness.free_port()
        config = tls_config(self.pki, self.pool, tls_port, http_port, admin_port, self.pki.tickets,
                            session_tickets=False, session_cache_size=0)
        sprayer = Sprayer(config).start()
        try:
            sess = harness.scratch_path("sess-off") + ".pem"
            first = SClient(tls_port, "-tls1_2", "-sess_out", sess, servername="mail.example.com", ca=self.pki.ca)
            self.assertEqual(first.rc, 0, first.describe())
            self.assertNotIn("TLS session ticket:", first.out, first.describe())
            # s_client writes no session file for a session it cannot resume; if it wrote one,
            # offering it must still end in a full handshake.
            if os.path.exists(sess) and os.path.getsize(sess) > 0:
                again = SClient(tls_port, "-tls1_2", "-sess_in", sess, servername="mail.example.com", ca=self.pki.ca)
                self.assertEqual(again.rc, 0, again.describe())
                self.assertEqual(again.new_or_reused, "New", again.describe())
            v13 = SClient(tls_port, "-tls1_3", servername="mail.example.com", ca=self.pki.ca)
            self.assertEqual(v13.rc, 0, v13.describe())
            self.assertNotIn(TICKET_MARKER, v13.out, v13.describe())
        finally:
            sprayer.stop()

    def test_session_resumption_across_restart(self):
        tls_port, http_port, admin_port = harness.free_port(), harness.free_port(), harness.free_port()
        config = tls_config(self.pki, self.pool, tls_port, http_port, admin_port, self.pki.tickets)
        # (SNI, flag, version, session file). pool1.other.test is served from another SSL_CTX than
        # the one the connection starts on: its tickets must use the same keys.
        cases = [(name, flag, version, harness.scratch_path(f"sess-{name}{flag}") + ".pem")
                 for name in ("mail.example.com", "pool1.other.test")
                 for flag, version in (("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3"))]

        def connect(name, *args, **kw):
            return SClient(tls_port, *args, servername=name, ca=self.pki.ca, **kw)

        first = Sprayer(config).start()
        try:
            for name, flag, version, sess in cases:
                # TLS 1.3 tickets come after the handshake: stdin stays open until one arrived.
                r = connect(name, flag, wait_for_session=sess)
                context = f"first {version} handshake for {name}"
                self.assertTrue(r.session_seen, f"{context}: no session ticket arrived\n{r.describe()}")
                self.assert_handshake(r, "pool1" if name.startswith("pool1") else {"wild-ec", "wild-rsa"},
                                      context=context)
                self.assertIn(TICKET_MARKER if version == "TLSv1.3" else "TLS session ticket:", r.out,
                              f"{context}: no ticket\n{r.describe()}")
        finally:
            first.stop()  # asserts exit 0

        second = Sprayer(config).start()  # same ports, same ticket key file
        try:
            for name, flag, version, sess in cases:
                r = connect(name, flag, "-sess_in", sess)
                self.assertEqual(r.rc, 0, r.describe())
                self.assertEqual(r.new_or_reused, "Reused",
                                 f"{version} session for {name} not resumed by a restarted sprayer with the "
                                 f"same ticket keys\n{r.describe()}")
                self.assertEqual(r.protocol, version, r.describe())
        finally:
            second.stop()

        other = tls_config(self.pki, self.pool, tls_port, http_port, admin_port, self.pki.tickets_other)
        third = Sprayer(other).start()  # same ports, other ticket keys (base64 text file)
        try:
            for name, flag, version, sess in cases:
                r = connect(name, flag, "-sess_in", sess, "-verify_return_error")
                self.assertEqual(r.rc, 0, f"a full handshake should follow an unknown ticket\n{r.describe()}")
                self.assertEqual(r.new_or_reused, "New",
                                 f"{version} session resumed although the ticket keys differ\n{r.describe()}")
        finally:
            third.stop()

    # ---- bad certificates -----------------------------------------------------------------

    def check(self, certificates, ticket_key_file=None):
        config = tls_config(self.pki, self.pool, harness.free_port(), harness.free_port(), harness.free_port(),
                            ticket_key_file or self.pki.tickets)
        config["listeners"][0]["tls"]["certificates"] = [{"cert": c, "key": k} for c, k in certificates]
        proc, path = harness.check_config(config)
        return proc.returncode, proc.stderr.decode(errors="replace") + proc.stdout.decode(errors="replace")

    def test_bad_certificates_refused(self):
        pki = self.pki
        rc, text = self.check([(pki.wild_rsa, pki.wild_rsa_key), (pki.wild_ec, pki.wild_ec_key),
                               (pki.pool1, pki.pool1_key)])
        self.assertEqual(rc, 0, f"the good configuration must pass -t: {text}")
        missing = os.path.join(pki.dir, "missing.pem")
        missing_key = os.path.join(pki.dir, "missing.key")
        cases = [
            ("expired", [(pki.expired, pki.expired_key)], [pki.expired, "expired"]),
            ("not yet valid", [(pki.future, pki.future_key)], [pki.future, "not yet valid"]),
            ("EC key of another certificate", [(pki.wild_ec, pki.pool1_key)],
             [pki.pool1_key, pki.wild_ec, "does not match"]),
            ("EC key for an RSA certificate", [(pki.wild_rsa, pki.wild_ec_key)],
             [pki.wild_ec_key, pki.wild_rsa, "does not match"]),
            ("missing certificate", [(missing, pki.wild_ec_key)], [missing, "No such file"]),
            ("missing key", [(pki.wild_ec, missing_key)], [missing_key, "No such file"]),
            ("bad second certificate", [(pki.wild_ec, pki.wild_ec_key), (pki.expired, pki.expired_key)],
             [pki.expired, "expired"]),
        ]
        for case, certs, needles in cases:
            with self.subTest(case=case):
                rc, text = self.check(certs)
                self.assertEqual(rc, 1, f"{case}: sprayer -t should exit 1: {text}")
                for needle in needles:
                    self.assertIn(needle, text, f"{case}: message should name {needle!r}: {text}")
        with self.subTest(case="79-byte ticket key file"):
            rc, text = self.check([(pki.wild_ec, pki.wild_ec_key)], ticket_key_file=pki.tickets_short)
            self.assertEqual(rc, 1, text)
            self.assertIn(pki.tickets_short, text)
        with self.subTest(case="start with an expired certificate"):
            config = tls_config(pki, self.pool, harness.free_port(), harness.free_port(), harness.free_port(),
                                pki.tickets)
            config["listeners"][0]["tls"]["certificates"] = [{"cert": pki.expired, "key": pki.expired_key}]
            path = harness.write_config(config)
            proc = run_tool([harness.SPRAYER_BIN, "-c", path], timeout=15, check=False)
            text = proc.stderr.decode(errors="replace")
            self.assertEqual(proc.returncode, 1, f"sprayer started with an expired certificate: {text}")
            self.assertIn(pki.expired, text)
            self.assertIn("expired", text)

    # ---- hostile handshakes -----------------------------------------------------------------

    @harness.timeout(60)
    def test_garbage_and_stalled_handshakes(self):
        stalled = [socket.create_connection(("127.0.0.1", self.tls_port), timeout=5) for _ in range(20)]
        partial = []
        for _ in range(10):
            s = socket.create_connection(("127.0.0.1", self.tls_port), timeout=5)
            # A handshake record announcing 512 bytes, of which 100 arrive.
            s.sendall(b"\x16\x03\x01\x02\x00" + b"\x01\x00\x01\xfc" + os.urandom(96))
            partial.append(s)
        opened = time.monotonic()
        garbage_results = []
        lock = threading.Lock()

        def garbage(seed):
            rng = random.Random(seed)
            shapes = [
                lambda: bytes([0x80 | rng.randrange(128)]) + rng.randbytes(rng.randrange(1, 4000)),  # not HTTP
                lambda: b"\x16\x03\x01\x00\x40" + rng.randbytes(64),          # record of random "ClientHello"
                lambda: b"\x16\x03\x01\xff\xff" + rng.randbytes(1000),        # oversized record length
                lambda: b"\x15\x03\x03\x00\x02\x02\x28",                      # an alert as the first record
            ]
            for i in range(5):
                try:
                    with socket.create_connection(("127.0.0.1", self.tls_port), timeout=5) as s:
                        s.sendall(shapes[(seed + i) % len(shapes)]())
                        if i % 2:
                            s.shutdown(socket.SHUT_WR)
                            closed, data = read_until_closed(s, 5)
                            with lock:
                                garbage_results.append((closed, data[:16]))
                except OSError:
                    pass  # reset while sending: the server dropped it, fine

        threads = [threading.Thread(target=garbage, args=(n,), daemon=True) for n in range(8)]
        for t in threads:
            t.start()
        # Normal requests while the garbage flows and the stalled handshakes sit.
        for i in range(5):
            self.normal_https_request(f"concurrent request {i}")
        for t in threads:
            t.join(20)
        self.assertFalse(any(t.is_alive() for t in threads), "garbage senders did not finish")
        self.sprayer.assert_alive()
        not_closed = [d for closed, d in garbage_results if not closed]
        self.assertEqual(not_closed, [], "garbage connections left open after the client's FIN")
        for closed, data in garbage_results:
            if data:
                self.assertEqual(data[0], 0x15, f"server answered garbage with something else than an alert: {data!r}")

        # Stalled and partial handshakes are cut off by client_header.
        for kind, socks in (("stalled", stalled), ("partial", partial)):
            for s in socks:
                budget = opened + CLIENT_HEADER_S + 5 - time.monotonic()
                closed, data = read_until_closed(s, max(0.1, budget))
                s.close()
                self.assertTrue(closed, f"{kind} handshake still open {CLIENT_HEADER_S + 5}s after connecting")
        self.normal_https_request("after the hostile handshakes")
        self.sprayer.assert_alive()

    def test_completed_handshake_without_request_is_closed(self):
        # client_header runs from the accept: a client that completes the handshake and then sends
        # nothing is closed once it expires, with close_notify (an orderly TLS close, not a
        # truncation), and other connections are unaffected.
        ctx = ssl.create_default_context(cafile=self.pki.ca)
        raw = socket.create_connection(("127.0.0.1", self.tls_port), timeout=5)
        started = time.monotonic()
        # suppress_ragged_eofs=False: a close without close_notify raises SSLEOFError.
        with ctx.wrap_socket(raw, server_hostname="mail.example.com", suppress_ragged_eofs=False) as s:
            self.assertIn(s.version(), ("TLSv1.2", "TLSv1.3"))
            s.settimeout(CLIENT_HEADER_S + 5)
            try:
                data = s.recv(1024)  # TLS 1.3 tickets are consumed inside; b"" after close_notify
            except ssl.SSLEOFError:
                self.fail("the idle TLS connection was closed without close_notify")
            except (ssl.SSLZeroReturnError, ConnectionResetError):
                data = b""
            except socket.timeout:
                self.fail(f"idle TLS connection still open {CLIENT_HEADER_S + 5}s after connecting")
            elapsed = time.monotonic() - started
        self.assertEqual(data, b"", "unexpected application data on an idle connection")
        self.assertGreaterEqual(elapsed, CLIENT_HEADER_S - 0.5, f"closed after {elapsed:.2f}s, before client_header")
        self.normal_https_request("after an idle TLS connection")

    def test_session_not_resumed_under_another_certificate(self):
        # RFC 6066 3: a session made for pool1.other.test (its own certificate) must not be
        # resumed for mail.example.com (the wildcard), and the reverse; the same name resumes.
        for flag, version in (("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")):
            for first, other in (("pool1.other.test", "mail.example.com"), ("mail.example.com", "pool1.other.test")):
                sess = harness.scratch_path(f"sess-cross-{first}{flag}") + ".pem"
                r = self.s_client(flag, servername=first, wait_for_session=sess)
                self.assertTrue(r.session_seen, f"{version} {first}: no session\n{r.describe()}")
                # s_client offers the session whatever name it sends (as a careless client may).
                crossed = SClient(self.tls_port, flag, "-sess_in", sess, servername=other, ca=self.pki.ca)
                self.assertEqual(crossed.rc, 0, crossed.describe())
                self.assertEqual(crossed.new_or_reused, "New",
                                 f"{version} session for {first} resumed under {other}\n{crossed.describe()}")
                expected_leaf = "pool1" if other.startswith("pool1") else {"wild-ec", "wild-rsa"}
                self.assertIn(crossed.leaf(self.pki), expected_leaf if isinstance(expected_leaf, set) else {expected_leaf},
                              f"{other} must get its own certificate\n{crossed.describe()}")
                same = self.s_client(flag, "-sess_in", sess, servername=first)
                self.assertEqual(same.new_or_reused, "Reused", f"{version} {first} again\n{same.describe()}")

    # ---- metrics ------------------------------------------------------------------------------

    def test_tls_metrics(self):
        h0 = metric(self.admin_port, "sprayer_tls_handshakes_total")
        f0 = metric(self.admin_port, "sprayer_tls_handshake_failures_total")
        o0 = metric(self.admin_port, "sprayer_tls_own_record_layer_total")
        self.assert_handshake(self.s_client("-tls1_3"), context="handshake for the metrics")
        harness.wait_until(lambda: metric(self.admin_port, "sprayer_tls_handshakes_total") >= h0 + 1, 5,
                           what="sprayer_tls_handshakes_total to count the handshake")
        # TLS 1.3 moved to sprayer's record layer; TLS 1.2 stays on OpenSSL.
        self.assertEqual(metric(self.admin_port, "sprayer_tls_own_record_layer_total"), o0 + 1)
        self.assert_handshake(self.s_client("-tls1_2"), context="TLS 1.2 handshake for the metrics")
        harness.wait_until(lambda: metric(self.admin_port, "sprayer_tls_handshakes_total") >= h0 + 2, 5,
                           what="sprayer_tls_handshakes_total to count the TLS 1.2 handshake")
        self.assertEqual(metric(self.admin_port, "sprayer_tls_own_record_layer_total"), o0 + 1)
        h0 += 1
        with HttpClient(self.tls_port, timeout=5) as c:
            self.assertStatus(c.request("GET", "/", host="mail.example.com"), 400, "plain HTTP")
        harness.wait_until(lambda: metric(self.admin_port, "sprayer_tls_handshake_failures_total") >= f0 + 1, 5,
                           what="sprayer_tls_handshake_failures_total to count plain HTTP")
        with socket.create_connection(("127.0.0.1", self.tls_port), timeout=5) as s:
            s.sendall(b"\x16\x03\x01\x00\x40" + os.urandom(64))
            s.shutdown(socket.SHUT_WR)
            read_until_closed(s, 5)
        harness.wait_until(lambda: metric(self.admin_port, "sprayer_tls_handshake_failures_total") >= f0 + 2, 5,
                           what="sprayer_tls_handshake_failures_total to count a garbage handshake")
        h1 = metric(self.admin_port, "sprayer_tls_handshakes_total")
        f1 = metric(self.admin_port, "sprayer_tls_handshake_failures_total")
        self.assertGreater(h1, 0)
        self.assertGreaterEqual(f1, 1)
        # A failed handshake is not counted as a completed one.
        self.assertEqual(h1, h0 + 1, f"handshakes went from {h0} to {h1} with one good handshake")


def install_pair(src_cert, src_key, cert, key):
    """Puts a certificate and key in place the way certificate tools do: key first, then
    certificate, each written aside and renamed over the old file."""
    for src, dst in ((src_key, key), (src_cert, cert)):
        with open(src, "rb") as f:
            data = f.read()
        with open(dst + ".tmp", "wb") as f:
            f.write(data)
        os.replace(dst + ".tmp", dst)


class TlsReloadTest(harness.TestCase):
    """Certificates change without a restart: a replaced file is picked up by itself, a broken
    one is refused while the working certificate keeps serving, and SIGHUP reloads too."""

    def test_certificates_reload_without_restart(self):
        pki = Pki(scratch_folder("tls-reload-pki"))
        live = scratch_folder("tls-reload-live")
        cert, key = os.path.join(live, "cert.pem"), os.path.join(live, "cert.key")

        def install(src_cert, src_key):
            install_pair(src_cert, src_key, cert, key)

        install(pki.pool1, pki.pool1_key)
        pool = harness.pool(1)
        port = harness.free_port()
        config = harness.sprayer_config(pool, workers=2, port=port)
        config["listeners"] = [{"name": "https", "address": f"127.0.0.1:{port}",
                                "tls": {"certificates": [{"cert": cert, "key": key}]}}]
        sprayer = Sprayer(config).start()
        try:
            def served():
                return SClient(port, servername="pool1.other.test", ca=pki.ca).leaf(pki)

            self.assertEqual(served(), "pool1")
            install(pki.wild_ec, pki.wild_ec_key)
            wait_until(lambda: served() == "wild-ec", 10, interval=0.1, what="the replaced certificate to be served")

            with open(cert, "w") as f:
                f.write("not a certificate\n")
            wait_until(lambda: "refused" in sprayer.stderr_text(), 10, interval=0.1,
                       what="the broken certificate to be refused")
            self.assertIn("cert.pem", sprayer.stderr_text())
            self.assertEqual(served(), "wild-ec", "the working certificate must stay after a refused reload")

            install(pki.pool1, pki.pool1_key)
            os.kill(sprayer.pid, signal.SIGHUP)
            wait_until(lambda: served() == "pool1", 10, interval=0.1, what="SIGHUP to load the restored certificate")
            sprayer.assert_alive()
        finally:
            sprayer.stop()
            pool.stop()


class TlsReloadUnderLoadTest(harness.TestCase):
    """Issue #5: certificates replaced and SIGHUP sent several times while clients keep making
    HTTPS requests (new connections and keep-alive ones): not one request fails, and new
    connections get the new certificate."""

    TIMEOUT = 90
    THREADS = 4
    RELOADS = 6

    def test_reload_under_load_loses_no_request(self):
        pki = Pki(scratch_folder("tls-load-pki"))
        live = scratch_folder("tls-load-live")
        cert, key = os.path.join(live, "cert.pem"), os.path.join(live, "cert.key")

        def install(src_cert, src_key):
            install_pair(src_cert, src_key, cert, key)

        # Both cover mail.example.com: clients verify chain and name throughout.
        versions = [(pki.wild_ec, pki.wild_ec_key, "wild-ec"), (pki.wild_rsa, pki.wild_rsa_key, "wild-rsa")]
        install(*versions[0][:2])
        pool = harness.pool(2)
        port = harness.free_port()
        config = harness.sprayer_config(pool, workers=2, port=port)
        config["listeners"] = [{"name": "https", "address": f"127.0.0.1:{port}",
                                "tls": {"certificates": [{"cert": cert, "key": key}]}}]
        sprayer = Sprayer(config).start()
        stop = threading.Event()
        lock = threading.Lock()
        counts = {"ok": 0, "connections": 0}
        failures = []

        def served_leaf():
            ctx = ssl.create_default_context(cafile=pki.ca)
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                    ctx.wrap_socket(raw, server_hostname="mail.example.com") as s:
                return pki.fingerprints.get(hashlib.sha256(s.getpeercert(binary_form=True)).hexdigest())

        def client_loop(n):
            # Each connection makes 1..8 requests, so handshakes and keep-alive reuse mix.
            rng = random.Random(n)
            deadline = time.monotonic() + 60  # bounded even if the main thread never stops us
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    with TlsHttpClient(port, pki.ca, timeout=10) as c:
                        with lock:
                            counts["connections"] += 1
                        for _ in range(rng.randint(1, 8)):
                            resp = c.request("GET", AS_PATH, host="mail.example.com")
                            if resp.status != 200:
                                raise AssertionError(f"status {resp.status}")
                            with lock:
                                counts["ok"] += 1
                except Exception as e:  # noqa: BLE001 - every failure is counted and shown
                    with lock:
                        failures.append(f"{type(e).__name__}: {e}")

        threads = [threading.Thread(target=client_loop, args=(i,), daemon=True) for i in range(self.THREADS)]
        try:
            self.assertEqual(served_leaf(), "wild-ec")
            for t in threads:
                t.start()
            wait_until(lambda: counts["ok"] >= 50, 20, what="load to run")
            for i in range(1, self.RELOADS + 1):
                cert_file, key_file, name = versions[i % 2]
                install(cert_file, key_file)
                os.kill(sprayer.pid, signal.SIGHUP)
                wait_until(lambda: served_leaf() == name, 10, interval=0.05,
                           what=f"reload {i}: new connections to get {name}")
                before = counts["ok"]
                wait_until(lambda: counts["ok"] >= before + 20, 10, what=f"requests after reload {i}")
        finally:
            stop.set()
            for t in threads:
                t.join(15)
            sprayer.assert_alive()
            sprayer.stop()
            pool.stop()
        self.assertEqual(failures, [], f"{len(failures)} failed requests during reloads "
                                       f"(of {counts['ok'] + len(failures)})")
        self.assertGreater(counts["connections"], 20)
        sys.stderr.write(f"reload under load: {counts['ok']} requests on {counts['connections']} connections, "
                         f"{self.RELOADS} reloads, 0 failures\n")


if __name__ == "__main__":
    harness.main()
