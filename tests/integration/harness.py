"""Integration-test harness: starts poolsim and sprayer processes, talks raw HTTP/1.1 to them.

Python 3 stdlib only. Every wait has a deadline, every process started is killed at exit
(atexit, SIGTERM/SIGHUP, and a per-test watchdog), so a broken proxy fails a test instead of
hanging the suite.
"""

import atexit
import contextlib
import ctypes
import faulthandler
import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import unittest

SOURCE_DIR = os.environ.get("SPRAYER_SOURCE_DIR") or "/work/main"
SPRAYER_BIN = os.environ.get("SPRAYER_BIN") or os.path.join(SOURCE_DIR, "build", "proxy", "sprayer")
POOLSIM_BIN = os.environ.get("POOLSIM_BIN") or os.path.join(SOURCE_DIR, "build", "tests", "poolsim", "poolsim")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pg_server import PostgresServer  # noqa: E402,F401  (re-exported for the suites)

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
MASK64 = 0xFFFFFFFFFFFFFFFF


# ---------------------------------------------------------------------------------------------
# Process bookkeeping: whatever happens, no child outlives the test run.

class _Reaper:
    """Remembers every child process and the scratch directory; cleans both up at exit."""

    def __init__(self):
        self.processes = []
        self.cleanups = []          # callables for what is not a child process (PostgreSQL)
        self.lock = threading.Lock()
        self.tmpdir = None

    def add(self, proc):
        with self.lock:
            self.processes.append(proc)

    def scratch_dir(self):
        with self.lock:
            if self.tmpdir is None:
                self.tmpdir = tempfile.mkdtemp(prefix="sprayer-it-")
            return self.tmpdir

    def kill_all(self):
        with self.lock:
            procs = list(self.processes)
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    proc.kill()
        for proc in procs:
            with contextlib.suppress(Exception):
                proc.wait(timeout=5)

    def add_cleanup(self, fn):
        with self.lock:
            self.cleanups.append(fn)

    def remove_cleanup(self, fn):
        with self.lock:
            with contextlib.suppress(ValueError):
                self.cleanups.remove(fn)

    def at_exit(self):
        self.kill_all()
        with self.lock:
            cleanups, self.cleanups = list(self.cleanups), []
        for fn in reversed(cleanups):
            with contextlib.suppress(Exception):
                fn()
        if self.tmpdir and not os.environ.get("SPRAYER_KEEP_TMP"):
            shutil.rmtree(self.tmpdir, ignore_errors=True)


_reaper = _Reaper()
atexit.register(_reaper.at_exit)


def _on_fatal_signal(signum, frame):
    _reaper.at_exit()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


if threading.current_thread() is threading.main_thread():
    for _sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(_sig, _on_fatal_signal)

_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
_PR_SET_PDEATHSIG = 1


def _child_setup():
    # If the test process is SIGKILLed (ctest timeout), the children die with it. Only used
    # for children started from the main thread: the death signal follows the parent thread.
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _spawn(argv, stdout, stderr):
    if not os.path.exists(argv[0]):
        raise FileNotFoundError(f"binary not found: {argv[0]} (set SPRAYER_BIN / POOLSIM_BIN)")
    main = threading.current_thread() is threading.main_thread()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                            preexec_fn=_child_setup if main else None)
    _reaper.add(proc)
    return proc


def read_text(path):
    """A log file's text so far ("" when it does not exist yet)."""
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def scratch_path(name):
    """A unique file path in the run's scratch directory."""
    fd, path = tempfile.mkstemp(prefix=name + "-", dir=_reaper.scratch_dir())
    os.close(fd)
    return path


# ---------------------------------------------------------------------------------------------
# Deadlines and small utilities.

class WaitTimeout(AssertionError):
    pass


class SyncLoad:
    """Closed-loop keep-alive clients posting ActiveSync Syncs through sprayer until stop().

    pick(rng) -> (fields, target): the tuple recorded for the request and its target. Each
    request is recorded as (start, end, *fields, status, served_by); a request that raised is
    recorded with status "-1 <exception>" (never 200). Every thread stops after `bound` seconds
    even if stop() is never called."""

    def __init__(self, port, pick, threads=4, bound=120.0):
        self.port = port
        self.pick = pick
        self.threads = threads
        self.bound = bound
        self.stop_flag = threading.Event()
        self.records = []
        self.lock = threading.Lock()
        self.workers = []

    def _run(self, seed):
        rng = random.Random(seed)
        client = None
        deadline = time.monotonic() + self.bound
        while not self.stop_flag.is_set() and time.monotonic() < deadline:
            fields, target = self.pick(rng)
            start = time.monotonic()
            status, served = 0, None
            try:
                if client is None:
                    client = HttpClient(self.port, timeout=10)
                resp = client.request("POST", target, body=b"sync")
                status, served = resp.status, resp.header("X-Served-By")
                if resp.has_token("Connection", "close"):
                    client.close()
                    client = None
            except Exception as e:  # recorded as a failure, with its reason
                status = f"-1 {e!r}"[:200]
                with contextlib.suppress(Exception):
                    client.close()
                client = None
            with self.lock:
                self.records.append((start, time.monotonic(), *fields, status, served))
        if client is not None:
            client.close()

    def start(self):
        for k in range(self.threads):
            t = threading.Thread(target=self._run, args=(k,), daemon=True)
            t.start()
            self.workers.append(t)
        return self

    def stop(self):
        self.stop_flag.set()
        for t in self.workers:
            t.join(30)

    def snapshot(self):
        with self.lock:
            return list(self.records)

    def count(self):
        with self.lock:
            return len(self.records)


