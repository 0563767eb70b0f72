#!/usr/bin/env python3
"""Server-to-server hops: how many requests reach a server that is not the user's master
monitor, on a pool that makes its own decisions (three poolsims in Traveler mode: master
monitors assigned by availability index, a load model moving the indices, moves, takeovers).

Front-ends, in the same run, each before a fresh pool with empty tables:
  sprayer (SQLite source), sprayer (PostgreSQL source), HAProxy balance roundrobin (the
  network load balancer's minimum) and HAProxy balance url_param User + hash-type consistent.
Traffic: 10,000 users, each syncing once per cycle (client threads walk their users in a
fixed order, keep-alive), ActiveSync POST Sync. Phases, one after the other:
  first   every user's first request (the pool assigns; sprayer has nothing to read yet);
  steady  one more cycle: the share that costs a hop once the table has been read;
  fail    pool2 is killed (kill -9) and started again --down seconds later (empty: the load
          model makes it the most available, so the pool moves users back to it);
  move    pool1 is pinned at availability -100 (constrained): the pool moves its users away.
For fail and move: hops during the transition, and the time from the event until the hop rate
(per 1 s window) is back under 0.1 % for good.

usage: bench/hops.py [--users 10000] [--threads 8] [--cycle-s 0] [--down 3] [--out FILE]
Needs build/proxy/sprayer, build/tests/poolsim/poolsim, haproxy and PostgreSQL's server
binaries (scripts/install-deps.sh test bench). All traffic stays on 127.0.0.1.
"""
import argparse
import datetime
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SPRAYER = os.path.join(ROOT, "build", "proxy", "sprayer")
POOLSIM = os.path.join(ROOT, "build", "tests", "poolsim", "poolsim")
SERVERS = ("pool1", "pool2", "pool3")
WINDOW = 1.0      # seconds per hop-rate window
TARGET = 0.001    # 0.1 %

sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from pg_server import PostgresServer  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on {port}")


def get_json(port, target, method="GET"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, target)
        resp = conn.getresponse()
        return json.loads(resp.read())
    finally:
        conn.close()


