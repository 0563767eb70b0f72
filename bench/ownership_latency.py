#!/usr/bin/env python3
"""Ownership change -> routing, per source and change detection mode; and the cost of a full
read and diff (full_scan) of a large table.

latency: for each source (sqlite, postgresql, mariadb, odbc = MariaDB through unixODBC) and
mode (epoch, watermark, full_scan), one sprayer reads a default-schema table of --users users
(poll_interval --poll; PostgreSQL in epoch mode is pushed by NOTIFY). The bench commits
--changes owner changes one at a time through a persistent client (sqlite3, psql, mariadb)
and polls /api/v1/route every 2 ms until sprayer names the new owner: commit -> routing,
p50/p99/max.

scan: a MariaDB table of --scan-users users, change_detection full_scan, one full read every
--scan-poll; over --scan-seconds (with 20 owner changes spread over it): sprayer's CPU per
scan (utime+stime from /proc), the scan count, and the longest control-loop stall seen by
probing the admin API (served on the control loop) every 5 ms; the same with epoch as the
baseline.

usage: bench/ownership_latency.py [--sources sqlite,postgresql,mariadb,odbc]
         [--modes epoch,watermark,full_scan] [--users 10000] [--changes 40] [--poll 50ms]
         [--scan-users 200000] [--scan-poll 1s] [--scan-seconds 20] [--skip-scan] [--out FILE]
Needs build/proxy/sprayer, PostgreSQL and MariaDB server binaries and the MariaDB ODBC driver
(scripts/install-deps.sh test). All traffic stays on 127.0.0.1.
"""
import argparse
import http.client
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SPRAYER = os.path.join(ROOT, "build", "proxy", "sprayer")
SERVERS = ("pool1", "pool2", "pool3")
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from mariadb_server import MariadbServer  # noqa: E402
from pg_server import PostgresServer  # noqa: E402


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(port, target, timeout=5.0):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", target)
        r = c.getresponse()
        return json.loads(r.read())
    finally:
        c.close()


def owner_of(i):
    return SERVERS[i % 3]


# --- the databases: a persistent writer each, commit returns when the commit is done

class Sqlite:
    name = "sqlite"

    def __init__(self, users, tmp):
        self.path = os.path.join(tmp, "pool.db")
        with open(os.path.join(ROOT, "conf", "sql", "schema-sqlite.sql")) as fh:
            schema = fh.read()
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.db.executescript(schema)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("BEGIN")
        self.db.executemany("INSERT INTO user_owner VALUES (?, ?, ?, strftime('%Y-%m-%d %H:%M:%f000', 'now'))",
                            ((f"u{i}", owner_of(i), i + 1) for i in range(users)))
        self.db.execute("UPDATE pool_epoch SET epoch = ? WHERE id = 1", (users,))
        self.db.execute("COMMIT")

    def source(self):
        return {"source": "sqlite", "sqlite_path": self.path}

    def assign(self, user, server):
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute("UPDATE pool_epoch SET epoch = epoch + 1 WHERE id = 1")
        self.db.execute("UPDATE user_owner SET server_id = ?, epoch = (SELECT epoch FROM pool_epoch), "
                        "changed_at = strftime('%Y-%m-%d %H:%M:%f000', 'now') WHERE user_key = ?", (server, user))
        self.db.execute("COMMIT")

    def close(self):
        self.db.close()


class Piped:
    """A client process reading statements on stdin; a marker line says each is done."""

    def _open(self, argv):
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def run(self, sql):
        self.proc.stdin.write(sql + self.marker)
        self.proc.stdin.flush()
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("the client exited")
            if line.strip() == "MARK":
                return

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(10)


