#!/usr/bin/env python3
"""sprayer side by side with HAProxy 2.6 and nginx 1.22 on the same machine, in the same run.

Every proxy runs one worker (one thread), pinned to CPU 0; wrk, the load clients and the three
poolsim servers run on the other CPUs. Each scenario runs every proxy in turn, the order
alternating between repetitions (A/B, B/A), and reports medians with min-max plus the ratio
sprayer/peer computed per repetition. CPU per request is the proxy's utime+stime from
/proc/PID/stat divided by the requests it served.

Peers:
  haproxy-hash  balance url_param User + hash-type consistent (no table: a hash of the user)
  haproxy-map   use-server from a map file written from the ownership table (the nearest
                thing HAProxy has to sprayer's table)
  nginx         hash $arg_User consistent
sprayer routes from the same ownership table (SQLite), 10,000 users spread over the servers.

usage: bench/run.py [--seconds 10] [--reps 3] [--scenarios 1,2,3,4,5,6,7,8] [--out FILE]
Run by bench/run.sh, which installs and builds what is needed.
"""
import argparse
import asyncio
import datetime
import os
import platform
import re
import resource
import socket
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BUILD = os.environ.get("BUILD_DIR", os.path.join(ROOT, "build"))
SPRAYER = os.environ.get("SPRAYER_BIN", os.path.join(BUILD, "proxy", "sprayer"))
POOLSIM = os.path.join(BUILD, "tests", "poolsim", "poolsim")
LUA = os.path.join(ROOT, "bench", "lua")
USERS = 10000
NCPU = os.cpu_count() or 1
CPU_PROXY = "0"
CPU_OTHERS = (f"1-{NCPU - 1}" if NCPU > 2 else "1") if NCPU > 1 else "0"
TICK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def cpu_times(pid):
    """(utime, stime) in seconds: /proc/PID/stat fields 14 and 15, all threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICK, int(fields[12]) / TICK


def cpu_seconds(pid):
    return sum(cpu_times(pid))


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def med(values):
    return statistics.median(values) if values else float("nan")


def fmt(values, digits=2):
    if not values:
        return "–"
    return f"{med(values):.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def version(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        text = (out.stdout + out.stderr).strip().splitlines()
        return text[0] if text else "?"
    except OSError:
        return "not installed"


# ---- the pool --------------------------------------------------------------------------

class Pool:
    """Three poolsims and the ownership table (SQLite) they and the proxies share."""

    def __init__(self, work):
        self.work = work
        self.procs = {}
        self.ports = {}
        self.ids = ["pool1", "pool2", "pool3"]
        self.db = os.path.join(work, "pool.db")
        self.owner = {}

    def start(self):
        for sid in self.ids:
            port = free_port()
            logf = open(os.path.join(self.work, f"{sid}.log"), "w")
            self.procs[sid] = subprocess.Popen(
                ["taskset", "-c", CPU_OTHERS, POOLSIM, "--id", sid, "--listen", f"127.0.0.1:{port}",
                 "--ping-hold", "1h"], stdout=logf, stderr=subprocess.STDOUT)
            self.ports[sid] = port
        for port in self.ports.values():
            wait_port(port)
        self.write_table()

    def write_table(self):
        with open(os.path.join(ROOT, "conf", "sql", "schema-sqlite.sql")) as f:
            schema = f.read()
        con = sqlite3.connect(self.db)
        con.executescript(schema)
        now = datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M:%S")
        for sid in self.ids:
            con.execute("INSERT OR REPLACE INTO pool_server VALUES (?, ?, ?, 0)",
                        (sid, f"127.0.0.1:{self.ports[sid]}", now))
        rows = []
        for u in range(USERS):
            sid = self.ids[(u * 7) % 3]
            self.owner[f"user{u:05d}"] = sid
            rows.append((f"user{u:05d}", sid, 1, now))
        con.executemany("INSERT OR REPLACE INTO user_owner VALUES (?, ?, ?, ?)", rows)
        con.execute("UPDATE pool_epoch SET epoch = 1")
        con.commit()
        con.close()

    def change_owner(self, user, sid):
        con = sqlite3.connect(self.db)
        now = datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M:%S")
        con.execute("UPDATE pool_epoch SET epoch = epoch + 1")
        con.execute("UPDATE user_owner SET server_id = ?, epoch = (SELECT epoch FROM pool_epoch), changed_at = ? "
                    "WHERE user_key = ?", (sid, now, user))
        con.commit()
        con.close()
        self.owner[user] = sid

    def holds(self):
        total = 0
        for port in self.ports.values():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/poolsim/stats", timeout=5) as r:
                m = re.search(rb'"holds_started":\s*(\d+)', r.read())
                total += int(m.group(1)) if m else 0
        return total

    def pids(self):
        return [p.pid for p in self.procs.values() if p.poll() is None]

    def stop(self):
        for p in self.procs.values():
            p.kill()
            p.wait()


# ---- proxies ---------------------------------------------------------------------------

class Proxy:
    def __init__(self, name, pool, work, tls=None, resumption=True):
        self.name = name
        self.resumption = resumption  # False: every TLS connection makes a full handshake
        self.pool = pool
        self.work = os.path.join(work, name)
        os.makedirs(self.work, exist_ok=True)
        self.tls = tls  # (cert, key, pem_bundle) or None
        self.port = free_port()
        self.admin = free_port()
        self.proc = None

    def url(self):
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self):
        cmd = self.command()
        logf = open(os.path.join(self.work, "proxy.log"), "w")
        self.proc = subprocess.Popen(["taskset", "-c", CPU_PROXY] + cmd, stdout=logf, stderr=subprocess.STDOUT)
        wait_port(self.port)
        self.ready()
        return self

    def ready(self):
        pass

    def pid(self):
        return self.proc.pid

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Sprayer(Proxy):
    def command(self):
        servers = "".join(f"  - id: {sid}\n    address: 127.0.0.1:{self.pool.ports[sid]}\n" for sid in self.pool.ids)
        tls = ""
        if self.tls:
            tls = f"    tls:\n      certificates:\n        - cert: {self.tls[0]}\n          key: {self.tls[1]}\n"
            if not self.resumption:
                tls += "      session_tickets: false\n      session_cache_size: 0\n"
        path = os.path.join(self.work, "sprayer.yaml")
        with open(path, "w") as f:
            f.write(f"""workers: 1
