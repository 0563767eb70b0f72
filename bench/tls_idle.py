#!/usr/bin/env python3
"""Memory per idle TLS connection of a proxy process: RSS before and after N client
connections that each completed a handshake and one keep-alive request and then stay idle
(what tens of thousands of devices in ActiveSync Ping look like between answers).

usage: tls_idle.py --port P --pid PID [--n 2000] [--ca CA.pem] [--host NAME] [--path /x]
Prints one line: "idle_{'plain' if a.plain else 'tls12' if a.tls12 else 'tls'} n=N rss_before_kib=A rss_after_kib=B per_conn_kib=C".
"""
import argparse
import socket
import ssl
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--ca")
    ap.add_argument("--host", default="localhost")
    ap.add_argument("--path", default="/traveler?action=getStatus")
    ap.add_argument("--plain", action="store_true", help="plain HTTP (the baseline)")
    ap.add_argument("--tls12", action="store_true", help="TLS 1.2 at most")
    a = ap.parse_args()
    ctx = ssl.create_default_context(cafile=a.ca) if a.ca else ssl._create_unverified_context()
    if a.tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    request = f"GET {a.path} HTTP/1.1\r\nHost: {a.host}\r\n\r\n".encode()
    # Warm-up: the first connections allocate pools, caches and the worker's structures.
    warm = [open_one(ctx, a, request) for _ in range(50)]
    time.sleep(0.5)
    before = rss_kib(a.pid)
    conns = []
    for _ in range(a.n):
        conns.append(open_one(ctx, a, request))
    time.sleep(1.0)
    after = rss_kib(a.pid)
    per = (after - before) / a.n
    print(f"idle_{'plain' if a.plain else 'tls12' if a.tls12 else 'tls'} n={a.n} rss_before_kib={before} rss_after_kib={after} per_conn_kib={per:.1f}")
    for c in conns + warm:
        c.close()


def open_one(ctx, a, request):
    raw = socket.create_connection(("127.0.0.1", a.port), timeout=10)
    s = raw if a.plain else ctx.wrap_socket(raw, server_hostname=a.host)
    s.sendall(request)
    data = b""
    deadline = time.monotonic() + 10
    # Read the head and the Content-Length body (small status answers).
    while b"\r\n\r\n" not in data and time.monotonic() < deadline:
        data += s.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v)
    while len(body) < length and time.monotonic() < deadline:
        body += s.recv(65536)
    if not head.startswith(b"HTTP/1.1 200"):
        sys.exit(f"unexpected answer: {head[:100]!r}")
    return s


if __name__ == "__main__":
    main()
