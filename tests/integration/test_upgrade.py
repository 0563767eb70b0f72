#!/usr/bin/env python3
"""Binary upgrade (SIGUSR2) under load: three poolsims behind sprayer, users owned by the
SQLite pool table, parked Pings and a steady stream of requests, each on a new connection.

- upgrade to the same binary, then to a replaced binary with a changed config: no connection
  refused, no request failed, every parked Ping answered on its connection by the old process
  (the socket's owner read from /proc before the switch), new connections served by the new
  process (on the same kernel sockets), every user on its owner, the old process gone once its
  last Ping ended; the new process tells the systemd stand-in MAINPID= and READY=1, and no one
  says STOPPING=1;
- a second SIGUSR2 while one is in progress is refused;
- an upgrade to a config that does not load, or to a binary that does not start, changes
  nothing: the old process serves on, and the log says why.
"""
import contextlib
import ctypes
import errno
import json
import os
import random
import re
import resource
import selectors
import shutil
import signal
import socket
import struct
import sys
import threading
import time

import harness
from harness import SqlitePool, Sprayer, TestCase, wait_until

USERS = 500
SERVERS = ("pool1", "pool2", "pool3")
PING_HOLD_S = 12
LOAD_THREADS = 4
_PR_SET_CHILD_SUBREAPER = 36


def user_name(i):
    return f"user{i:04d}"


def table_owner(i):
    return SERVERS[(i * 7 + i // 3) % 3]


def ping_count():
    """2,000, or what the descriptor limit leaves room for (each Ping: one socket here)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return max(100, min(2000, (soft - 500) // 2))


def parse_head(data):
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, rest


def socket_pids(listen_port, client_ports, pids):
    """{client port: pid of the process holding the server side of that connection}."""
    inodes = {}
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], int(fields[9])
            if state == "01" and int(local.split(":")[1], 16) == listen_port:
                port = int(remote.split(":")[1], 16)
                if port in client_ports:
                    inodes[inode] = port
    out = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        port = inodes.get(int(target[8:-1]))
                        if port is not None:
                            out[port] = pid
    return out


def listening_inodes(listen_port):
    """The inodes of the sockets listening on the port: kernel objects, whoever holds them."""
    with open("/proc/net/tcp") as f:
        next(f)
        return {int(fields[9]) for fields in map(str.split, f)
                if fields[3] == "0A" and int(fields[1].split(":")[1], 16) == listen_port}


def listening_pids(listen_port, pids):
    """The pids among `pids` that hold a listening socket on the port."""
    inodes = listening_inodes(listen_port)
    out = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:[") and int(target[8:-1]) in inodes:
                        out.add(pid)
    return out


class Supervisor:
    """A systemd stand-in: the NOTIFY_SOCKET, with each message's sender pid (SO_PASSCRED), as
    systemd reads them to decide which pid is the service's main process."""

    def __init__(self):
        self.path = harness.scratch_path("notify") + ".sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        self.messages = []  # (sender pid, {field: value})

    def drain(self):
        while True:
            try:
                data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except BlockingIOError:
                return self.messages
            pid = 0
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("iII", payload[:12])[0]
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((pid, fields))


class Load:
    """Requests over many users, each on a new connection, until stopped. Every outcome kept:
    (start time, user index, status or error, X-Served-By, Via)."""

    def __init__(self, port):
        self.port = port
        self.results = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(k,), daemon=True) for k in range(LOAD_THREADS)]

    def _one(self, i):
        start = time.monotonic()
        request = (f"GET /Microsoft-Server-ActiveSync?Cmd=Sync&User={user_name(i)}&DeviceId=d{i}&DeviceType=iPhone "
                   f"HTTP/1.1\r\nHost: sprayer.test\r\nConnection: close\r\n\r\n").encode()
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        except OSError as e:
            return (start, i, "refused" if e.errno == errno.ECONNREFUSED else f"connect: {e}", None, None)
        try:
            s.sendall(request)
            data = b""
            while True:
                piece = s.recv(65536)
                if not piece:
                    break
                data += piece
            if b"\r\n\r\n" not in data:
                return (start, i, f"no response ({len(data)} bytes)", None, None)
            status, headers, _ = parse_head(data)
            return (start, i, status, headers.get("x-served-by"), headers.get("via"))
        except OSError as e:
            return (start, i, f"error: {e}", None, None)
        finally:
            s.close()

    def _run(self, k):
        rng = random.Random(k)
        while not self.stopping.is_set():
            outcome = self._one(rng.randrange(USERS))
            with self.lock:
                self.results.append(outcome)
            time.sleep(0.01)

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=20)
        return list(self.results)

    def count(self):
        with self.lock:
            return len(self.results)