listeners:
  - name: bench
    address: 127.0.0.1:{self.port}
{tls}servers:
{servers}limits:
  max_connections: 9500
health:
  interval: 1s
  rise: 2
  fall: 2
ownership:
  source: sqlite
  sqlite_path: {self.pool.db}
  poll_interval: 50ms
admin:
  address: 127.0.0.1:{self.admin}
log:
  level: warn
""")
        return [SPRAYER, "-c", path]

    def ready(self):
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/healthz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("sprayer did not become healthy")


class Haproxy(Proxy):
    def __init__(self, name, pool, work, tls=None, mode="hash", resumption=True):
        super().__init__(name, pool, work, tls, resumption)
        self.mode = mode
        self.socket = os.path.join(self.work, "admin.sock")
        self.map = os.path.join(self.work, "users.map")

    def command(self):
        bind = f"bind 127.0.0.1:{self.port}"
        if self.tls:
            bind += f" ssl crt {self.tls[2]} alpn http/1.1"
            if not self.resumption:
                bind += " no-tls-tickets"
        servers = "".join(f"    server {sid} 127.0.0.1:{self.pool.ports[sid]} check inter 1s fall 2 rise 2\n"
                          for sid in self.pool.ids)
        if self.mode == "map":
            with open(self.map, "w") as f:
                for user, sid in self.pool.owner.items():
                    f.write(f"{user} {sid}\n")
            rules = "".join(f"    use-server {sid} if {{ url_param(User),lower,map({self.map}) -m str {sid} }}\n"
                            for sid in self.pool.ids)
            balance = "    balance url_param User\n    hash-type consistent\n" + rules
        else:
            balance = "    balance url_param User\n    hash-type consistent\n"
        path = os.path.join(self.work, "haproxy.cfg")
        with open(path, "w") as f:
            f.write(f"""global
    nbthread 1
    maxconn 9500
    tune.ssl.default-dh-param 2048
{"" if self.resumption else "    tune.ssl.cachesize 0" + chr(10)}    stats socket {self.socket} mode 600 level admin
defaults
    mode http
    timeout connect 2s
    timeout client 75s
    timeout server 35m
    timeout http-keep-alive 75s
    option http-keep-alive
    option forwardfor
    option redispatch
    retries 2