def wait_until(pred, timeout, interval=0.02, what="condition"):
    """Polls pred() until it returns a truthy value (returned) or raises at the deadline.

    OSErrors raised by pred (connection refused while a server starts) count as "not yet"
    and the last one is named in the message.
    """
    deadline = time.monotonic() + timeout
    last_error = None
    while True:
        try:
            value = pred()
            if value:
                return value
        except OSError as e:
            last_error = e
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise WaitTimeout(f"timed out after {timeout:.1f}s waiting for {what}{detail}")
        time.sleep(interval)


def free_port():
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_accepts(port, host="127.0.0.1", timeout=0.5):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def fnv1a64(data, h=FNV_OFFSET):
    """FNV-1a 64 in pure Python: fine for a few MB, too slow for 100 MB."""
    for b in data:
        h = ((h ^ b) * FNV_PRIME) & MASK64
    return h


def blob_bytes(offset, n):
    """Bytes offset..offset+n of poolsim's blob pattern: byte i = (i*31+7) & 0xff."""
    return bytes(((i * 31 + 7) & 0xFF) for i in range(offset, offset + n))


_PATTERN_PERIOD = bytes(((i * 31 + 7) & 0xFF) for i in range(256))
_PATTERN_BIG = _PATTERN_PERIOD * (1024 + 2)  # any slice up to 256 KiB at any phase


class BlobChecker:
    """Body sink that checks a streamed blob against the pattern without keeping it."""

    def __init__(self):
        self.length = 0
        self.first_mismatch = None

    def __call__(self, piece):
        view = memoryview(piece)
        while len(view):
            n = min(len(view), 256 * 1024)
            if self.first_mismatch is None:
                phase = self.length % 256
                if view[:n] != _PATTERN_BIG[phase:phase + n]:
                    expected = _PATTERN_BIG[phase:phase + n]
                    got = bytes(view[:n])
                    i = next(k for k in range(n) if got[k] != expected[k])
                    self.first_mismatch = self.length + i
            self.length += n
            view = view[n:]


def random_stream(seed, total, piece=64 * 1024):
    """Deterministic, non-periodic bytes in pieces (a reordered piece changes the hash)."""
    rng = random.Random(seed)
    sent = 0
    while sent < total:
        n = min(piece, total - sent)
        yield rng.randbytes(n)
        sent += n


# ---------------------------------------------------------------------------------------------
# Raw HTTP/1.1 client.

class HttpError(AssertionError):
    """Protocol violation or timeout while reading a response."""


class Response:
    def __init__(self, version, status, reason, headers):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers      # [(name, value)] in wire order
        self.body = b""
        self.body_length = 0
        self.chunked = False
        self.trailers = []
        self.interim = []           # 1xx responses that preceded this one
        self.elapsed = 0.0

    def header(self, name, default=None):
        lname = name.lower()
        for k, v in self.headers:
            if k.lower() == lname:
                return v
        return default

    def header_all(self, name):
        lname = name.lower()
        return [v for k, v in self.headers if k.lower() == lname]

    def has_token(self, name, token):
        """True when the comma-separated header `name` lists `token` (case-insensitive)."""
        for v in self.header_all(name):
            if token.lower() in (t.strip().lower() for t in v.split(",")):
                return True
        return False

    def json(self):
        try:
            return json.loads(self.body.decode("utf-8"))
        except ValueError as e:
            raise HttpError(f"body is not JSON ({e}): {self.body[:300]!r}") from None

    def describe(self):
        heads = "".join(f"\n    {k}: {v}" for k, v in self.headers)
        return (f"{self.version} {self.status} {self.reason}{heads}\n    body[{self.body_length}]: "
                f"{self.body[:300]!r}")

    def __repr__(self):
        return f"<Response {self.status} {self.reason} body={self.body_length}B>"


def build_request(method, target, headers=(), body=None, host="sprayer.test", version="HTTP/1.1"):
    """Request bytes. headers: dict or [(name, value)]. Adds Host unless given (host=None: never)
    and Content-Length for a bytes body unless a length or Transfer-Encoding is given."""
    items = list(headers.items()) if isinstance(headers, dict) else list(headers)
    names = {k.lower() for k, _ in items}
    if host is not None and "host" not in names:
        items.insert(0, ("Host", host))
    if body is not None and "content-length" not in names and "transfer-encoding" not in names:
        items.append(("Content-Length", str(len(body))))
    head = f"{method} {target} {version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in items) + "\r\n"
    return head.encode("latin-1") + (body or b"")