class Postgres(Piped):
    name = "postgresql"
    marker = "\n\\echo MARK\n"

    def __init__(self, users, tmp):
        self.server = PostgresServer().start()  # its own temp dir: the postgres user must reach it
        self.server.psql(f"BEGIN; UPDATE pool_epoch SET epoch = {users} WHERE id = 1; "
                         f"INSERT INTO user_owner SELECT 'u' || i, (ARRAY['pool1','pool2','pool3'])[1 + i % 3], "
                         f"i + 1, now() FROM generate_series(0, {users - 1}) AS i; COMMIT;")
        self._open(["runuser", "-u", "postgres", "--", os.path.join(self.server.bindir, "psql"), "-X", "-q", "-A",
                    "-t", "-h", "127.0.0.1", "-p", str(self.server.port), "-U", "postgres", "-d", "pool"]
                   if self.server.as_user else
                   [os.path.join(self.server.bindir, "psql"), "-X", "-q", "-A", "-t", "-h", "127.0.0.1", "-p",
                    str(self.server.port), "-U", "postgres", "-d", "pool"])

    def source(self):
        return {"source": "postgresql", "postgresql": self.server.conninfo}

    def assign(self, user, server):
        self.run(f"BEGIN; UPDATE pool_epoch SET epoch = epoch + 1 WHERE id = 1; UPDATE user_owner SET server_id = "
                 f"'{server}', epoch = (SELECT epoch FROM pool_epoch), changed_at = clock_timestamp() "
                 f"WHERE user_key = '{user}'; COMMIT;")

    def close(self):
        super().close()
        self.server.cleanup()


class Mariadb(Piped):
    name = "mariadb"
    marker = "\nSELECT 'MARK';\n"

    def __init__(self, users, tmp):
        self.server = MariadbServer(os.path.join(tmp, "mariadb")).start()
        self.server.sql(f"UPDATE pool_epoch SET epoch = {users} WHERE id = 1; "
                        f"INSERT INTO user_owner SELECT CONCAT('u', seq), ELT(1 + seq % 3, 'pool1', 'pool2', 'pool3'), "
                        f"seq + 1, UTC_TIMESTAMP(6) FROM seq_0_to_{users - 1};")
        self._open(["mariadb", "--no-defaults", f"--socket={self.server.socket}", "-u", "root", "--batch",
                    "--skip-column-names", "--unbuffered", "pool"])
        self.run("SET time_zone = '+00:00';")

    def source(self):
        return {"source": "mariadb", "mariadb": {"host": "127.0.0.1", "port": self.server.port, "user": "sprayer",
                                                 "database": "pool", "password_file": self.server.password_file}}

    def assign(self, user, server):
        self.run(f"BEGIN; UPDATE pool_epoch SET epoch = epoch + 1 WHERE id = 1; UPDATE user_owner SET server_id = "
                 f"'{server}', epoch = (SELECT epoch FROM pool_epoch WHERE id = 1), changed_at = UTC_TIMESTAMP(6) "
                 f"WHERE user_key = '{user}'; COMMIT;")

    def close(self):
        super().close()
        self.server.cleanup()


class Odbc(Mariadb):
    name = "odbc"

    def source(self):
        return {"source": "odbc", "odbc": {"connection": f"DRIVER={{MariaDB Unicode}};SERVER=127.0.0.1;"
                                                         f"PORT={self.server.port};DATABASE=pool;UID=sprayer",
                                           "password_file": self.server.password_file}}


# --- sprayer