frontend fe
    {bind}
    maxconn 9500
    default_backend be
backend be
{balance}    http-reuse always
{servers}""")
        return ["haproxy", "-f", path, "-db"]

    def runtime(self, command):
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(self.socket)
            s.sendall(command.encode() + b"\n")
            out = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                out += chunk
        return out.decode()


class Nginx(Proxy):
    def command(self):
        servers = "".join(f"        server 127.0.0.1:{self.pool.ports[sid]} max_fails=2 fail_timeout=1s;\n"
                          for sid in self.pool.ids)
        listen = f"listen 127.0.0.1:{self.port}"
        ssl_lines = ""
        if self.tls:
            listen += " ssl"
            # nginx 1.22 leaves TLS 1.3 off unless asked: the same protocols as the others.
            ssl_lines = (f"        ssl_certificate {self.tls[0]};\n        ssl_certificate_key {self.tls[1]};\n"
                         "        ssl_protocols TLSv1.2 TLSv1.3;\n")
            if not self.resumption:
                ssl_lines += "        ssl_session_tickets off;\n        ssl_session_cache off;\n"
        path = os.path.join(self.work, "nginx.conf")
        with open(path, "w") as f:
            f.write(f"""worker_processes 1;
daemon off;
master_process off;
worker_rlimit_nofile 20000;
error_log {self.work}/error.log error;
pid {self.work}/nginx.pid;
events {{ worker_connections 19000; }}
http {{
    access_log off;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    client_body_temp_path {self.work}/body;
    proxy_temp_path {self.work}/proxy;
    upstream pool {{
        hash $arg_User consistent;
{servers}        keepalive 1024;
    }}
    server {{
        {listen};
{ssl_lines}        location / {{
            proxy_pass http://pool;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_read_timeout 35m;
            proxy_next_upstream error timeout;
        }}
    }}
}}
""")
        return ["nginx", "-c", path, "-p", self.work]


def make_proxies(names, pool, work, tls=None, resumption=True):
    made = []
    for name in names:
        if name == "sprayer":
            made.append(Sprayer(name, pool, work, tls, resumption))
        elif name == "haproxy-hash":
            made.append(Haproxy(name, pool, work, tls, "hash", resumption))
        elif name == "haproxy-map":
            made.append(Haproxy(name, pool, work, tls, "map", resumption))
        elif name == "nginx":
            made.append(Nginx(name, pool, work, tls, resumption))
    return made


# ---- load ------------------------------------------------------------------------------

def wrk(url, seconds, connections, script, threads=1):
    out = subprocess.run(["taskset", "-c", CPU_OTHERS, "wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s",
                          "--latency", "-s", os.path.join(LUA, script), url],
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    def latency(label):
        m = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            return float("nan")
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
    m = re.search(r"(\d+) requests in", out)
    requests = int(m.group(1)) if m else 0
    errors = 0
    for m in re.finditer(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    return {"requests": requests, "rps": requests / seconds, "p50": latency("50%"), "p99": latency("99%"),
            "errors": errors}


def out_segments():
    """TCP segments sent by the whole machine (/proc/net/snmp Tcp OutSegs): loopback traffic
    counts once per segment, whoever sent it."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Tcp:")]
    return int(rows[1][rows[0].index("OutSegs")])