class HttpClient:
    """One TCP connection; sends raw bytes and reads responses in order (pipelining is just
    sending several requests, then calling read_response once per request)."""

    MAX_HEAD = 1024 * 1024

    def __init__(self, port, host="127.0.0.1", timeout=10.0):
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.eof = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        with contextlib.suppress(OSError):
            self.sock.close()

    def send(self, data):
        self.sock.settimeout(self.timeout)
        self.sock.sendall(data)

    def request(self, method, target, headers=(), body=None, timeout=None, head=None, **kw):
        self.send(build_request(method, target, headers, body, **kw))
        return self.read_response(timeout=timeout, head=method == "HEAD" if head is None else head)

    # -- reading --

    def _recv(self, deadline, what):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise HttpError(f"timed out waiting for {what}; unparsed bytes: {bytes(self.buf[:300])!r}")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(256 * 1024)
        except socket.timeout:
            raise HttpError(f"timed out waiting for {what}; unparsed bytes: "
                            f"{bytes(self.buf[:300])!r}") from None
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
        return data

    def _fill(self, deadline, what):
        data = self._recv(deadline, what)
        if not data:
            raise HttpError(f"connection closed by peer while waiting for {what}; "
                            f"unparsed bytes: {bytes(self.buf[:300])!r}")
        self.buf += data

    def _read_line(self, deadline, what):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return line
            if len(self.buf) > self.MAX_HEAD:
                raise HttpError(f"line longer than {self.MAX_HEAD} bytes while reading {what}")
            self._fill(deadline, what)

    def _read_exact(self, n, deadline, sink, what):
        kept = bytearray() if sink is None else None
        while n > 0:
            if not self.buf:
                self._fill(deadline, what)
            take = min(n, len(self.buf))
            if sink is None:
                kept += self.buf[:take]
            else:
                sink(self.buf[:take])  # a copy: a live memoryview would pin the buffer's size
            del self.buf[:take]
            n -= take
        return kept

    def read_head(self, timeout=None):
        """Reads one response head (1xx included) and returns a body-less Response."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            i = self.buf.find(b"\r\n\r\n")
            if i >= 0:
                break
            if len(self.buf) > self.MAX_HEAD:
                raise HttpError(f"response head exceeds {self.MAX_HEAD} bytes")
            self._fill(deadline, "a response head")
        raw = bytes(self.buf[:i]).decode("latin-1")
        del self.buf[:i + 4]
        lines = raw.split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise HttpError(f"bad status line: {lines[0]!r}")
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise HttpError(f"bad header line {line!r} in response head:\n{raw}")
            headers.append((name.strip(), value.strip()))
        return Response(parts[0], int(parts[1]), parts[2] if len(parts) > 2 else "", headers)

    def read_response(self, timeout=None, head=False, sink=None):
        """Reads the next final response (1xx responses are collected in .interim).

        head: the request was HEAD (no body follows). sink: callable receiving body pieces
        instead of keeping them (for large bodies); .body_length counts them either way.
        """
        timeout = timeout or self.timeout
        start = time.monotonic()
        deadline = start + timeout
        interim = []
        while True:
            resp = self.read_head(timeout=max(0.001, deadline - time.monotonic()))
            if 100 <= resp.status < 200 and resp.status != 101:
                interim.append(resp)
                continue
            break
        resp.interim = interim
        self.read_body(resp, timeout=max(0.001, deadline - time.monotonic()), head=head, sink=sink)
        resp.elapsed = time.monotonic() - start
        return resp

    def read_body(self, resp, timeout=None, head=False, sink=None):
        """Reads the body of `resp` (a head from read_head) into resp.body, or into sink."""
        deadline = time.monotonic() + (timeout or self.timeout)
        counted = [0]

        def counting_sink(piece):
            counted[0] += len(piece)
            sink(piece)

        target = counting_sink if sink is not None else None
        te = ",".join(resp.header_all("Transfer-Encoding")).lower()
        cl = resp.header_all("Content-Length")
        if head or resp.status in (204, 304) or 100 <= resp.status < 200:
            body = b""
        elif "chunked" in te:
            resp.chunked = True
            body = self._read_chunked(deadline, target)
        elif cl:
            if len(set(cl)) != 1 or not cl[0].isdigit():
                raise HttpError(f"bad Content-Length {cl!r} in response:\n{resp.describe()}")
            body = self._read_exact(int(cl[0]), deadline, target, f"{cl[0]}-byte body")
        else:
            body = self._read_to_close(deadline, target)
        resp.body = bytes(body) if body is not None else b""
        resp.body_length = counted[0] if sink is not None else len(resp.body)
        return resp

    def _read_chunked(self, deadline, sink):
        kept = bytearray()
        while True:
            line = self._read_line(deadline, "a chunk size line")
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise HttpError(f"bad chunk size line {line!r}") from None
            if size == 0:
                break
            part = self._read_exact(size, deadline, sink, "chunk data")
            if sink is None:
                kept += part
            if self._read_line(deadline, "the CRLF after chunk data") != b"":
                raise HttpError("chunk data not followed by CRLF")
        while self._read_line(deadline, "chunked trailers") != b"":
            pass
        return kept

    def _read_to_close(self, deadline, sink):
        kept = bytearray()
        while True:
            if self.buf:
                if sink is None:
                    kept += self.buf
                else:
                    sink(bytes(self.buf))
                self.buf.clear()
            if self.eof:
                return kept
            data = self._recv(deadline, "a close-delimited body")
            self.buf += data

    def read_responses(self, n, timeout=None, heads=()):
        """n responses in order; heads: indexes of requests that were HEAD."""
        return [self.read_response(timeout=timeout, head=i in heads) for i in range(n)]

    def wait_closed(self, timeout=3.0):
        """True once the peer closes (EOF or reset) within timeout; extra bytes are discarded
        into .after_close so a test can show them."""
        deadline = time.monotonic() + timeout
        self.after_close = bytes(self.buf)
        self.buf.clear()
        if self.eof:
            return True
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                return False
            except (ConnectionResetError, BrokenPipeError):
                return True
            if not data:
                self.eof = True
                return True
            self.after_close += data
        return False


def http_request(port, method, target, headers=(), body=None, timeout=10.0, **kw):
    """One request on a fresh connection."""
    with HttpClient(port, timeout=timeout) as client:
        return client.request(method, target, headers, body, timeout=timeout, **kw)


# What the admin API wants on every state change: the header a browser form cannot send
# (CSRF), and a Host that names the loopback listener (DNS rebinding).
ADMIN_WRITE = [("X-Sprayer-Admin", "1"), ("Host", "127.0.0.1")]


def metric(port, name, **labels):
    """The value of `name` on /metrics at `port`: the sum of the series with these label values
    (labels not given are summed over, e.g. the `listener` of the connection and TLS families)."""
    resp = http_request(port, "GET", "/metrics", timeout=5)
    if resp.status != 200:
        raise AssertionError(f"/metrics: {resp.describe()}")
    text = resp.body.decode()
    found = None
    for m in re.finditer(rf"^{re.escape(name)}(?:{{([^}}]*)}})?\s+(\S+)\s*$", text, re.M):
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            found = (found or 0.0) + float(m.group(2))
    if found is not None:
        return found
    raise AssertionError(f"/metrics has no {name} {labels or ''}:\n{text[:3000]}")


def send_chunked(client, pieces):
    """Sends an iterable of bytes as chunked body pieces, then the last chunk."""
    total = 0
    for piece in pieces:
        if not piece:
            continue
        client.send(b"%x\r\n" % len(piece) + piece + b"\r\n")
        total += len(piece)
    client.send(b"0\r\n\r\n")
    return total


# ---------------------------------------------------------------------------------------------
# poolsim.

def _duration(value):
    """poolsim duration text from seconds (int/float) or a ready string ("1s", "200ms")."""
    if isinstance(value, str):
        return value
    return f"{max(1, int(round(value * 1000)))}ms"


def db_spec(db):
    """The --db argument for a pool database: a SqlitePool, a PostgresServer (PostgresPool) or
    a ready "sqlite:PATH" / "postgresql:CONNINFO" string."""
    if db is None or isinstance(db, str):
        return db
    if hasattr(db, "spec"):
        return db.spec
    if hasattr(db, "conninfo"):
        return "postgresql:" + db.conninfo
    raise TypeError(f"not a pool database: {db!r}")


class Poolsim:
    """One poolsim process. port=0 (default) lets poolsim pick a port; .port is the real one.

    Pool duties (see tests/poolsim/options.cpp): db= a SqlitePool, PostgresPool/PostgresServer or
    spec string; advertise=, availability=, heartbeat=/stale_after=/refresh= (seconds or "1s"),
    claim=False for --no-claim. Without db= poolsim is a plain server, as before.
    """

    def __init__(self, id="pool1", port=0, args=(), host="127.0.0.1", start_timeout=10.0, db=None,
                 advertise=None, availability=None, heartbeat=None, stale_after=None, refresh=None,
                 claim=True):
        self.id = id
        self.host = host
        self.port = port
        self.args = list(args)
        self.db = db
        if db is not None:
            self.args += ["--db", db_spec(db)]
        if advertise is not None:
            self.args += ["--advertise", advertise]
        if availability is not None:
            self.args += ["--availability", str(availability)]
        for flag, value in (("--heartbeat", heartbeat), ("--stale-after", stale_after), ("--refresh", refresh)):
            if value is not None:
                self.args += [flag, _duration(value)]
        if not claim:
            self.args.append("--no-claim")
        self.start_timeout = start_timeout
        self.proc = None
        self.paused = False
        self.stderr_path = scratch_path(f"poolsim-{id}.stderr")

    @property
    def address(self):
        return f"{self.host}:{self.port}"

    @property
    def returncode(self):
        return None if self.proc is None else self.proc.poll()

    def start(self):
        argv = [POOLSIM_BIN, "--id", self.id, "--listen", f"{self.host}:{self.port}", *self.args]
        self._stderr = open(self.stderr_path, "wb")
        self.proc = _spawn(argv, subprocess.PIPE, self._stderr)
        line = self._read_listening_line()
        self.port = int(line.rsplit(":", 1)[1])
        return self

    def _read_listening_line(self):
        deadline = time.monotonic() + self.start_timeout
        fd = self.proc.stdout.fileno()
        os.set_blocking(fd, False)
        data = b""
        while True:
            if b"\n" in data:
                line = data.split(b"\n", 1)[0].decode()
                if f"poolsim {self.id} listening on " in line:
                    return line
                raise AssertionError(f"poolsim {self.id}: unexpected first line {line!r}")
            if self.proc.poll() is not None:
                raise AssertionError(f"poolsim {self.id} exited with {self.proc.returncode} before "
                                     f"listening; stderr:\n{self.stderr_text()}")
            if time.monotonic() > deadline:
                self.kill()
                raise WaitTimeout(f"poolsim {self.id} did not print its listening line within "
                                  f"{self.start_timeout}s; stderr:\n{self.stderr_text()}")
            try:
                chunk = os.read(fd, 4096)
                data += chunk
            except BlockingIOError:
                time.sleep(0.01)

    def stderr_text(self):
        return read_text(self.stderr_path)

    def kill(self, sig=signal.SIGKILL):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def pause(self):
        """SIGSTOP: the process stays, but neither answers nor heartbeats (a hung server)."""
        self.kill(signal.SIGSTOP)
        self.paused = True

    def resume(self):
        self.kill(signal.SIGCONT)
        self.paused = False

    def stop(self, timeout=5.0):
        """SIGTERM, wait up to timeout, then SIGKILL. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            if self.paused:
                self.resume()  # a stopped process would hold SIGTERM until the SIGKILL
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        with contextlib.suppress(Exception):
            self.proc.stdout.close()
            self._stderr.close()
        return self.proc.returncode

    def __enter__(self):
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, exc_type, *exc):
        alive = self.proc is not None and self.proc.poll() is None
        code = self.stop()
        # Only a SIGTERM sent here must end in 0; a test may have killed it on purpose.
        if alive and code != 0 and exc_type is None:
            raise AssertionError(f"poolsim {self.id} exited with {code} on SIGTERM, expected 0; "
                                 f"stderr:\n{self.stderr_text()}")

    # Conveniences that talk to this poolsim directly (not through sprayer).
    def get(self, target, headers=(), timeout=10.0):
        return http_request(self.port, "GET", target, headers, timeout=timeout, host=self.address)

    def stats(self):
        return self.get("/poolsim/stats").json()

    def post(self, target, headers=(), timeout=10.0):
        return http_request(self.port, "POST", target, headers, timeout=timeout, host=self.address)

    def sync(self, user, cmd="Sync", timeout=10.0):
        """One ActiveSync request for `user` straight to this poolsim; the Response carries
        X-Owner (owner at arrival) and X-Served-By."""
        from urllib.parse import quote
        return self.get(f"/Microsoft-Server-ActiveSync?Cmd={cmd}&User={quote(user, safe='')}"
                        f"&DeviceId=d1&DeviceType=test", timeout=timeout)

    def owner(self, user):
        """/poolsim/owner: {"user", "owner", "epoch"} read fresh from the database."""
        from urllib.parse import quote
        resp = self.get(f"/poolsim/owner?user={quote(user, safe='')}")
        if resp.status != 200:
            raise AssertionError(f"poolsim {self.id} /poolsim/owner: {resp.describe()}")
        return resp.json()

    def assign(self, user, server):
        """/poolsim/assign: an admin reassignment under the next epoch (server "" or None: free)."""
        from urllib.parse import quote
        resp = self.post(f"/poolsim/assign?user={quote(user, safe='')}&server={quote(server or '', safe='')}")
        if resp.status != 200:
            raise AssertionError(f"poolsim {self.id} /poolsim/assign: {resp.describe()}")
        return resp.json()

    def set_availability(self, value):
        resp = self.post(f"/poolsim/availability?value={int(value)}")
        if resp.status != 200:
            raise AssertionError(f"poolsim {self.id} /poolsim/availability: {resp.describe()}")
        return resp.json()