class Pings:
    """`n` parked ActiveSync Pings, each on its own connection, read by one selector thread."""

    def __init__(self, port, n, hold_s):
        self.port = port
        self.sockets = {}   # client port -> (socket, user index)
        self.answers = {}   # client port -> (time, status or error, X-Served-By, Via)
        self.buffers = {}
        self.lock = threading.Lock()
        for k in range(n):
            i = k % USERS
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall((f"GET /Microsoft-Server-ActiveSync?Cmd=Ping&User={user_name(i)}&DeviceId=p{k}"
                       f"&DeviceType=iPhone&hold={hold_s}s HTTP/1.1\r\nHost: sprayer.test\r\n\r\n").encode())
            s.setblocking(False)
            port_here = s.getsockname()[1]
            self.sockets[port_here] = (s, i)
            self.buffers[port_here] = b""
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _complete(self, data):
        if b"\r\n\r\n" not in data:
            return None
        status, headers, rest = parse_head(data)
        if len(rest) < int(headers.get("content-length", "0")):
            return None
        return status, headers

    def _run(self):
        sel = selectors.DefaultSelector()
        for port, (s, _) in self.sockets.items():
            sel.register(s, selectors.EVENT_READ, port)
        open_count = len(self.sockets)
        deadline = time.monotonic() + PING_HOLD_S * 4 + 60
        while open_count and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.5):
                port = key.data
                s = self.sockets[port][0]
                try:
                    piece = s.recv(65536)
                except BlockingIOError:
                    continue
                except OSError as e:
                    piece, error = b"", f"error: {e}"
                else:
                    error = f"closed after {len(self.buffers[port]) + len(piece)} bytes"
                self.buffers[port] += piece
                done = self._complete(self.buffers[port])
                if done or not piece:
                    status, headers = done if done else (error, {})
                    with self.lock:
                        self.answers[port] = (time.monotonic(), status, headers.get("x-served-by"), headers.get("via"))
                    sel.unregister(s)
                    s.close()
                    open_count -= 1
        sel.close()

    def answered(self):
        with self.lock:
            return len(self.answers)

    def close(self):
        for s, _ in self.sockets.values():
            with contextlib.suppress(OSError):
                s.close()


def process_gone(pid):
    """True once `pid` exited (reaped here, since this process is the subreaper, or a zombie)."""
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