def children_cpu():
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def measure_wrk(proxy, seconds, connections, script):
    """One measured wrk run: the proxy's CPU per request, and what its neighbours spend per
    request behind it (wrk, and the pool servers): a proxy that makes them work harder is
    not cheaper. Segments per request: TCP segments of the whole exchange (client, proxy,
    servers) ÷ requests."""
    pid = proxy.pid()
    wrk(proxy.url(), 2, connections, script)  # warm-up: pools, caches, TLS session state
    backends = proxy.pool.pids()
    u0, s0 = cpu_times(pid)
    b0 = sum(cpu_seconds(p) for p in backends)
    c0 = children_cpu()
    seg0 = out_segments()
    r = wrk(proxy.url(), seconds, connections, script)
    seg1 = out_segments()
    c1 = children_cpu()
    b1 = sum(cpu_seconds(p) for p in backends)
    u1, s1 = cpu_times(pid)
    n = max(1, r["requests"])
    r["cpu_us"] = (u1 - u0 + s1 - s0) * 1e6 / n
    r["user_us"] = (u1 - u0) * 1e6 / n
    r["client_us"] = (c1 - c0) * 1e6 / n
    r["backend_us"] = (b1 - b0) * 1e6 / n
    r["segments"] = (seg1 - seg0) / n
    r["rss_mib"] = rss_kib(pid) / 1024
    return r


def alternate(proxies, rep):
    return proxies if rep % 2 == 0 else list(reversed(proxies))


def run_throughput(title, names, pool, work, args, connections, script, tls=None, resumption=True):
    proxies = make_proxies(names, pool, work, tls, resumption)
    results = {p.name: [] for p in proxies}
    try:
        for p in proxies:
            p.start()
        for rep in range(args.reps):
            for p in alternate(proxies, rep):
                r = measure_wrk(p, args.seconds, connections, script)
                log(f"{title} rep {rep + 1} {p.name}: {r['rps']:.0f} req/s, {r['cpu_us']:.2f} µs/req, "
                    f"p99 {r['p99']:.2f} ms, errors {r['errors']}")
                results[p.name].append(r)
    finally:
        for p in proxies:
            p.stop()
    return results


def throughput_table(title, results, per="request"):
    lines = [f"### {title}", "",
             f"| proxy | req/s | p50 ms | p99 ms | CPU µs per {per} | of which user | wrk µs | servers µs | "
             f"TCP segments | RSS MiB | errors | sprayer ÷ peer (CPU/{per}) | sprayer ÷ peer (wrk + servers) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    base = results.get("sprayer", [])
    def neighbours(r):
        return r["client_us"] + r["backend_us"]

    for name, runs in results.items():
        ratio = around = "–"
        if name != "sprayer" and base:
            ratio = fmt([b["cpu_us"] / r["cpu_us"] for b, r in zip(base, runs) if r["cpu_us"] > 0])
            around = fmt([neighbours(b) / neighbours(r) for b, r in zip(base, runs) if neighbours(r) > 0])
        lines.append(f"| {name} | {fmt([r['rps'] for r in runs], 0)} | {fmt([r['p50'] for r in runs])} | "
                     f"{fmt([r['p99'] for r in runs])} | {fmt([r['cpu_us'] for r in runs])} | {fmt([r['user_us'] for r in runs])} | "
                     f"{fmt([r['client_us'] for r in runs])} | {fmt([r['backend_us'] for r in runs])} | "
                     f"{fmt([r['segments'] for r in runs])} | "
                     f"{fmt([r['rss_mib'] for r in runs], 1)} | {sum(r['errors'] for r in runs)} | {ratio} | {around} |")
    lines.append("")
    return lines


# ---- parked long-polls -----------------------------------------------------------------

async def park(port, count, tls_context, users):
    """Open `count` connections, each with a Ping the server holds; returns the writers."""
    conns = []
    sem = asyncio.Semaphore(200)

    async def one(i):
        async with sem:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=tls_context, server_hostname="mail.example.com" if tls_context else None)
            u = i % users
            writer.write((f"POST /Microsoft-Server-ActiveSync?Cmd=Ping&User=user{u:05d}&DeviceId=dev{i:05d}"
                          f"&DeviceType=iPhone HTTP/1.1\r\nHost: mail.example.com\r\nContent-Length: 0\r\n\r\n").encode())
            await writer.drain()
            conns.append(writer)

    await asyncio.gather(*(one(i) for i in range(count)))
    return conns


