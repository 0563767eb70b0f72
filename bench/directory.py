#!/usr/bin/env python3
"""Directory lookup, measured: sprayer before three poolsims sharing a SQLite ownership table
keyed by uid, and a real slapd whose users have several names (uid, mail, cn).

1. Added latency of the first request for a name not resolved yet (p50/p99), against requests
   for names already cached.
2. The directory stopped: every request still served; latency.
3. The directory frozen (SIGSTOP): every request still served, each waiting at most
   directory.wait.
4. 1,000 users, four devices each, each device sending another name form (short name,
   internet address, DOMAIN\\user, Notes canonical CN=.../O=...): the users whose devices land
   on more than one server, without and with the directory.

usage: bench/directory.py [--users 1000] [--samples 400] [--out FILE]
Needs build/proxy/sprayer and build/tests/poolsim/poolsim (scripts/build.sh) and slapd.
The cache's own cost (hit, miss) is measured by build/affinity/directory_bench.
"""
import argparse
import collections
import datetime
import os
import platform
import statistics
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
os.environ.setdefault("SPRAYER_BIN", os.path.join(ROOT, "build", "proxy", "sprayer"))
os.environ.setdefault("POOLSIM_BIN", os.path.join(ROOT, "build", "tests", "poolsim", "poolsim"))

import harness  # noqa: E402
from harness import SqlitePool, Sprayer, wait_until  # noqa: E402
from ldap_server import LdapServer  # noqa: E402

SERVERS = ("pool1", "pool2", "pool3")
WAIT_MS = 50


def uid(i):
    return f"u{i:05d}"


def person(i):
    return f"Person {i:05d}"


def mail(i):
    return f"person.{i:05d}@acme.example"


def forms(i):
    return [uid(i), mail(i), f"ACME\\{uid(i)}", f"CN={person(i)}/O=Acme"]


