#!/usr/bin/env python3
"""Failover side by side: sprayer, HAProxy and nginx in front of the same three poolsims,
the same health settings (check every 1 s, fall 2 or --fall, rise 2), the same steady load over 3,000
users (POST ActiveSync Sync, keep-alive clients; --mix: the phones' mix, 60 % POST Ping answered
at once, 20 % POST Sync, 20 % GET). At t=2 s the server that serves a third of the users is
killed (kill -9) or frozen (SIGSTOP); we count failed and slow (> 1 s) requests and measure how
long until that server's users are answered again.

usage: bench/failover.py [--seconds 8] [--threads 6] [--reps 3] [--fall 2] [--mix]
                         [--proxies sprayer,haproxy,nginx] [--modes kill,stop] [--build DIR]... [--out FILE]
Several --build: sprayer from each tree (A/B), alternated within every repetition like the proxies.
Run by bench/failover.sh, which builds and installs what is needed.
"""
import argparse
import collections
import datetime
import http.client
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SPRAYER = os.path.join(ROOT, "build", "proxy", "sprayer")
POOLSIM = os.path.join(ROOT, "build", "tests", "poolsim", "poolsim")
FALL = 2
MIX = False
USERS = 3000
KILL_AT = 2.0


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


class Pool:
    def __init__(self, work):
        self.work = work
        self.procs = {}
        self.ports = {}

    def start(self, sid):
        port = self.ports.get(sid) or free_port()
        self.ports[sid] = port
        self.procs[sid] = subprocess.Popen([POOLSIM, "--id", sid, "--listen", f"127.0.0.1:{port}"],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port)

    def stop_all(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.kill()
                p.wait()


def sprayer_config(work, pool, port, admin):
    servers = "".join(f"  - id: {sid}\n    address: 127.0.0.1:{p}\n" for sid, p in sorted(pool.ports.items()))
    path = os.path.join(work, "sprayer.yaml")
    with open(path, "w") as f:
        f.write(f"""workers: 1
listeners:
  - name: http
    address: 127.0.0.1:{port}
servers:
{servers}timeouts:
  upstream_connect: 300ms
  upstream_response: 60s
health:
  interval: 1s
  timeout: 800ms
  rise: 2
  fall: {FALL}
  passive_failures: 3
admin:
  address: 127.0.0.1:{admin}
log:
  level: warn
""")
    return [SPRAYER, "-c", path]


def haproxy_config(work, pool, port, _admin):
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
    option http-buffer-request
    http-reuse safe
frontend fe
    bind 127.0.0.1:{port}
    default_backend pool
backend pool
    balance url_param User
    hash-type consistent
    option httpchk GET /traveler?action=getStatus
    http-check expect string Traveler\\ server\\ is\\ available.
    default-server inter 1s fall {FALL} rise 2
{servers}""")
    return ["haproxy", "-f", path, "-db"]


def nginx_config(work, pool, port, _admin):
    servers = "".join(f"        server 127.0.0.1:{p} max_fails={FALL} fail_timeout=2s;\n" for _, p in sorted(pool.ports.items()))
    path = os.path.join(work, "nginx.conf")
    with open(path, "w") as f:
        f.write(f"""worker_processes 1;
daemon off;
error_log {work}/nginx-error.log error;
pid {work}/nginx.pid;
events {{ worker_connections 9000; }}
http {{
    access_log off;
    upstream pool {{
        hash $arg_User consistent;
{servers}        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://pool;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 300ms;
            proxy_read_timeout 60s;
            proxy_next_upstream error timeout http_502 http_503 non_idempotent;
            proxy_next_upstream_tries 3;
        }}
    }}
}}
""")
    return ["nginx", "-c", path, "-p", work]


PROXIES = {"sprayer": sprayer_config, "haproxy": haproxy_config, "nginx": nginx_config}


def run_load(port, seconds, threads, on_tick):
    records = []
    lock = threading.Lock()
    stop = threading.Event()

    def worker(seed):
        rng = random.Random(seed)
        conn = None
        while not stop.is_set():
            i = rng.randrange(USERS)
            kind = "sync"
            if MIX:
                draw = rng.random()
                kind = "ping" if draw < 0.6 else "sync" if draw < 0.8 else "get"
            start = time.monotonic()
            status, served = -1, None
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                base = f"/Microsoft-Server-ActiveSync?User=u{i:05d}&DeviceId=d{i}"
                if kind == "ping":  # hold=0s: answered at once, so the closed loop keeps going
                    conn.request("POST", base + "&Cmd=Ping&hold=0s", body=b"<Ping/>", headers={"Host": "mail.example.com"})
                elif kind == "get":
                    conn.request("GET", base + "&Cmd=Options", headers={"Host": "mail.example.com"})
                else:
                    conn.request("POST", base + "&Cmd=Sync", body=b"sync", headers={"Host": "mail.example.com"})
                resp = conn.getresponse()
                resp.read()
                status, served = resp.status, resp.getheader("X-Served-By")
                if resp.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except Exception:
                if conn is not None:
                    conn.close()
                conn = None
            with lock:
                records.append((start, time.monotonic(), i, status, served, kind))
        if conn is not None:
            conn.close()

    ts = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(threads)]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    event_at = None
    while time.monotonic() - t0 < seconds:
        if event_at is None and time.monotonic() - t0 >= KILL_AT:
            event_at = time.monotonic()
            on_tick()
        time.sleep(0.01)
    stop.set()
    for t in ts:
        t.join(60)
    return records, event_at


def watch_verdict(admin, stop, out):
    """sprayer only: when its API first shows pool2 as anything but up (the health verdict)."""
    while not stop.is_set():
        try:
            conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=2)
            conn.request("GET", "/api/v1/servers")
            servers = json.loads(conn.getresponse().read())["servers"]
            conn.close()
            if next(s for s in servers if s["id"] == "pool2")["state"] != "up":
                out.append(time.monotonic())
                return
        except Exception:
            pass
        time.sleep(0.01)


def measure(proxy, mode, seconds, threads, work):
    pool = Pool(work)
    for sid in ("pool1", "pool2", "pool3"):
        pool.start(sid)
    port, admin = free_port(), free_port()
    argv = PROXIES[proxy](work, pool, port, admin)
    proc = subprocess.Popen(["taskset", "-c", "0"] + argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        time.sleep(2.5)  # first health checks pass everywhere
        victim = pool.procs["pool2"]

        verdict, watching = [], threading.Event()
        watcher = threading.Thread(target=watch_verdict, args=(admin, watching, verdict), daemon=True)

        def strike():
            victim.send_signal(signal.SIGKILL if mode == "kill" else signal.SIGSTOP)
            if proxy == "sprayer":
                watcher.start()

        records, at = run_load(port, seconds, threads, strike)
        watching.set()
        if watcher.ident is not None:
            watcher.join(5)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        pool.stop_all()
    before = [r for r in records if r[1] < at]
    victim_users = {r[2] for r in before if r[4] == "pool2"}
    after = [r for r in records if r[0] >= at]
    failed = [r for r in records if r[3] != 200 and r[1] >= at]
    slow = [r for r in records if r[1] >= at and r[1] - r[0] > 1.0]
    slow_by_kind = collections.Counter(r[5] for r in slow)
    # Requests safe to repeat (Ping, GET) in flight at the event or after it: the longest wait.
    safe = [r[1] - r[0] for r in records if r[1] >= at and r[5] in ("ping", "get")]
    answered = [r[1] for r in after if r[2] in victim_users and r[3] == 200]
    # Back to normal: the victim's users answered, and no failure or slow request after that.
    last_bad = max([r[1] for r in failed + slow], default=at)
    recovered = max(min(answered, default=float("nan")), last_bad) - at
    return {
        "requests": len(records),
        "victim_users": len(victim_users),
        "failed": len(failed),
        "slow": len(slow),
        "slow_by_kind": dict(slow_by_kind),
        "safe_max_ms": max(safe, default=float("nan")) * 1000,
        "recovered_ms": recovered * 1000,
        "verdict_ms": (verdict[0] - at) * 1000 if verdict else float("nan"),
        "rps": len(records) / seconds,
    }


def versions(proxies):
    out = []
    if "haproxy" in proxies:
        out.append(subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout.splitlines()[0])
    if "nginx" in proxies:
        out.append(subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip())
    return "; ".join(out) or "sprayer only"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--threads", type=int, default=6)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--fall", type=int, default=2)
    ap.add_argument("--mix", action="store_true")
    ap.add_argument("--proxies", default="sprayer,haproxy,nginx")
    ap.add_argument("--modes", default="kill,stop")
    ap.add_argument("--build", action="append", help="the build tree of sprayer and poolsim; "
                    "repeat it to compare builds (default: build/)")
    ap.add_argument("--out")
    args = ap.parse_args()
    global SPRAYER, POOLSIM, FALL, MIX
    builds = args.build or [os.path.join(ROOT, "build")]
    FALL, MIX = args.fall, args.mix
    # One entry per proxy to run; sprayer once per build tree, labelled with it when several.
    proxies = []
    for name in args.proxies.split(","):
        for build in builds if name == "sprayer" else builds[:1]:
            proxies.append(f"{name} ({build})" if name == "sprayer" and len(builds) > 1 else name)
    tree = {p: (p.split(" (", 1)[1][:-1] if " (" in p else builds[0]) for p in proxies}
    modes = args.modes.split(",")
    results = collections.defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="sprayer-failover-") as work:
        for rep in range(args.reps):
            for mode in modes:
                # A/B alternation: the order of proxies rotates each repetition.
                order = proxies[rep % len(proxies):] + proxies[:rep % len(proxies)]
                for proxy in order:
                    SPRAYER = os.path.join(tree[proxy], "proxy", "sprayer")
                    POOLSIM = os.path.join(tree[proxy], "tests", "poolsim", "poolsim")
                    r = measure(proxy.split(" (")[0], mode, args.seconds, args.threads, work)
                    results[(mode, proxy)].append(r)
                    print(f"rep {rep + 1} {mode:4} {proxy:8} {r}", file=sys.stderr)

    def med(values):
        return statistics.median(values)

    lines = [f"# Failover: sprayer vs HAProxy vs nginx ({datetime.date.today()})", "",
             f"Machine: {platform.node()}, {os.cpu_count()} CPUs, {platform.platform()}. "
             f"Versions: {versions(proxies)}.", "",
             f"Command: `bench/failover.sh --seconds {args.seconds:g} --threads {args.threads} --reps {args.reps} "
             f"--fall {FALL}{' --mix' if MIX else ''} --proxies {args.proxies} --modes {args.modes}"
             f"{''.join(' --build ' + b for b in builds)}`. "
             f"Each proxy pinned to CPU 0 with one worker; {args.threads} keep-alive clients over {USERS} users; "
             f"{'the phones mix (60 % POST Ping answered at once, 20 % POST Sync, 20 % GET)' if MIX else 'POST Sync'}; "
             f"pool2 hit at t={KILL_AT:g} s; health every 1 s, fall {FALL}, rise 2 everywhere. Medians of {args.reps} "
             f"runs (min–max).", "",
             "Back to normal = the hit server's users are answered again and no request fails or "
             "takes over 1 s after that. The load is closed-loop: a client stuck on a frozen server "
             "sends nothing else, which is why req/s drops after SIGSTOP.", "",
             "Verdict = when sprayer's `/api/v1/servers` first shows pool2 not up (polled every 10 ms).", "",
             "| event | proxy | failed requests | slow (>1 s) | slow by kind, all runs | longest Ping/GET (ms, --mix) | verdict after (ms) | back to normal after (ms) | req/s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for mode in modes:
        for proxy in proxies:
            rs = results[(mode, proxy)]
            def cell(key, fmt="{:.0f}"):
                vs = [r[key] for r in rs if r[key] == r[key]]  # NaN: not within the run
                if not vs:
                    return "not within the run"
                note = "" if len(vs) == len(rs) else f", {len(rs) - len(vs)} runs never"
                return f"{fmt.format(med(vs))} ({fmt.format(min(vs))}–{fmt.format(max(vs))}{note})"
            kinds = collections.Counter()
            for r in rs:
                kinds.update(r["slow_by_kind"])
            by_kind = ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())) or "none"
            lines.append(f"| {'kill -9' if mode == 'kill' else 'SIGSTOP'} | {proxy} | {cell('failed')} | "
                         f"{cell('slow')} | {by_kind} | {cell('safe_max_ms')} | {cell('verdict_ms')} | {cell('recovered_ms')} | {cell('rps')} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