class Pool(list):
    """Poolsims pool1..n; a list that is also a context manager."""

    def stop(self):
        codes = [p.stop() for p in self]
        return codes

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def pool(n, args=(), ids=None, db=None, **kw):
    """Poolsims pool1..n (or ids), started; db= and the other Poolsim keywords apply to each, so
    with a db they all join the same pool."""
    sims = Pool()
    try:
        for i in range(n):
            sims.append(Poolsim(ids[i] if ids else f"pool{i + 1}", args=args, db=db, **kw).start())
    except BaseException:
        sims.stop()
        raise
    return sims


# ---------------------------------------------------------------------------------------------
# Pool databases: the ownership tables (conf/sql/schema-*.sql) that poolsims write and sprayer
# reads. SqlitePool and PostgresPool answer the same questions, so a suite can run on both.

def _sql_literal(text):
    return "'" + str(text).replace("'", "''") + "'"


class SqlitePool:
    """A scratch SQLite pool database with conf/sql/schema-sqlite.sql applied. .path is the
    file, .spec the poolsim --db argument. A context manager (removes the file on exit)."""

    SCHEMA = os.path.join(SOURCE_DIR, "conf", "sql", "schema-sqlite.sql")

    def __init__(self, path=None, journal_mode=None):
        self.path = path or scratch_path("pool") + ".db"
        with open(self.SCHEMA) as f:
            schema = f.read()
        with contextlib.closing(self._connect()) as c:
            if journal_mode:
                c.execute(f"PRAGMA journal_mode = {journal_mode}")
            c.executescript(schema)

    @property
    def spec(self):
        return "sqlite:" + self.path

    def _connect(self):
        # Autocommit; waits for the poolsims' write locks instead of failing at once.
        return sqlite3.connect(self.path, timeout=10.0, isolation_level=None)

    def rows(self, query, params=()):
        """All rows of `query` as tuples (NULL = None)."""
        with contextlib.closing(self._connect()) as c:
            return [tuple(r) for r in c.execute(query, params).fetchall()]

    def execute(self, script):
        with contextlib.closing(self._connect()) as c:
            c.executescript(script)

    # Questions a suite asks of either database.
    def owner(self, user):
        """(server_id or None, epoch) of `user`'s row, or None when there is no row."""
        rows = self.rows("SELECT server_id, epoch FROM user_owner WHERE user_key = ?", (user,))
        return (rows[0][0], int(rows[0][1])) if rows else None

    def owners(self):
        """{user_key: (server_id or None, epoch)}"""
        return {u: (s, int(e)) for u, s, e in self.rows("SELECT user_key, server_id, epoch FROM user_owner")}

    def epoch(self):
        return int(self.rows("SELECT epoch FROM pool_epoch WHERE id = 1")[0][0])

    def servers(self):
        """{server_id: {"address", "availability", "heartbeat_ms" (Unix ms), "age_ms"}}"""
        rows = self.rows("SELECT server_id, address, availability, "
                         "CAST((julianday(heartbeat_at) - 2440587.5) * 86400000.0 AS INTEGER), "
                         "CAST((julianday('now') - julianday(heartbeat_at)) * 86400000.0 AS INTEGER) "
                         "FROM pool_server")
        return {r[0]: {"address": r[1], "availability": int(r[2]), "heartbeat_ms": r[3], "age_ms": r[4]}
                for r in rows}

    def admin_assign(self, user, server):
        """A reassignment written by someone else than poolsim (an admin), by the epoch rule."""
        with contextlib.closing(self._connect()) as c:
            c.execute("BEGIN IMMEDIATE")
            epoch = c.execute("UPDATE pool_epoch SET epoch = epoch + 1 WHERE id = 1 RETURNING epoch").fetchone()[0]
            c.execute("INSERT INTO user_owner (user_key, server_id, epoch, changed_at) "
                      "VALUES (?, ?, ?, strftime('%Y-%m-%d %H:%M:%f', 'now')) ON CONFLICT (user_key) DO UPDATE "
                      "SET server_id = excluded.server_id, epoch = excluded.epoch, changed_at = excluded.changed_at",
                      (user, server, epoch))
            c.execute("COMMIT")
        return epoch

    def bulk_owners(self, owners):
        """Writes [(user, server)] in one transaction, epochs 1..n after the current one."""
        with contextlib.closing(self._connect()) as c:
            c.execute("BEGIN IMMEDIATE")
            base = c.execute("SELECT epoch FROM pool_epoch WHERE id = 1").fetchone()[0]
            c.execute("UPDATE pool_epoch SET epoch = ? WHERE id = 1", (base + len(owners),))
            c.executemany("INSERT INTO user_owner (user_key, server_id, epoch, changed_at) "
                          "VALUES (?, ?, ?, strftime('%Y-%m-%d %H:%M:%f', 'now')) ON CONFLICT (user_key) DO UPDATE "
                          "SET server_id = excluded.server_id, epoch = excluded.epoch, changed_at = excluded.changed_at",
                          [(u, sid, base + k + 1) for k, (u, sid) in enumerate(owners)])
            c.execute("COMMIT")
        return base + len(owners)

    def reset(self):
        self.execute("DELETE FROM user_owner; DELETE FROM pool_server; UPDATE pool_epoch SET epoch = 0 WHERE id = 1;")

    def cleanup(self):
        for suffix in ("", "-journal", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                os.unlink(self.path + suffix)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cleanup()


class PostgresPool(PostgresServer):
    """PostgresServer (tests/integration/pg_server.py) with the SqlitePool questions. Started
    as a context manager; the run's reaper stops it even when the watchdog fires."""

    NULL = "\\N"  # psql -A prints NULL and '' alike: the queries spell NULL out

    @property
    def spec(self):
        return "postgresql:" + self.conninfo

    def start(self):
        _reaper.add_cleanup(self.cleanup)
        return super().start()

    def cleanup(self):
        _reaper.remove_cleanup(self.cleanup)
        super().cleanup()

    def restart(self, timeout=30.0):
        """PostgresServer.restart, made to work after kill() where PID 1 does not reap: the killed
        postmaster stays a zombie, and pg_ctl and the new postmaster both take its postmaster.pid
        for a live server. A pid file naming a zombie (or nobody) is removed, and the start is
        retried while the old backends finish exiting."""
        deadline = time.monotonic() + timeout
        while True:
            self._drop_stale_pidfile()
            try:
                return super().restart()
            except subprocess.CalledProcessError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)

    def _drop_stale_pidfile(self):
        pidfile = os.path.join(self.datadir, "postmaster.pid")
        try:
            with open(pidfile) as f:
                pid = int(f.readline())
        except (OSError, ValueError):
            return
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
            alive = stat[stat.rindex(")") + 2] != "Z"
        except OSError:
            alive = False
        if not alive:
            with contextlib.suppress(OSError):
                os.unlink(pidfile)

    def rows(self, query):
        out = self.sql(query)
        return [tuple(None if v == self.NULL else v for v in line.split("|"))
                for line in out.splitlines() if line]

    def execute(self, script):
        self.sql(script)

    def owner(self, user):
        rows = self.rows(f"SELECT COALESCE(server_id, '{self.NULL}'), epoch FROM user_owner "
                         f"WHERE user_key = {_sql_literal(user)}")
        return (rows[0][0], int(rows[0][1])) if rows else None

    def owners(self):
        return {u: (s, int(e)) for u, s, e in
                self.rows(f"SELECT user_key, COALESCE(server_id, '{self.NULL}'), epoch FROM user_owner")}

    def epoch(self):
        return int(self.rows("SELECT epoch FROM pool_epoch WHERE id = 1")[0][0])

    def servers(self):
        rows = self.rows("SELECT server_id, address, availability, "
                         "(EXTRACT(EPOCH FROM heartbeat_at) * 1000)::bigint, "
                         "(EXTRACT(EPOCH FROM clock_timestamp() - heartbeat_at) * 1000)::bigint FROM pool_server")
        return {r[0]: {"address": r[1], "availability": int(r[2]), "heartbeat_ms": int(r[3]), "age_ms": int(r[4])}
                for r in rows}

    def admin_assign(self, user, server):
        value = "NULL" if server is None else _sql_literal(server)
        out = self.sql("BEGIN; "
                       "WITH e AS (UPDATE pool_epoch SET epoch = epoch + 1 WHERE id = 1 RETURNING epoch) "
                       "INSERT INTO user_owner (user_key, server_id, epoch, changed_at) "
                       f"SELECT {_sql_literal(user)}, {value}, epoch, now() FROM e "
                       "ON CONFLICT (user_key) DO UPDATE SET server_id = EXCLUDED.server_id, "
                       "epoch = EXCLUDED.epoch, changed_at = EXCLUDED.changed_at RETURNING epoch; COMMIT;")
        return int(out.split()[0])

    def bulk_owners(self, owners):
        """Writes [(user, server)] in one transaction, epochs 1..n after the current one."""
        values = ",".join(f"({_sql_literal(u)}, {_sql_literal(sid)}, {k + 1})" for k, (u, sid) in enumerate(owners))
        n = len(owners)
        # The UPDATE takes the row lock first; the INSERT, later in the same transaction,
        # sees the bumped epoch and numbers its rows below it.
        self.execute(f"BEGIN; UPDATE pool_epoch SET epoch = epoch + {n} WHERE id = 1; "
                     f"INSERT INTO user_owner (user_key, server_id, epoch, changed_at) "
                     f"SELECT u, s, (SELECT epoch FROM pool_epoch WHERE id = 1) - {n} + k, now() "
                     f"FROM (VALUES {values}) AS r (u, s, k) ON CONFLICT (user_key) DO UPDATE "
                     f"SET server_id = excluded.server_id, epoch = excluded.epoch, changed_at = excluded.changed_at; "
                     f"COMMIT;")
        return self.epoch()

    def reset(self):
        self.sql("TRUNCATE user_owner, pool_server; UPDATE pool_epoch SET epoch = 0 WHERE id = 1;")


