#!/usr/bin/env python3
"""A private PostgreSQL server for tests, on a loopback port, in a directory of its own.

usage: pg_server.py start STATE_DIR [--replica]   -> writes STATE_DIR/conninfo, prints it
       pg_server.py stop STATE_DIR
       pg_server.py kill STATE_DIR                 (SIGKILL the postmaster: a database crash)
As a module: `with PostgresServer() as pg: pg.conninfo, pg.sql("...")`.

initdb refuses to run as root, so the cluster belongs to the `postgres` user when we are
root (runuser); the socket goes into the state dir (-k), never /var/run; pg_ctl -w waits
for readiness with its own deadline. Schema and NOTIFY triggers from conf/sql are applied.
"""
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile

ROOT = os.environ.get("SPRAYER_SOURCE_DIR") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _bindir():
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(os.path.join(d, "initdb")):
            return d
    raise RuntimeError("PostgreSQL server binaries not found (install the postgresql package)")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    def __init__(self, state_dir=None, dbname="pool"):
        self.owned_dir = state_dir is None
        self.state_dir = state_dir or tempfile.mkdtemp(prefix="sprayer-pg-")
        self.dbname = dbname
        self.bindir = _bindir()
        self.datadir = os.path.join(self.state_dir, "data")
        self.port = None
        self.as_user = None
        if os.geteuid() == 0:
            self.as_user = "postgres"

    # -- helpers
    def _run(self, args, check=True, input=None, timeout=60):
        cmd = list(args)
        if self.as_user:
            cmd = ["runuser", "-u", self.as_user, "--"] + cmd
        return subprocess.run(cmd, check=check, input=input, capture_output=True, text=True, timeout=timeout)

    @property
    def conninfo(self):
        return f"host=127.0.0.1 port={self.port} dbname={self.dbname} user=postgres connect_timeout=3"

    def start(self):
        # A state dir left by an earlier run (a build dir reused by ctest): stop whatever
        # still runs there and start from a fresh cluster, so the schema is exactly ours.
        if os.path.exists(os.path.join(self.datadir, "PG_VERSION")):
            self._run([os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir, "-m", "immediate", "stop"],
                      check=False)
            shutil.rmtree(self.datadir, ignore_errors=True)
        os.makedirs(self.state_dir, exist_ok=True)
        if self.as_user:
            pw = pwd.getpwnam(self.as_user)
            os.chown(self.state_dir, pw.pw_uid, pw.pw_gid)
            # Parent temp dirs are world-traversable; the cluster dir itself stays 0700.
        if not os.path.exists(os.path.join(self.datadir, "PG_VERSION")):
            self._run([os.path.join(self.bindir, "initdb"), "-D", self.datadir, "-U", "postgres", "--auth=trust",
                       "--locale=C", "--encoding=UTF8", "-N"])
        self.port = _free_port()
        # fsync off is safe for tests (a killed postmaster leaves its writes in the page
        # cache); synchronous_commit stays on so that a kill loses no committed row.
        opts = f"-p {self.port} -k {self.state_dir} -c listen_addresses=127.0.0.1 -c fsync=off " \
               f"-c full_page_writes=off"
        self._run([os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir, "-w", "-t", "30", "-o", opts,
                   "-l", os.path.join(self.state_dir, "server.log"), "start"])
        self.psql(f"CREATE DATABASE {self.dbname}", db="postgres")
        for f in ("schema-postgresql.sql", "notify-postgresql.sql"):
            self.psql_file(os.path.join(ROOT, "conf", "sql", f))
        with open(os.path.join(self.state_dir, "conninfo"), "w") as fh:
            fh.write(self.conninfo + "\n")
        return self

    def psql(self, sql, db=None):
        r = self._run([os.path.join(self.bindir, "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-A", "-t",
                       "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", db or self.dbname, "-c", sql])
        return r.stdout

    def psql_file(self, path):
        with open(path) as fh:
            sql = fh.read()
        self._run([os.path.join(self.bindir, "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
                   "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", self.dbname], input=sql)

    def sql(self, sql):
        return self.psql(sql)

    def stop(self, mode="fast"):
        if self.port is None:
            return
        self._run([os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir, "-w", "-t", "30", "-m", mode, "stop"],
                  check=False)

    def kill(self):
        pidfile = os.path.join(self.datadir, "postmaster.pid")
        try:
            with open(pidfile) as fh:
                pid = int(fh.readline())
            os.kill(pid, 9)
        except (OSError, ValueError):
            pass

    def _clear_stale_pidfile(self):
        # A killed postmaster is reparented to PID 1, which in a container may never reap
        # it: the zombie's pid file would make pg_ctl refuse to start.
        pidfile = os.path.join(self.datadir, "postmaster.pid")
        try:
            with open(pidfile) as fh:
                pid = int(fh.readline())
        except (OSError, ValueError):
            return
        try:
            with open(f"/proc/{pid}/stat") as fh:
                state = fh.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            state = "gone"
        if state in ("Z", "X", "gone"):
            os.unlink(pidfile)

    def restart(self):
        """Start again on the same port (after stop or kill)."""
        self._clear_stale_pidfile()
        opts = f"-p {self.port} -k {self.state_dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run([os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir, "-w", "-t", "30", "-o", opts,
                   "-l", os.path.join(self.state_dir, "server.log"), "start"])

    def cleanup(self):
        self.stop("immediate")
        if self.owned_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()


def main(argv):
    if len(argv) < 3 or argv[1] not in ("start", "stop", "kill"):
        print(__doc__, file=sys.stderr)
        return 2
    server = PostgresServer(argv[2])
    if argv[1] == "start":
        server.start()
        print(server.conninfo)
        return 0
    conninfo_path = os.path.join(argv[2], "conninfo")
    if os.path.exists(conninfo_path):
        with open(conninfo_path) as fh:
            for part in fh.read().split():
                if part.startswith("port="):
                    server.port = int(part[5:])
    if argv[1] == "kill":
        server.kill()
    else:
        server.stop("fast")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