def table_owner(i):
    return SERVERS[(i * 7 + i // 3) % 3]


def quote(name):
    return "".join(c if c.isalnum() or c in "-._" else "%%%02X" % ord(c) for c in name)


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def ms(v):
    return f"{v * 1000:.2f}"


class Bench:
    def __init__(self, users):
        self.users = users
        self.ldap = LdapServer([(uid(i), person(i), mail(i)) for i in range(users)]).start()
        self.db = SqlitePool()
        self.db.bulk_owners([(uid(i), table_owner(i)) for i in range(users)])
        self.pool = harness.pool(3, db=self.db.spec, claim=False)
        self.sprayer = None

    def start_sprayer(self, directory):
        if self.sprayer:
            self.sprayer.stop()
        extra = {}
        if directory:
            extra["directory"] = {"enabled": True, "uri": self.ldap.uri, "bind_dn": "cn=sprayer,o=Acme",
                                  "password_file": self.ldap.password_file, "base_dn": "o=Acme",
                                  "wait": f"{WAIT_MS}ms", "timeout": "2s",
                                  "reconnect_min": "100ms", "reconnect_max": "300ms"}
        ownership = {"source": "sqlite", "sqlite_path": self.db.path, "poll_interval": "50ms"}
        self.sprayer = Sprayer(harness.sprayer_config(self.pool, ownership=ownership, **extra)).start()
        wait_until(lambda: harness.http_request(self.sprayer.admin_port, "GET", "/api/v1/ownership").json()["users"]
                   == self.users, 20.0, what="the ownership snapshot")
        if directory:
            wait_until(lambda: self.metric("sprayer_directory_up") == 1, 10.0, what="the directory")

    def metric(self, name, **labels):
        return harness.metric(self.sprayer.admin_port, name, **labels)

    def timed(self, client, name, device):
        start = time.perf_counter()
        resp = client.request("POST", f"/Microsoft-Server-ActiveSync?Cmd=Sync&User={quote(name)}"
                                      f"&DeviceId={device}&DeviceType=iPhone", body=b"x")
        return resp, time.perf_counter() - start

    def spread(self):
        """Users whose devices (one per name form, two requests each) were served by more than
        one server: counting every request, and counting each device's second request only
        (once a first request has put the name in the cache)."""
        every = collections.defaultdict(set)
        second = collections.defaultdict(set)
        statuses = collections.Counter()
        with self.sprayer.client(timeout=10) as c:
            for i in range(self.users):
                for k, name in enumerate(forms(i)):
                    for attempt in range(2):
                        resp, _ = self.timed(c, name, f"d{i}-{k}")
                        statuses[resp.status] += 1
                        every[i].add(resp.header("X-Served-By"))
                        if attempt == 1:
                            second[i].add(resp.header("X-Served-By"))
        split = sum(1 for s in every.values() if len(s) > 1)
        split_second = sum(1 for s in second.values() if len(s) > 1)
        off_owner = sum(1 for i, s in second.items() if s != {table_owner(i)})
        return split, split_second, off_owner, statuses

    def first_vs_cached(self, samples):
        first, cached = [], []
        with self.sprayer.client(timeout=10) as c:
            for i in range(samples):
                name = f"ACME\\{uid(i)}" if i % 2 else mail(i)  # not asked before in this run
                resp, t = self.timed(c, name, f"f{i}")
                assert resp.status == 200, resp.status
                first.append(t)
                resp, t = self.timed(c, name, f"f{i}")
                assert resp.status == 200, resp.status
                cached.append(t)
        return first, cached

    def unresolved_run(self, samples, prefix):
        times, statuses = [], collections.Counter()
        with self.sprayer.client(timeout=10) as c:
            for i in range(samples):
                resp, t = self.timed(c, f"{prefix}{i}@acme.example", f"s{i}")
                statuses[resp.status] += 1
                times.append(t)
        return times, statuses

    def close(self):
        if self.sprayer:
            self.sprayer.stop()
        self.pool.stop()
        self.ldap.cleanup()
        self.db.cleanup()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--samples", type=int, default=400)
    ap.add_argument("--out")
    args = ap.parse_args()
    b = Bench(args.users)
    lines = []
    say = lambda s="": (print(s, flush=True), lines.append(s))  # noqa: E731
    try:
        say(f"# Directory lookup, {datetime.date.today()}")
        say()
        say(f"Machine: {platform.node()}, {os.cpu_count()} cores, {platform.platform()}. sprayer 2 workers, "
            f"3 poolsims, SQLite ownership table ({args.users} users, keyed by uid), slapd (mdb) on loopback "
            f"with every user as uid, mail and cn. directory.wait {WAIT_MS} ms. Command: "
            f"`bench/directory.py --users {args.users} --samples {args.samples}`.")
        say()
        say("## Devices of one user on more than one server (4 devices per user, one name form each)")
        say()
        b.start_sprayer(directory=False)
        split0, second0, off0, st0 = b.spread()
        b.start_sprayer(directory=True)
        split1, second1, off1, st1 = b.spread()
        waited1 = b.metric("sprayer_directory_wait_timeouts_total")
        say("| | users split over >1 server, every request | the same, second request of each device | "
            "users with a device off the owner (second requests) | responses |")
        say("|---|---|---|---|---|")
        say(f"| without directory | {split0} of {args.users} | {second0} | {off0} | {dict(st0)} |")
        say(f"| with directory | {split1} of {args.users} | {second1} | {off1} | {dict(st1)} |")
        say()
        say(f"With the directory, {waited1:.0f} first requests waited the full {WAIT_MS} ms without an answer and "
            f"went by their normalised name (each user split over every request is one of those).")
        say()
        say("## First request for an unresolved name (directory up, cache empty after a restart)")
        say()
        b.start_sprayer(directory=True)
        first, cached = b.first_vs_cached(args.samples)
        waits = b.metric("sprayer_directory_waits_total")
        timeouts = b.metric("sprayer_directory_wait_timeouts_total")
        say("| requests | p50 ms | p99 ms | max ms |")
        say("|---|---|---|---|")
        say(f"| first for its name ({len(first)}) | {ms(pct(first, .5))} | {ms(pct(first, .99))} | {ms(max(first))} |")
        say(f"| same name again, cached ({len(cached)}) | {ms(pct(cached, .5))} | {ms(pct(cached, .99))} | "
            f"{ms(max(cached))} |")
        added = [f - c for f, c in zip(first, cached)]
        say(f"| added by the lookup (pairwise) | {ms(pct(added, .5))} | {ms(pct(added, .99))} | {ms(max(added))} |")
        say()
        say(f"Requests parked so far: {waits:.0f}; of those, waited the full {WAIT_MS} ms: {timeouts:.0f}.")
        say()
        say("## Directory stopped, directory frozen")
        say()
        b.ldap.stop()
        wait_until(lambda: b.metric("sprayer_directory_up") == 0, 10.0, what="the directory down")
        down, st_down = b.unresolved_run(args.samples, "down")
        b.ldap.start()
        wait_until(lambda: b.metric("sprayer_directory_up") == 1, 15.0, what="the directory back")
        b.ldap.pause()
        try:
            t0 = b.metric("sprayer_directory_wait_timeouts_total")
            slow, st_slow = b.unresolved_run(args.samples // 4, "slow")
            t1 = b.metric("sprayer_directory_wait_timeouts_total")
        finally:
            b.ldap.resume()
        say("| directory | requests (new names) | responses | p50 ms | p99 ms | max ms |")
        say("|---|---|---|---|---|---|")
        say(f"| stopped (slapd terminated) | {len(down)} | {dict(st_down)} | {ms(pct(down, .5))} | "
            f"{ms(pct(down, .99))} | {ms(max(down))} |")
        say(f"| frozen (slapd SIGSTOP) | {len(slow)} | {dict(st_slow)} | {ms(pct(slow, .5))} | "
            f"{ms(pct(slow, .99))} | {ms(max(slow))} |")
        say()
        log = b.sprayer.stderr_text()
        say(f"Frozen: {t1 - t0:.0f} requests waited the full {WAIT_MS} ms and went by their normalised name. "
            f"Log lines: \"requests go by their normalised names until it answers\" x"
            f"{log.count('requests go by their normalised names until it answers')}, "
            f"\"answering again\" x{log.count('answering again')}.")
    finally:
        b.close()
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