class Pool:
    """Three Traveler-mode poolsims on one database."""

    def __init__(self, work, spec, args):
        self.work, self.spec, self.args = work, spec, args
        self.procs, self.ports = {}, {}

    def start(self, sid):
        port = self.ports.get(sid) or free_port()
        self.ports[sid] = port
        argv = [POOLSIM, "--id", sid, "--listen", f"127.0.0.1:{port}", "--db", self.spec, "--traveler",
                "--seed", str(SERVERS.index(sid) + 1), *self.args]
        self.procs[sid] = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                           stderr=open(os.path.join(self.work, f"{sid}.stderr"), "ab"))
        wait_port(port)

    def stats(self):
        out = {}
        for sid, port in self.ports.items():
            if self.procs[sid].poll() is None:
                out[sid] = get_json(port, "/poolsim/stats")["traveler"]
        return out

    def stop_all(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def sprayer_front(work, pool, port, ownership):
    servers = "".join(f"  - id: {sid}\n    address: 127.0.0.1:{p}\n" for sid, p in sorted(pool.ports.items()))
    path = os.path.join(work, "sprayer.yaml")
    with open(path, "w") as f:
        f.write(f"""workers: 1
listeners:
  - name: http
    address: 127.0.0.1:{port}
servers:
{servers}ownership:
{ownership}timeouts:
  upstream_connect: 300ms
health:
  interval: 1s
  timeout: 800ms
  rise: 2
  fall: 2
  passive_failures: 3
admin:
  address: 127.0.0.1:{free_port()}
log:
  level: warn
""")
    return [SPRAYER, "-c", path]


def haproxy_front(work, pool, port, balance):
    servers = "".join(f"    server {sid} 127.0.0.1:{p} check\n" for sid, p in sorted(pool.ports.items()))
    path = os.path.join(work, "haproxy.cfg")
    with open(path, "w") as f:
        f.write(f"""global
    nbthread 1
    maxconn 9000
defaults
    mode http
    timeout connect 300ms
    timeout client 60s
    timeout server 60s
    option redispatch
    retries 3
    retry-on conn-failure empty-response response-timeout
    http-reuse safe
frontend fe
    bind 127.0.0.1:{port}
    default_backend pool
backend pool
{balance}
    option httpchk GET /traveler?action=getStatus
    http-check expect string Traveler\\ server\\ is\\ available.
    default-server inter 1s fall 2 rise 2
{servers}""")
    return ["haproxy", "-f", path, "-db"]


class Load:
    """Client threads; each walks its share of the users in order, one request per user per
    cycle, on a keep-alive connection. Records (end time, hop, status, user)."""

    def __init__(self, port, users, threads, cycle_s):
        self.port, self.users, self.threads, self.cycle_s = port, users, threads, cycle_s
        self.records = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.cycles = [0] * threads

    def worker(self, k):
        mine = list(range(k, self.users, self.threads))
        conn = None
        while not self.stop.is_set():
            started = time.monotonic()
            for i in mine:
                if self.stop.is_set():
                    break
                status, hop = -1, None
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                    conn.request("POST", f"/Microsoft-Server-ActiveSync?Cmd=Sync&User=u{i:05d}&DeviceId=d{i}"
                                         f"&DeviceType=iPhone", body=b"sync", headers={"Host": "mail.example.com"})
                    resp = conn.getresponse()
                    resp.read()
                    status, hop = resp.status, resp.getheader("X-Hop")
                    if resp.getheader("Connection", "").lower() == "close":
                        conn.close()
                        conn = None
                except Exception:
                    if conn is not None:
                        conn.close()
                    conn = None
                with self.lock:
                    self.records.append((time.monotonic(), hop == "1", status, i))
            self.cycles[k] += 1
            rest = self.cycle_s - (time.monotonic() - started)
            if rest > 0:
                self.stop.wait(rest)
        if conn is not None:
            conn.close()

    def start(self):
        self.ts = [threading.Thread(target=self.worker, args=(k,), daemon=True) for k in range(self.threads)]
        for t in self.ts:
            t.start()

    def wait_cycles(self, n, timeout=300):
        deadline = time.monotonic() + timeout
        while min(self.cycles) < n and time.monotonic() < deadline:
            time.sleep(0.05)

    def end(self):
        self.stop.set()
        for t in self.ts:
            t.join(30)


def share(records, t0, t1):
    rs = [r for r in records if t0 <= r[0] < t1]
    hops = sum(1 for r in rs if r[1])
    failed = sum(1 for r in rs if r[2] != 200)
    return len(rs), hops, failed


def settle_time(records, t0, t1):
    """Seconds from t0 to the end of the last window (of WINDOW s) whose hop rate is at or above
    TARGET; 0 when none is; None when the last window is still above (not settled in the phase)."""
    last_bad = None
    n_windows = int((t1 - t0) // WINDOW)
    for w in range(n_windows):
        n, hops, _ = share(records, t0 + w * WINDOW, t0 + (w + 1) * WINDOW)
        if n and hops / n >= TARGET:
            last_bad = w
    if last_bad is None:
        return 0.0
    if last_bad == n_windows - 1:
        return None
    return (last_bad + 1) * WINDOW


def run_front(name, front, source, work, args):
    """One front-end before a fresh pool; returns the phase numbers."""
    pool_args = ["--capacity", str(args.capacity), "--jitter", "3", "--move-threshold", "50",
                 "--heartbeat", "500ms", "--refresh", "200ms", "--stale-after", "2s"]
    pool = Pool(work, source["spec"], pool_args)
    for sid in SERVERS:
        pool.start(sid)
    port = free_port()
    argv = front(work, pool, port)
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, f"{name}.stderr"), "ab"))
    out = {"front": name}
    try:
        wait_port(port)
        time.sleep(2.5)  # first health checks pass everywhere
        load = Load(port, args.users, args.threads, args.cycle_s)
        t_first = time.monotonic()
        load.start()
        load.wait_cycles(1)
        t_steady = time.monotonic()
        load.wait_cycles(3)  # cycle 2 may overlap the last first requests: measure cycle 3
        t_fail = time.monotonic()
        before_kill = pool.stats()["pool2"]  # its counters restart with it
        pool.procs["pool2"].kill()
        pool.procs["pool2"].wait()
        time.sleep(args.down)
        t_back = time.monotonic()
        pool.start("pool2")
        load.wait_cycles(min(load.cycles) + 2)
        t_move = time.monotonic()
        get_json(pool.ports["pool1"], "/poolsim/availability?value=-100", "POST")
        load.wait_cycles(min(load.cycles) + 2)
        t_end = time.monotonic()
        load.end()
        stats = pool.stats()
        recs = load.records
        cycle_len = (t_fail - t_steady) / 2
        for phase, a, b in (("first", t_first, t_steady), ("steady", t_steady + cycle_len, t_fail),
                            ("fail", t_fail, t_move), ("move", t_move, t_end)):
            n, hops, failed = share(recs, a, b)
            out[phase] = {"requests": n, "hops": hops, "failed": failed, "seconds": b - a}
        for phase, a, b in (("fail", t_fail, t_move), ("move", t_move, t_end)):
            hopped = {r[3] for r in recs if a <= r[0] < b and r[1]}
            out[phase]["users_hopped"] = len(hopped)
        out["fail"]["settled_s"] = settle_time(recs, t_fail, t_move)
        out["fail"]["settled_after_return_s"] = settle_time(recs, t_back, t_move)
        out["move"]["settled_s"] = settle_time(recs, t_move, t_end)
        out["pool"] = {k: sum(s[k] for s in stats.values()) + before_kill[k]
                       for k in ("hops", "moved", "taken_over", "assigned")}
        out["rps"] = len(recs) / (t_end - t_first)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        pool.stop_all()
    return out