# ---------------------------------------------------------------------------------------------
# sprayer.

def _yaml_scalar(value):
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_yaml(value, indent=0):
    """Minimal YAML for dicts, lists and scalars: block style, strings always double-quoted
    (so "no", "1.0" or "[::]:80" stay strings), numbers and booleans plain."""
    pad = "  " * indent
    out = []
    if isinstance(value, dict):
        if not value:
            return pad + "{}\n"
        for k, v in value.items():
            if isinstance(v, (dict, list)) and v:
                out.append(f"{pad}{k}:\n{to_yaml(v, indent + 1)}")
            else:
                out.append(f"{pad}{k}: {_inline(v)}\n")
    elif isinstance(value, list):
        if not value:
            return pad + "[]\n"
        for item in value:
            if isinstance(item, dict) and item:
                body = to_yaml(item, indent + 1)
                # "- " replaces the first line's indentation.
                out.append(f"{pad}- {body[len(pad) + 2:]}")
            elif isinstance(item, list) and item:
                out.append(f"{pad}-\n{to_yaml(item, indent + 1)}")
            else:
                out.append(f"{pad}- {_inline(item)}\n")
    else:
        out.append(pad + _yaml_scalar(value) + "\n")
    return "".join(out)


def _inline(v):
    if isinstance(v, dict):
        return "{}"
    if isinstance(v, list):
        return "[]"
    return _yaml_scalar(v)


