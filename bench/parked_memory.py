#!/usr/bin/env python3
"""Memory per parked ActiveSync Ping in sprayer alone, plain and TLS: one poolsim holds every Ping
for ten minutes, N clients each park one Ping (POST Cmd=Ping with a small body, as phones send
it), and sprayer's RSS before and after gives the bytes per parked Ping. With --heaptrack the
sprayer runs under heaptrack, and the heap still held while the Pings are parked is printed by
allocation site (bench/results/parked-memory-*.md has the table).

usage: bench/parked_memory.py [--n 4000] [--reps 3] [--build DIR] [--modes plain,tls] [--heaptrack]
"""
import argparse
import asyncio
import os
import resource
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def holds(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/poolsim/stats", timeout=5) as r:
        import json
        return json.loads(r.read())["holds_started"]


def make_cert(work):
    key, crt = os.path.join(work, "k.pem"), os.path.join(work, "c.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-days", "2", "-subj", "/CN=mail.example.com", "-addext", "subjectAltName=DNS:mail.example.com",
                    "-keyout", key, "-out", crt], check=True, capture_output=True)
    return key, crt


async def park(port, count, ctx):
    conns = []
    sem = asyncio.Semaphore(200)

    async def one(i):
        async with sem:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=ctx, server_hostname="mail.example.com" if ctx else None)
            body = b'<?xml version="1.0"?><Ping><HeartbeatInterval>900</HeartbeatInterval></Ping>'
            writer.write((f"POST /Microsoft-Server-ActiveSync?Cmd=Ping&User=user{i:05d}&DeviceId=dev{i:05d}"
                          f"&DeviceType=iPhone HTTP/1.1\r\nHost: mail.example.com\r\n"
                          f"User-Agent: Apple-iPhone14C2/2008.80\r\nMS-ASProtocolVersion: 16.1\r\n"
                          f"Authorization: Basic dXNlcjpwYXNz\r\nContent-Type: application/vnd.ms-sync.wbxml\r\n"
                          f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
            await writer.drain()
            conns.append(writer)

    await asyncio.gather(*(one(i) for i in range(count)))
    return conns


def measure(args, mode, work, key_crt):
    sim_port, port, admin = free_port(), free_port(), free_port()
    poolsim = os.path.join(args.build, "tests", "poolsim", "poolsim")
    sprayer = os.path.join(args.build, "proxy", "sprayer")
    sim = subprocess.Popen([poolsim, "--id", "pool1", "--listen", f"127.0.0.1:{sim_port}", "--ping-hold", "600s"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tls = ""
    if mode == "tls":
        tls = f"    tls:\n      certificates:\n        - cert: {key_crt[1]}\n          key: {key_crt[0]}\n"
    path = os.path.join(work, "sprayer.yaml")
    with open(path, "w") as f:
        f.write(f"""workers: 1
listeners:
  - name: bench
    address: 127.0.0.1:{port}
{tls}servers:
  - id: pool1
    address: 127.0.0.1:{sim_port}
limits:
  max_connections: 20000
timeouts:
  upstream_response: 700s
  client_idle: 700s
admin:
  address: 127.0.0.1:{admin}
log:
  level: warn
""")
    argv = ["taskset", "-c", "0", sprayer, "-c", path]
    if args.heaptrack:
        argv = ["heaptrack", "-o", os.path.join(work, f"heaptrack-{mode}")] + argv[3:]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ctx = None
    if mode == "tls":
        ctx = ssl.create_default_context(cafile=key_crt[1])
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    try:
        wait_port(sim_port)
        wait_port(port, 60 if args.heaptrack else 15)
        pid = proc.pid
        if args.heaptrack:  # the sprayer runs under heaptrack's script
            out = subprocess.run(["pgrep", "-n", "-x", "sprayer"], capture_output=True, text=True).stdout.split()
            pid = int(out[0]) if out else proc.pid
        loop = asyncio.new_event_loop()
        warm = loop.run_until_complete(park(port, 200, ctx))
        deadline = time.monotonic() + 30
        while holds(sim_port) < 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        before = rss_kib(pid)
        h0 = holds(sim_port)
        conns = loop.run_until_complete(park(port, args.n, ctx))
        deadline = time.monotonic() + 60
        while holds(sim_port) - h0 < args.n and time.monotonic() < deadline:
            time.sleep(0.2)
        parked = holds(sim_port) - h0
        time.sleep(1.0)
        after = rss_kib(pid)
        if args.heaptrack:
            # heaptrack writes its file when the sprayer exits; the peak is with the Pings held.
            os.kill(pid, signal.SIGINT)
            os.kill(pid, signal.SIGINT)
        for w in conns + warm:
            w.transport.abort()
        loop.run_until_complete(asyncio.sleep(0.2))
        loop.close()
        return parked, before, after
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        sim.kill()
        sim.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--modes", default="plain,tls")
    ap.add_argument("--heaptrack", action="store_true")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.TemporaryDirectory(prefix="sprayer-parked-") as work:
        key_crt = make_cert(work)
        for mode in args.modes.split(","):
            per = []
            for rep in range(args.reps):
                parked, before, after = measure(args, mode, work, key_crt)
                per.append((after - before) / max(1, parked))
                print(f"{mode} rep {rep + 1}: parked {parked}, RSS {before} -> {after} KiB, "
                      f"{per[-1]:.2f} KiB per parked Ping", file=sys.stderr)
            print(f"parked_{mode} n={args.n} per_ping_kib median {statistics.median(per):.2f} "
                  f"(min {min(per):.2f}, max {max(per):.2f})")
            if args.heaptrack:
                for f in sorted(os.listdir(work)):
                    if f.startswith(f"heaptrack-{mode}"):
                        dest = os.path.join(ROOT, "build", f)
                        os.replace(os.path.join(work, f), dest)
                        print(f"heaptrack file: {dest}")


if __name__ == "__main__":
    main()