def run_parked(title, names, pool, work, levels, tls=None):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ctx = None
    if tls:
        ctx = ssl.create_default_context(cafile=tls[3])
        ctx.check_hostname = False
    rows = {}
    for level in levels:
        for p in make_proxies(names, pool, work, tls):
            p.start()
            try:
                wrk(p.url(), 1, 10, "activesync_users.lua")  # warm-up
                time.sleep(0.5)
                before = rss_kib(p.pid())
                holds0 = pool.holds()
                loop = asyncio.new_event_loop()
                conns = loop.run_until_complete(park(p.port, level, ctx, USERS))
                deadline = time.monotonic() + 60
                while pool.holds() - holds0 < level and time.monotonic() < deadline:
                    time.sleep(0.2)
                parked = pool.holds() - holds0
                time.sleep(0.5)
                after = rss_kib(p.pid())
                per = (after - before) * 1024 / max(1, parked)
                log(f"{title} {p.name} {level}: parked {parked}, RSS {before / 1024:.1f} -> {after / 1024:.1f} MiB, "
                    f"{per:.0f} B per connection")
                rows.setdefault(p.name, []).append((level, parked, before, after, per))
                for w in conns:
                    w.transport.abort()
                loop.run_until_complete(asyncio.sleep(0.2))
                loop.close()
            finally:
                p.stop()
    lines = [f"### {title}", "", "| proxy | connections parked | RSS before MiB | RSS after MiB | bytes per parked connection | sprayer ÷ peer |",
             "|---|---|---|---|---|---|"]
    base = {r[0]: r[4] for r in rows.get("sprayer", [])}
    for name, runs in rows.items():
        for level, parked, before, after, per in runs:
            ratio = f"{base[level] / per:.2f}" if name != "sprayer" and level in base and per > 0 else "–"
            lines.append(f"| {name} | {parked} of {level} | {before / 1024:.1f} | {after / 1024:.1f} | {per:.0f} | {ratio} |")
    lines.append("")
    return lines


# ---- ownership change propagation ----------------------------------------------------------