def write_config(config, name="sprayer"):
    """Writes a dict (or raw YAML text) to a scratch .yaml file; returns its path."""
    path = scratch_path(name) + ".yaml"
    with open(path, "w") as f:
        f.write(config if isinstance(config, str) else to_yaml(config))
    return path


def sprayer_config(servers, workers=2, timeouts=None, limits=None, http=None, upstream=None,
                   log_level="info", port=None, admin_port=None, **extra):
    """The config dict for sprayer in front of `servers` (Poolsim objects or (id, address))."""
    entries = []
    for s in servers:
        sid, addr = (s.id, s.address) if isinstance(s, Poolsim) else s
        entries.append({"id": sid, "address": addr})
    config = {
        "workers": workers,
        "listeners": [{"name": "http", "address": f"127.0.0.1:{port or free_port()}"}],
        "servers": entries,
    }
    for key, value in (("timeouts", timeouts), ("limits", limits), ("http", http), ("upstream", upstream)):
        if value:
            config[key] = value
    # Each sprayer keeps its drain/maintenance states in a file of its own, never in the
    # machine's /var/lib/sprayer.
    config["admin"] = {"address": f"127.0.0.1:{admin_port or free_port()}",
                       "state_file": scratch_path("admin-state")}
    config["log"] = {"level": log_level}
    config.update(extra)
    return config