def fresh_sqlite(work):
    path = os.path.join(work, "pool.db")
    for suffix in ("", "-journal", "-wal"):
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)
    with open(os.path.join(ROOT, "conf", "sql", "schema-sqlite.sql")) as f, sqlite3.connect(path) as c:
        c.executescript(f.read())
    return path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--cycle-s", type=float, default=0.0, help="minimum seconds per sync cycle (0: as fast as possible)")
    ap.add_argument("--down", type=float, default=3.0, help="seconds pool2 stays down")
    ap.add_argument("--capacity", type=int, default=5000, help="poolsim load model: users at index 0")
    ap.add_argument("--fronts", default="sprayer-sqlite,sprayer-postgresql,haproxy-roundrobin,haproxy-url_param")
    ap.add_argument("--out")
    args = ap.parse_args()
    results = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sprayer-hops-") as work:
        pg = None
        try:
            for name in args.fronts.split(","):
                if name == "sprayer-postgresql":
                    if pg is None:
                        pg = PostgresServer().start()
                    pg.sql("TRUNCATE user_owner, pool_server; UPDATE pool_epoch SET epoch = 0 WHERE id = 1; "
                           "DROP TABLE IF EXISTS poolsim_user_connect;")
                    source = {"spec": "postgresql:" + pg.conninfo}
                    own = f"  source: postgresql\n  postgresql: \"{pg.conninfo}\"\n"
                    front = lambda w, p, port, own=own: sprayer_front(w, p, port, own)  # noqa: E731
                else:
                    path = fresh_sqlite(work)
                    source = {"spec": "sqlite:" + path}
                    if name == "sprayer-sqlite":
                        own = f"  source: sqlite\n  sqlite_path: {path}\n  poll_interval: 50ms\n"
                        front = lambda w, p, port, own=own: sprayer_front(w, p, port, own)  # noqa: E731
                    elif name == "haproxy-roundrobin":
                        front = lambda w, p, port: haproxy_front(w, p, port, "    balance roundrobin")  # noqa: E731
                    elif name == "haproxy-url_param":
                        front = lambda w, p, port: haproxy_front(  # noqa: E731
                            w, p, port, "    balance url_param User\n    hash-type consistent")
                    else:
                        raise SystemExit(f"unknown front {name}")
                r = run_front(name, front, source, work, args)
                print(json.dumps(r), file=sys.stderr)
                results.append(r)
        finally:
            if pg is not None:
                pg.cleanup()
    total = time.monotonic() - started

    def pct(d):
        return f"{100.0 * d['hops'] / d['requests']:.3f} % ({d['hops']} of {d['requests']})" if d["requests"] else "-"

    def secs(v):
        return "not within the phase" if v is None else f"{v:.0f} s"

    haproxy = subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout.splitlines()[0]
    lines = [f"# Server-to-server hops: sprayer vs round robin vs HAProxy url_param ({datetime.date.today()})", "",
             f"Machine: {platform.node()}, {os.cpu_count()} CPUs, {platform.platform()}; {haproxy}.", "",
             f"Command: `bench/hops.py --users {args.users} --threads {args.threads} --down {args.down:g} "
             f"--capacity {args.capacity}` ({total:.0f} s in all). Three poolsims in Traveler mode "
             f"(`--traveler --capacity {args.capacity} --jitter 3 --move-threshold 50`, heartbeat 500 ms, refresh "
             f"200 ms, stale after 2 s), fresh tables per front-end, {args.users} users each syncing once per "
             f"cycle over {args.threads} keep-alive clients. A hop = the response said `X-Hop: 1` (the request "
             f"reached a server other than the user's master monitor).", "",
             "| front-end | first requests | steady (one cycle, table read) | cycle | fail: hops | users hopped | "
             "fail: failed | fail: < 0.1 % after kill / after return | move: hops | users hopped | "
             "move: < 0.1 % after | req/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        f, m = r["fail"], r["move"]
        lines.append(f"| {r['front']} | {pct(r['first'])} | {pct(r['steady'])} | {r['steady']['seconds']:.1f} s | "
                     f"{pct(f)} | {f['users_hopped']} | {f['failed']} | "
                     f"{secs(f['settled_s'])} / {secs(f['settled_after_return_s'])} | {pct(m)} | {m['users_hopped']} | "
                     f"{secs(m['settled_s'])} | {r['rps']:.0f} |")
    lines += ["", "Pool counters (sum over the three poolsims): " + "; ".join(
        f"{r['front']}: hops {r['pool']['hops']}, assigned {r['pool']['assigned']}, moved {r['pool']['moved']}, "
        f"taken over {r['pool']['taken_over']}" for r in results) + "."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