class Sprayer:
    def __init__(self, tmp, ownership):
        self.port, self.admin_port = free_port(), free_port()
        config = {"workers": 1, "listeners": [{"name": "http", "address": f"127.0.0.1:{self.port}"}],
                  "servers": [{"id": s, "address": f"127.0.0.1:{free_port()}"} for s in SERVERS],
                  "health": {"enabled": False}, "admin": {"address": f"127.0.0.1:{self.admin_port}"},
                  "log": {"level": "warn"}, "ownership": ownership}
        path = os.path.join(tmp, f"sprayer-{self.port}.yaml")
        with open(path, "w") as fh:
            json.dump(config, fh)  # JSON is YAML
        self.proc = subprocess.Popen([SPRAYER, "-c", path], stderr=open(path + ".log", "w"))

    def wait_users(self, users, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                st = get_json(self.admin_port, "/api/v1/ownership")
                if st["users"] >= users and st["source"] == "ok":
                    return st
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("sprayer did not load the table")

    def owner(self, user):
        return get_json(self.admin_port, f"/api/v1/route?user={user}").get("owner")

    def cpu_seconds(self):
        with open(f"/proc/{self.proc.pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)


def ownership_for(db, mode, poll):
    o = dict(db.source(), change_detection=mode, poll_interval=poll, reconnect_min="100ms", reconnect_max="1s")
    return o


def latency(db, mode, users, changes, poll, tmp):
    s = Sprayer(tmp, ownership_for(db, mode, poll))
    try:
        s.wait_users(users)
        delays = []
        for k in range(changes):
            i = 7 * k + 1
            user, target = f"u{i}", SERVERS[(i + 1 + k) % 3]
            if target == s.owner(user):
                target = SERVERS[(i + 2 + k) % 3]
            # A random phase against the poll timer: right after a change was seen is right
            # after a poll, and writing then would always wait one whole interval.
            time.sleep(random.uniform(0, 0.2))
            start = time.monotonic()
            db.assign(user, target)
            deadline = start + 10
            while s.owner(user) != target:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{db.name}/{mode}: {user} did not move")
                time.sleep(0.002)
            delays.append((time.monotonic() - start) * 1000)
        delays.sort()
        return statistics.median(delays), delays[min(len(delays) - 1, int(len(delays) * 0.99))], delays[-1]
    finally:
        s.stop()


def probe_stalls(port, stop, out):
    worst = 0.0
    while not stop.is_set():
        t = time.monotonic()
        get_json(port, "/api/v1/ownership")
        worst = max(worst, time.monotonic() - t)
        time.sleep(0.005)
    out.append(worst * 1000)


def scan_cost(db, mode, users, poll, seconds, tmp):
    s = Sprayer(tmp, ownership_for(db, mode, poll))
    try:
        s.wait_users(users, timeout=300)
        before_cpu = s.cpu_seconds()
        before = get_json(s.admin_port, "/api/v1/ownership")
        stop, worst = threading.Event(), []
        t = threading.Thread(target=probe_stalls, args=(s.admin_port, stop, worst))
        t.start()
        start = time.monotonic()
        for k in range(20):
            db.assign(f"u{k * 11 + 3}", "pool3" if k % 2 else "pool1")
            time.sleep(seconds / 20)
        stop.set()
        t.join()
        elapsed = time.monotonic() - start
        cpu = s.cpu_seconds() - before_cpu
        after = get_json(s.admin_port, "/api/v1/ownership")
        scans = after["full_loads"] - before["full_loads"]
        return {"cpu_s": cpu, "elapsed_s": elapsed, "scans": scans, "worst_probe_ms": worst[0],
                "cpu_per_scan_ms": cpu / scans * 1000 if scans else None}
    finally:
        s.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sources", default="sqlite,postgresql,mariadb,odbc")
    ap.add_argument("--modes", default="epoch,watermark,full_scan")
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--changes", type=int, default=40)
    ap.add_argument("--poll", default="50ms")
    ap.add_argument("--scan-users", type=int, default=200_000)
    ap.add_argument("--scan-poll", default="1s")
    ap.add_argument("--scan-seconds", type=float, default=20)
    ap.add_argument("--skip-scan", action="store_true")
    ap.add_argument("--out")
    args = ap.parse_args()
    kinds = {"sqlite": Sqlite, "postgresql": Postgres, "mariadb": Mariadb, "odbc": Odbc}
    lines = [f"# ownership change -> routing ({args.users} users, {args.changes} changes, poll {args.poll})", "",
             "| source | mode | p50 ms | p99 ms | max ms |", "|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory(prefix="sprayer-ownbench-") as tmp:
        for name in args.sources.split(","):
            db = kinds[name](args.users, tmp)
            try:
                for mode in args.modes.split(","):
                    p50, p99, worst = latency(db, mode, args.users, args.changes, args.poll, tmp)
                    lines.append(f"| {name} | {mode} | {p50:.1f} | {p99:.1f} | {worst:.1f} |")
                    print(lines[-1], flush=True)
            finally:
                db.close()
        if not args.skip_scan:
            lines += ["", f"# full read + diff: MariaDB, {args.scan_users} users, one scan every {args.scan_poll}, "
                          f"{args.scan_seconds:.0f} s, 20 changes", "",
                      "| mode | scans | sprayer CPU s | CPU ms per scan | longest admin-probe stall ms |",
                      "|---|---|---|---|---|"]
            db = Mariadb(args.scan_users, tmp)
            try:
                for mode in ("epoch", "full_scan"):
                    r = scan_cost(db, mode, args.scan_users, args.scan_poll, args.scan_seconds, tmp)
                    per = f"{r['cpu_per_scan_ms']:.0f}" if r["cpu_per_scan_ms"] else "-"
                    lines.append(f"| {mode} | {r['scans']} | {r['cpu_s']:.2f} | {per} | {r['worst_probe_ms']:.1f} |")
                    print(lines[-1], flush=True)
            finally:
                db.close()
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