def served_by(port, user):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall((f"GET /Microsoft-Server-ActiveSync?Cmd=Sync&User={user}&DeviceId=d1 HTTP/1.1\r\n"
                   f"Host: mail.example.com\r\nConnection: close\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    m = re.search(rb"X-Served-By: (\S+)", data, re.I)
    return m.group(1).decode() if m else None


def run_propagation(pool, work, changes=30):
    import threading
    results = {}
    for p in make_proxies(["sprayer", "haproxy-map"], pool, work):
        p.start()
        sync = None
        if isinstance(p, Haproxy):
            # Everything up to now is in the map file; the script takes it from here.
            sync_state = {"stop": False}
            con = sqlite3.connect(pool.db)
            start_epoch = con.execute("SELECT epoch FROM pool_epoch").fetchone()[0]
            con.close()

            def loop(hp=p, first=start_epoch):
                last = first
                c = sqlite3.connect(pool.db)
                while not sync_state["stop"]:
                    for user, sid, epoch in c.execute(
                            "SELECT user_key, server_id, epoch FROM user_owner WHERE epoch > ? ORDER BY epoch", (last,)).fetchall():
                        hp.runtime(f"set map {hp.map} {user} {sid}")
                        last = max(last, epoch)
                    time.sleep(0.05)
                c.close()
            sync = threading.Thread(target=loop, daemon=True)
            sync.start()
        delays = []
        try:
            for i in range(changes):
                user = f"user{(i * 331) % USERS:05d}"
                old = pool.owner[user]
                new = pool.ids[(pool.ids.index(old) + 1) % 3]
                pool.change_owner(user, new)
                t0 = time.monotonic()
                deadline = t0 + 10
                while time.monotonic() < deadline:
                    if served_by(p.port, user) == new:
                        break
                    time.sleep(0.002)
                delays.append((time.monotonic() - t0) * 1000)
        finally:
            if sync:
                sync_state["stop"] = True
                sync.join(5)
            p.stop()
        log(f"propagation {p.name}: p50 {med(delays):.1f} ms, max {max(delays):.1f} ms")
        results[p.name] = delays
    lines = ["### 7. Ownership change propagation (commit → first request routed to the new owner)", "",
             "sprayer: SQLite source polling every 50 ms. HAProxy: a script polling the same table every 50 ms "
             "and pushing changes with `set map` on the runtime API.", "",
             "| proxy | changes | p50 ms | p90 ms | max ms |", "|---|---|---|---|---|"]
    for name, d in results.items():
        ds = sorted(d)
        lines.append(f"| {name} | {len(ds)} | {med(ds):.1f} | {ds[int(len(ds) * 0.9) - 1]:.1f} | {ds[-1]:.1f} |")
    lines.append("")
    return lines


# ---- certificates ----------------------------------------------------------------------

def make_certs(work):
    """A test CA and one wildcard certificate per key type: (cert, key, haproxy bundle, ca)."""
    d = os.path.join(work, "certs")
    os.makedirs(d, exist_ok=True)
    ca_key, ca_crt = os.path.join(d, "ca.key"), os.path.join(d, "ca.crt")
    run = lambda *a: subprocess.run(list(a), check=True, capture_output=True)
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
        "-subj", "/CN=bench CA", "-keyout", ca_key, "-out", ca_crt)
    out = {}
    for kind, keyopts in (("ecdsa", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]),
                          ("rsa", ["-newkey", "rsa:2048"])):
        key, csr, crt = (os.path.join(d, f"{kind}.{x}") for x in ("key", "csr", "crt"))
        run("openssl", "req", *keyopts, "-nodes", "-subj", "/CN=*.example.com", "-keyout", key, "-out", csr)
        ext = os.path.join(d, "ext.cnf")
        with open(ext, "w") as f:
            f.write("subjectAltName=DNS:*.example.com,DNS:mail.example.com,IP:127.0.0.1\n")
        run("openssl", "x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial", "-days", "2",
            "-extfile", ext, "-out", crt)
        bundle = os.path.join(d, f"{kind}.pem")
        with open(bundle, "w") as f:
            f.write(open(crt).read() + open(key).read())
        out[kind] = (crt, key, bundle, ca_crt)
    return out