class UpgradeTest(TestCase):
    TIMEOUT = 120

    @classmethod
    def setUpClass(cls):
        # Orphaned sprayers (the new process once the old one exits) become our children, so
        # they can be waited for and none outlives the run.
        ctypes.CDLL(None).prctl(_PR_SET_CHILD_SUBREAPER, 1)
        cls.pings_wanted = ping_count()
        cls.db = SqlitePool()
        cls.db.bulk_owners([(user_name(i), table_owner(i)) for i in range(USERS)])
        cls.pool = harness.pool(3, db=cls.db.spec, claim=False)
        bin_dir = harness.scratch_path("bin") + ".d"
        os.makedirs(bin_dir)
        cls.binary = os.path.join(bin_dir, "sprayer")
        shutil.copy2(harness.SPRAYER_BIN, cls.binary)
        ownership = {"source": "sqlite", "sqlite_path": cls.db.path, "poll_interval": "100ms",
                     "cache_file": harness.scratch_path("ownership") + ".cache"}
        cls.config = harness.sprayer_config(cls.pool, workers=2, ownership=ownership, http={"via": "sprayer-a"},
                                            timeouts={"drain": "2s", "upgrade": f"{PING_HOLD_S * 3}s"})
        cls.supervisor = Supervisor()
        os.environ["NOTIFY_SOCKET"] = cls.supervisor.path
        try:
            cls.sprayer = Sprayer(cls.config, binary=cls.binary).start()
        finally:
            del os.environ["NOTIFY_SOCKET"]
        cls.pid = cls.sprayer.pid
        cls.pids = {cls.pid}
        harness._reaper.add_cleanup(cls.kill_all)
        wait_until(lambda: cls.ownership()["users"] == USERS, 15, interval=0.05, what="the ownership snapshot")

    @classmethod
    def kill_all(cls):
        for pid in cls.pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    @classmethod
    def tearDownClass(cls):
        with contextlib.suppress(Exception):
            os.kill(cls.pid, signal.SIGTERM)
            wait_until(lambda: process_gone(cls.pid), 15, interval=0.05, what="the last sprayer to stop")
        cls.kill_all()
        cls.pool.stop()
        cls.db.cleanup()
        cls.supervisor.sock.close()

    @classmethod
    def ownership(cls):
        resp = harness.http_request(cls.sprayer.admin_port, "GET", "/api/v1/ownership", timeout=5)
        return json.loads(resp.body)

    def rewrite_config(self, config):
        with open(self.sprayer.config_path, "w") as f:
            f.write(harness.to_yaml(config))

    def log(self):
        return self.sprayer.stderr_text()

    def wait_log(self, pattern, after, timeout, what):
        found = []

        def seen():
            m = re.compile(pattern).search(self.log(), after)
            if m:
                found.append(m)
            return bool(m)

        wait_until(seen, timeout, interval=0.02, what=f"{what}\n{self.log()[after:][-3000:]}")
        return found[0]

    def holds_started(self):
        return sum(p.stats()["holds_started"] for p in self.pool)

    def upgrade_under_load(self, new_via):
        old = self.pid
        port = self.sprayer.port
        mark = len(self.log())
        notified = len(self.supervisor.drain())
        holds_before = self.holds_started()
        sockets_before = listening_inodes(port)
        load = Load(port).start()
        pings = Pings(port, self.pings_wanted, PING_HOLD_S)
        try:
            wait_until(lambda: self.holds_started() - holds_before >= self.pings_wanted, 30, interval=0.05,
                       what=f"{self.pings_wanted} Pings parked at the poolsims")
            parked_at = time.monotonic()
            owners = socket_pids(port, set(pings.sockets), {old})
            self.assertEqual(len(owners), len(pings.sockets), "every parked Ping's connection is held by the old process")
            wait_until(lambda: load.count() > 50, 10, what="the load to run")

            os.kill(old, signal.SIGUSR2)
            started = self.wait_log(r"SIGUSR2: binary upgrade: started \S+ as pid (\d+)", mark, 10, "the new process")
            new = int(started.group(1))
            self.pids.add(new)
            # A second signal while the first is in progress starts nothing.
            os.kill(old, signal.SIGUSR2)
            self.wait_log(r"SIGUSR2: no binary upgrade", started.end(), 10, "the second SIGUSR2 to be refused")
            ready = self.wait_log(rf"binary upgrade: pid {new} is ready", mark, 30, "the new process to be ready")
            switched_at = time.monotonic()
            self.assertEqual(len(re.findall(r"SIGUSR2: binary upgrade: started", self.log()[mark:])), 1,
                             "one new process per upgrade")
            self.assertLess(switched_at - parked_at, PING_HOLD_S - 3, "the switch happened while the Pings were parked")

            # New connections: the new process, and only it, listens and serves.
            wait_until(lambda: listening_pids(port, {old, new}) == {new}, 5, interval=0.02,
                       what="only the new process to listen")
            # The very same kernel sockets (one per worker), not new ones beside them: closing
            # the old process's descriptors reset nothing queued on them.
            self.assertEqual(listening_inodes(port), sockets_before, "the new process listens on the old sockets")
            probes = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(20)]
            try:
                ports = {s.getsockname()[1] for s in probes}
                wait_until(lambda: len(socket_pids(port, ports, {new})) == len(ports), 5, interval=0.02,
                           what="the new process to accept the probe connections")
                self.assertEqual(socket_pids(port, ports, {old}), {}, "the old process accepted after the switch")
            finally:
                for s in probes:
                    s.close()

            # The Pings end on their own, answered by the old process; then it goes.
            wait_until(lambda: pings.answered() == len(pings.sockets), PING_HOLD_S * 2 + 10, interval=0.05,
                       what="every parked Ping to be answered")
            last_answer = max(t for t, *_ in pings.answers.values())
            wait_until(lambda: process_gone(old), 10, interval=0.02, what=f"the old process {old} to exit")
            gone_at = time.monotonic()
        finally:
            results = load.stop()
            pings.close()
        # The cases after this one talk to the process that serves now, whatever fails below.
        type(self).pid = new
        old_via, type(self).via = self.via, new_via

        bad_pings = [(p, a) for p, a in pings.answers.items()
                     if a[1] != 200 or a[2] != table_owner(pings.sockets[p][1]) or a[3] != old_via]
        self.assertEqual(bad_pings[:5], [], f"{len(bad_pings)} Pings not answered 200 by the old process on "
                                            f"their owner (port, (time, status, served by, via))")
        refused = [r for r in results if r[2] == "refused"]
        failed = [r for r in results if r[2] != 200]
        misrouted = [r for r in results if r[2] == 200 and r[3] != table_owner(r[1])]
        late_old = [r for r in results if r[0] > switched_at + 1.0 and r[4] != new_via]
        after = [r for r in results if r[0] > switched_at + 1.0]
        print(f"\n[upgrade {old} -> {new}] {len(pings.sockets)} parked Pings answered by the old process; "
              f"{len(results)} requests ({len(after)} after the switch), {len(refused)} refused, {len(failed)} failed, "
              f"{len(misrouted)} misrouted; old process gone {gone_at - last_answer:.2f} s after its last Ping",
              file=sys.stderr)
        self.assertEqual(refused, [], "refused connections")
        self.assertEqual(failed[:5], [], f"{len(failed)} failed requests")
        self.assertEqual(misrouted[:5], [], f"{len(misrouted)} requests missed their owner")
        self.assertGreater(len(after), 20, "load ran after the switch")
        self.assertEqual(late_old[:5], [], "requests after the switch served by the old process")
        self.assertLess(gone_at - last_answer, 5.0, "the old process exits once its last Ping ended")
        self.assertIn("sprayer stopped: every connection finished", self.log()[ready.end():])
        # systemd follows the new process; nobody said STOPPING=1.
        said = self.supervisor.drain()[notified:]
        self.assertIn((new, str(new)), [(pid, m.get("MAINPID")) for pid, m in said], f"MAINPID= from {new}: {said}")
        self.assertIn((new, "1"), [(pid, m.get("READY")) for pid, m in said], f"READY=1 from {new}: {said}")
        self.assertEqual([m for _, m in said if "STOPPING" in m], [], "a STOPPING=1 would make systemd stop the service")
        self.assertEqual(self.ownership()["users"], USERS, "the new process serves the admin API and the snapshot")

    via = "1.1 sprayer-a"

    @harness.timeout(100)
    def test_a_upgrade_to_the_same_binary(self):
        self.upgrade_under_load("1.1 sprayer-a")

    @harness.timeout(100)
    def test_b_upgrade_to_a_new_binary_and_config(self):
        # A package upgrade replaces the file by rename; the running process keeps the old one.
        fresh = self.binary + ".new"
        shutil.copy2(harness.SPRAYER_BIN, fresh)
        os.replace(fresh, self.binary)
        config = dict(self.config, http={"via": "sprayer-b"})
        self.rewrite_config(config)
        self.upgrade_under_load("1.1 sprayer-b")

    @harness.timeout(60)
    def test_c_config_that_fails_changes_nothing(self):
        mark = len(self.log())
        config = dict(self.config, http={"via": "sprayer-b"}, timeouts={"upgrade": "0s"})
        self.rewrite_config(config)
        try:
            os.kill(self.pid, signal.SIGUSR2)
            failed = self.wait_log(r"binary upgrade: new process pid (\d+) exited with status 1 before it was ready.*"
                                   r"keeps serving", mark, 15, "the failed upgrade to be reported")
            self.pids.add(int(failed.group(1)))
            self.assertRegex(self.log()[mark:], re.escape(self.sprayer.config_path) + r":\d+:\d+: timeouts\.upgrade",
                             "the new process says why, file:line")
            self.assertFalse(process_gone(self.pid), "the old process still runs")
            self.assertEqual(listening_pids(self.sprayer.port, {self.pid}), {self.pid}, "and still listens")
            resp = harness.http_request(self.sprayer.port, "GET",
                                        f"/Microsoft-Server-ActiveSync?Cmd=Sync&User={user_name(7)}&DeviceId=d7"
                                        f"&DeviceType=iPhone")
            self.assertStatus(resp, 200, "served after the failed upgrade")
            self.assertEqual((resp.header("X-Served-By"), resp.header("Via")), (table_owner(7), self.via))
        finally:
            self.rewrite_config(dict(self.config, http={"via": "sprayer-b"}))

    @harness.timeout(60)
    def test_d_binary_that_does_not_start_changes_nothing(self):
        mark = len(self.log())
        saved = self.binary + ".saved"
        os.replace(self.binary, saved)
        try:
            with open(self.binary, "w") as f:
                f.write("#!/bin/sh\necho 'broken build' >&2\nexit 3\n")
            os.chmod(self.binary, 0o755)
            os.kill(self.pid, signal.SIGUSR2)
            failed = self.wait_log(r"binary upgrade: new process pid (\d+) exited with status 3 before it was ready",
                                   mark, 15, "the failed start to be reported")
            self.pids.add(int(failed.group(1)))
            self.assertIn("broken build", self.log()[mark:])
            self.assertEqual(listening_pids(self.sprayer.port, {self.pid}), {self.pid}, "the old process still listens")
            resp = harness.http_request(self.sprayer.port, "GET",
                                        f"/Microsoft-Server-ActiveSync?Cmd=Sync&User={user_name(8)}&DeviceId=d8"
                                        f"&DeviceType=iPhone")
            self.assertStatus(resp, 200, "served after the failed start")
        finally:
            os.replace(saved, self.binary)


if __name__ == "__main__":
    harness.main()