def _port_of(address):
    return int(address.rsplit(":", 1)[1])


class Sprayer:
    """One sprayer process running `config` (a dict in the sprayer YAML shape)."""

    def __init__(self, config, start_timeout=10.0, args=(), binary=None):
        self.config = config
        self.binary = binary or SPRAYER_BIN
        self.start_timeout = start_timeout
        self.args = list(args)
        self.proc = None
        self.config_path = write_config(config)
        self.stderr_path = scratch_path("sprayer.stderr")
        self.port = _port_of(config["listeners"][0]["address"])
        admin = config.get("admin") or {}
        self.admin_port = _port_of(admin["address"]) if admin.get("address") and admin.get("enabled", True) else None
        self.start_rss_kib = None

    def start(self):
        self._stderr = open(self.stderr_path, "wb")
        self.proc = _spawn([self.binary, "-c", self.config_path, *self.args], self._stderr, self._stderr)
        ports = [self.port] + ([self.admin_port] if self.admin_port else [])

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"sprayer exited with {self.proc.returncode} during start-up\n"
                                     f"{self.diagnostics()}")
            return all(port_accepts(p) for p in ports)

        try:
            wait_until(ready, self.start_timeout, interval=0.05,
                       what=f"sprayer to accept on ports {ports}")
        except WaitTimeout as e:
            self.kill()
            raise WaitTimeout(f"{e}\n{self.diagnostics()}") from None
        self.start_rss_kib = self.rss_kib()
        return self

    @property
    def pid(self):
        return self.proc.pid

    @property
    def returncode(self):
        return self.proc.poll()

    def stderr_text(self):
        return read_text(self.stderr_path)

    def diagnostics(self, tail=6000):
        with open(self.config_path) as f:
            config_text = f.read()
        err = self.stderr_text()
        return (f"--- sprayer config {self.config_path}:\n{config_text}"
                f"--- sprayer stderr (last {tail} chars):\n{err[-tail:]}\n---")

    def assert_alive(self):
        code = self.proc.poll()
        if code is not None:
            raise AssertionError(f"sprayer died (exit code {code})\n{self.diagnostics()}")

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS in /proc status")

    def cpu_seconds(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            stat = f.read()
        fields = stat[stat.rindex(")") + 2:].split()
        utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
        return (utime + stime) / os.sysconf("SC_CLK_TCK")

    def kill(self, sig=signal.SIGKILL):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, timeout=15.0):
        """SIGTERM; asserts exit code 0 within timeout (kills and raises otherwise)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
                raise AssertionError(f"sprayer did not exit within {timeout}s of SIGTERM\n"
                                     f"{self.diagnostics()}") from None
        with contextlib.suppress(Exception):
            self._stderr.close()
        if self.proc.returncode != 0:
            raise AssertionError(f"sprayer exited with {self.proc.returncode} after SIGTERM, "
                                 f"expected 0\n{self.diagnostics()}")

    def __enter__(self):
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is not None:
            sys.stderr.write(self.diagnostics() + "\n")
            self.kill()
            with contextlib.suppress(Exception):
                self.proc.wait(timeout=5)
            return
        self.stop()

    # Conveniences.
    def client(self, timeout=10.0):
        return HttpClient(self.port, timeout=timeout)

    def request(self, method, target, headers=(), body=None, timeout=10.0, **kw):
        return http_request(self.port, method, target, headers, body, timeout=timeout, **kw)


def check_config(config, timeout=10.0):
    """Runs `sprayer -t -c FILE` on a dict or raw YAML text; returns (CompletedProcess, path)."""
    path = write_config(config, "check")
    if not os.path.exists(SPRAYER_BIN):
        raise FileNotFoundError(f"binary not found: {SPRAYER_BIN} (set SPRAYER_BIN)")
    proc = subprocess.run([SPRAYER_BIN, "-t", "-c", path], capture_output=True, timeout=timeout)
    return proc, path


class RssSampler:
    """Samples a process's RSS on a thread while a transfer runs; .max_kib is the peak."""

    def __init__(self, sprayer, interval=0.02):
        self.sprayer = sprayer
        self.interval = interval
        self.max_kib = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                self.max_kib = max(self.max_kib, self.sprayer.rss_kib())
                self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(Exception):
            self.max_kib = max(self.max_kib, self.sprayer.rss_kib())