# ---- main ------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--scenarios", default="1,2,3,4,5,6,7,8")
    ap.add_argument("--parked", default="2000,9000", help="parked connection levels")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", f"run-{datetime.date.today()}.md"))
    ap.add_argument("--peers", default="sprayer,haproxy-hash,haproxy-map,nginx",
                    help="proxies for scenarios 1, 2 and 8 (e.g. sprayer alone, to compare two builds)")
    args = ap.parse_args()
    scenarios = {int(s) for s in args.scenarios.split(",") if s}
    peers = [p for p in args.peers.split(",") if p]

    work = tempfile.mkdtemp(prefix="sprayer-bench-")
    pool = Pool(work)
    pool.start()
    lines = []
    try:
        certs = make_certs(work) if scenarios & {3, 4, 5} else {}
        if 1 in scenarios:
            r = run_throughput("1. keep-alive mix", peers, pool, work, args, 50, "activesync_mix.lua")
            lines += throughput_table("1. Plain HTTP keep-alive, the phones' mix: 60 % POST Ping, 20 % POST Sync "
                                      "(small bodies), 20 % GET (50 connections, 10,000 users)", r)
        if 8 in scenarios:
            r = run_throughput("8. keep-alive Sync", peers, pool, work, args, 50, "activesync_users.lua")
            lines += throughput_table("8. Plain HTTP keep-alive, POST Sync only (50 connections, 10,000 users)", r)
        if 2 in scenarios:
            r = run_throughput("2. new connection", peers, pool, work, args, 50, "activesync_close.lua")
            lines += throughput_table("2. Plain HTTP, a new connection per request", r)
        if 3 in scenarios:
            for kind in ("ecdsa", "rsa"):
                r = run_throughput(f"3. TLS keep-alive {kind}", peers[:2] + ["nginx"], pool, work, args, 50,
                                   "activesync_mix.lua", certs[kind])
                lines += throughput_table(f"3. TLS keep-alive, {kind.upper()} ({'P-256' if kind == 'ecdsa' else '2048'})", r)
        if 4 in scenarios:
            for kind in ("ecdsa", "rsa"):
                r = run_throughput(f"4. TLS handshakes {kind}", peers[:2] + ["nginx"], pool, work, args, 50,
                                   "activesync_close.lua", certs[kind], resumption=False)
                lines += throughput_table(f"4. TLS full handshakes, {kind.upper()}: a new connection per request, "
                                          "tickets and session cache off on every proxy (req/s = handshakes/s)",
                                          r, per="handshake")
        if 5 in scenarios:
            levels = [int(x) for x in args.parked.split(",")]
            lines += run_parked("5. Parked long-polls, plain", ["sprayer", "haproxy-hash", "nginx"], pool, work, levels)
            lines += run_parked("5. Parked long-polls, TLS (ECDSA)", ["sprayer", "haproxy-hash", "nginx"], pool, work,
                                levels, certs["ecdsa"])
        if 7 in scenarios:
            lines += run_propagation(pool, work)
    finally:
        pool.stop()
    if 6 in scenarios:
        out6 = os.path.join(work, "failover.md")
        # The issue's settings: checks every 1 s, fall 3, the phones' mix over 48 keep-alive
        # clients, so a hung owner shows which kinds of request wait and for how long.
        subprocess.run([sys.executable, os.path.join(ROOT, "bench", "failover.py"), "--reps", str(args.reps),
                        "--mix", "--fall", "3", "--threads", "48", "--build", BUILD, "--out", out6], check=False)
        if os.path.exists(out6):
            lines += ["### 6. Failover (bench/failover.py)", ""] + open(out6).read().splitlines() + [""]

    head = [f"# sprayer vs HAProxy and nginx — {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}", "",
            f"- machine: {platform.node()}, {NCPU} CPUs ({platform.processor() or platform.machine()}), "
            f"kernel {platform.release()}",
            f"- proxy pinned to CPU {CPU_PROXY}; wrk, clients and poolsims on CPU {CPU_OTHERS}",
            f"- versions: {version(['haproxy', '-v'])}; {version(['nginx', '-v'])}; {version(['wrk', '-v'])}",
            f"- command: `bench/run.py --seconds {args.seconds} --reps {args.reps} --scenarios {args.scenarios}`",
            "- cells: median (min–max) over the repetitions; ratios are sprayer ÷ peer per repetition "
            "(below 1 = sprayer cheaper)", ""]
    text = "\n".join(head + lines) + "\n"
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
