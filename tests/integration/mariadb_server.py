#!/usr/bin/env python3
"""A private MariaDB server for tests, on a loopback port, in a directory of its own.

usage: mariadb_server.py start STATE_DIR   -> writes STATE_DIR/settings (host port user database socket)
       mariadb_server.py stop STATE_DIR
       mariadb_server.py kill STATE_DIR      (SIGKILL mariadbd: a database crash)
As a module: `with MariadbServer() as db: db.port, db.sql("...")`.

mariadb-install-db makes the data directory; mariadbd runs as root with --user=root, no
networking but 127.0.0.1:PORT and a socket in the state dir, and no grant on anything
outside it. The database `pool` gets sprayer's default schema and the Traveler pool's
tables (conf/sql/schema-pool-mariadb.sql: tr_user_monitor, tr_pool_server); the test user
`sprayer` (password in STATE_DIR/password) may only read them.
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.environ.get("SPRAYER_SOURCE_DIR") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PASSWORD = "sprayer-test-secret"

SCHEMA = """
CREATE TABLE IF NOT EXISTS pool_server (
  server_id    VARCHAR(255) PRIMARY KEY,
  address      VARCHAR(255) NOT NULL,
  heartbeat_at DATETIME(6) NOT NULL,
  availability INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS user_owner (
  user_key   VARCHAR(255) PRIMARY KEY,
  server_id  VARCHAR(255) NULL,
  epoch      BIGINT NOT NULL,
  changed_at DATETIME(6) NOT NULL,
  KEY user_owner_epoch (epoch)
);
CREATE TABLE IF NOT EXISTS pool_epoch (
  id    INTEGER PRIMARY KEY,
  epoch BIGINT NOT NULL
);
INSERT IGNORE INTO pool_epoch (id, epoch) VALUES (1, 0);
"""


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MariadbServer:
    def __init__(self, state_dir=None, database="pool"):
        self.owned_dir = state_dir is None
        self.state_dir = os.path.abspath(state_dir or tempfile.mkdtemp(prefix="sprayer-mariadb-"))
        self.database = database
        self.datadir = os.path.join(self.state_dir, "data")
        self.socket = os.path.join(self.state_dir, "mysqld.sock")
        self.pidfile = os.path.join(self.state_dir, "mysqld.pid")
        self.password_file = os.path.join(self.state_dir, "password")
        self.port = None
        self.proc = None

    def _client(self, sql, database=None, user="root", check=True, timeout=60):
        cmd = ["mariadb", "--no-defaults", f"--socket={self.socket}", "-u", user, "--batch", "--skip-column-names"]
        if user != "root":
            cmd.append(f"--password={PASSWORD}")
        if database is not False:
            cmd.append(database or self.database)
        r = subprocess.run(cmd, input=sql, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"mariadb: {r.stderr.strip()}")
        return r.stdout

    def sql(self, sql):
        return self._client(sql)

    def _spawn(self):
        log = open(os.path.join(self.state_dir, "server.log"), "ab")
        args = ["mariadbd", "--no-defaults", f"--datadir={self.datadir}", "--user=root", f"--socket={self.socket}",
                f"--pid-file={self.pidfile}", "--bind-address=127.0.0.1", f"--port={self.port}", "--skip-name-resolve",
                "--innodb-flush-log-at-trx-commit=2", "--innodb-buffer-pool-size=64M", "--skip-log-bin",
                "--default-time-zone=+00:00", "--max-connections=200", f"--tmpdir={self.state_dir}"]
        # Its own session: a Ctrl-C to the test does not reach it; cleanup stops it.
        self.proc = subprocess.Popen(args, stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("mariadbd exited at start; see " + os.path.join(self.state_dir, "server.log"))
            r = subprocess.run(["mariadb-admin", "--no-defaults", f"--socket={self.socket}", "-u", "root", "ping"],
                               capture_output=True, text=True, timeout=10)
            if r.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError("mariadbd did not answer within 60 s")

    def start(self):
        self._stop_recorded()
        shutil.rmtree(self.datadir, ignore_errors=True)
        os.makedirs(self.state_dir, exist_ok=True)
        subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={self.datadir}", "--user=root",
                        "--auth-root-authentication-method=socket", "--skip-test-db"],
                       check=True, capture_output=True, text=True, timeout=120)
        self.port = _free_port()
        self._spawn()
        self._client(f"CREATE DATABASE IF NOT EXISTS {self.database}", database=False)
        self._client(SCHEMA)
        with open(os.path.join(ROOT, "conf", "sql", "schema-pool-mariadb.sql")) as fh:
            self._client(fh.read())
        self._client(f"CREATE USER IF NOT EXISTS 'sprayer'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}';"
                     f"CREATE USER IF NOT EXISTS 'sprayer'@'localhost' IDENTIFIED BY '{PASSWORD}';"
                     f"GRANT SELECT ON {self.database}.* TO 'sprayer'@'127.0.0.1';"
                     f"GRANT SELECT ON {self.database}.* TO 'sprayer'@'localhost';", database=False)
        with open(self.password_file, "w") as fh:
            fh.write(PASSWORD + "\n")
        with open(os.path.join(self.state_dir, "settings"), "w") as fh:
            fh.write(f"127.0.0.1 {self.port} sprayer {self.database} {self.socket}\n")
        return self

    def _pid(self):
        try:
            with open(self.pidfile) as fh:
                return int(fh.read().strip())
        except (OSError, ValueError):
            return None

    def _wait_gone(self, pid, limit=30):
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.pid == pid:
                if self.proc.poll() is not None:
                    return
            else:
                try:
                    with open(f"/proc/{pid}/stat") as fh:
                        if fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                            return
                except OSError:
                    return
            time.sleep(0.05)

    def _stop_recorded(self):
        # A state dir left by an earlier run: stop the server recorded there.
        pid = self._pid()
        if pid and os.path.exists(f"/proc/{pid}") and "mariadbd" in open(f"/proc/{pid}/cmdline").read():
            os.kill(pid, signal.SIGKILL)
            self._wait_gone(pid)

    def stop(self):
        pid = self._pid()
        if pid:
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                return
            self._wait_gone(pid)

    def kill(self):
        pid = self._pid()
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
            self._wait_gone(pid)

    def restart(self):
        """Start again on the same port and data (after stop or kill)."""
        try:
            os.unlink(self.pidfile)
        except OSError:
            pass
        self._spawn()

    def cleanup(self):
        self.kill()
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
    server = MariadbServer(argv[2])
    if argv[1] == "start":
        server.start()
        print(f"mariadb on 127.0.0.1:{server.port}")
        return 0
    if argv[1] == "kill":
        server.kill()
    else:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