# ---------------------------------------------------------------------------------------------
# unittest glue.

def timeout(seconds):
    """Decorator: per-test watchdog limit (default TestCase.TIMEOUT)."""
    def wrap(fn):
        fn._harness_timeout = seconds
        return fn
    return wrap


class TestCase(unittest.TestCase):
    """unittest.TestCase with a watchdog: a test exceeding its limit dumps every thread's stack,
    kills all child processes and ends the run with exit code 1."""

    TIMEOUT = 60.0

    def setUp(self):
        super().setUp()
        method = getattr(self, self._testMethodName)
        limit = getattr(method, "_harness_timeout", self.TIMEOUT)
        self._watchdog = threading.Timer(limit, self._expired, args=(limit,))
        self._watchdog.daemon = True
        self._watchdog.start()

    def tearDown(self):
        self._watchdog.cancel()
        super().tearDown()

    def _expired(self, limit):
        sys.stderr.write(f"\nWATCHDOG: {self.id()} exceeded {limit}s; stacks:\n")
        faulthandler.dump_traceback(all_threads=True)
        sys.stderr.flush()
        _reaper.at_exit()
        os._exit(1)

    def assertStatus(self, resp, expected, context=""):
        allowed = expected if isinstance(expected, (tuple, list, set)) else (expected,)
        if resp.status not in allowed:
            self.fail(f"{context}: expected status {' or '.join(map(str, allowed))}, got {resp.status}\n"
                      f"    {resp.describe()}")


def main():
    """Entry point for `python3 test_x.py`: verbose output, non-zero exit on failure."""
    unittest.main(verbosity=2)
