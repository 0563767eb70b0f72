"""`sprayer -t` predicts the start: each thing a start would trip over (a name that does not
resolve, a file it cannot open, a folder it cannot write, a SQLite file that is not there or
holds no table) makes -t fail with file:line:column: key, and the same config really fails to
start; a port already in use is a warning. Also the command line: -c without a file,
--config=FILE, -V, and -T printing a configuration that -t accepts and -T prints again alike."""

import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

OPENSSL = shutil.which("openssl")
UNSHARE = shutil.which("unshare")


def base_config(**extra):
    return harness.sprayer_config([("pool1", "127.0.0.1:18001")], **extra)


def line_of(path, needle):
    """1-based line of the first line of `path` containing `needle`."""
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if needle in line:
                return number
    raise AssertionError(f"{needle!r} not in {path}")


class ConfigCheckTest(harness.TestCase):
    TIMEOUT = 60.0

    def check(self, config, prefix=()):
        path = harness.write_config(config, "check")
        proc = subprocess.run([*prefix, harness.SPRAYER_BIN, "-t", "-c", path], capture_output=True, timeout=20)
        return proc.returncode, proc.stderr.decode(errors="replace"), path

    def assert_refused(self, config, key, needle, words, prefix=()):
        rc, err, path = self.check(config, prefix)
        self.assertEqual(rc, 1, f"-t must refuse this config (key {key}); stderr:\n{err}")
        line = line_of(path, needle)
        self.assertRegex(err, rf"{re.escape(path)}:{line}:\d+: {re.escape(key)}: ",
                         f"the error must name {path}:{line} and {key}:\n{err}")
        for word in words:
            self.assertIn(word, err)
        return path

    def assert_start_fails(self, path, words):
        """The start refuses what -t refused: exit 1 with the same reason, nothing served."""
        proc = subprocess.run([harness.SPRAYER_BIN, "-c", path], capture_output=True, timeout=20)
        err = proc.stderr.decode(errors="replace")
        self.assertEqual(proc.returncode, 1, f"the start should have failed as -t said:\n{err}")
        for word in words:
            self.assertIn(word, err)

    def test_good_config_is_valid(self):
        rc, err, _ = self.check(base_config())
        self.assertEqual(rc, 0, err)

    def test_unresolvable_server(self):
        if not UNSHARE or os.geteuid() != 0:
            self.skipTest("needs unshare and root (a network namespace keeps the look-up off the network)")
        # In a namespace of its own there is no network: the look-up fails on this machine
        # without sending a query anywhere, as an unknown name fails on a real one.
        config = harness.sprayer_config([("pool1", "pool1.sprayer-test.invalid:80")])
        path = self.assert_refused(config, "servers[0].address", "pool1.sprayer-test.invalid",
                                   ["cannot resolve pool1.sprayer-test.invalid"], prefix=[UNSHARE, "-n"])
        proc = subprocess.run([UNSHARE, "-n", harness.SPRAYER_BIN, "-c", path], capture_output=True, timeout=20)
        self.assertEqual(proc.returncode, 1, proc.stderr.decode(errors="replace"))
        self.assertIn("cannot resolve", proc.stderr.decode(errors="replace"))

    def test_missing_backend_ca(self):
        missing = harness.scratch_path("no-such-ca") + ".pem"
        config = base_config(upstream={"tls": {"ca_file": missing}})
        path = self.assert_refused(config, "upstream.tls.ca_file", missing, [missing, "No such file"])
        self.assert_start_fails(path, [missing])

    def test_missing_client_certificate_of_one_server(self):
        missing = harness.scratch_path("no-such-client") + ".pem"
        config = base_config()
        config["servers"].append({"id": "pool2", "address": "127.0.0.1:18002",
                                  "tls": {"client_cert": missing, "client_key": missing + ".key"}})
        self.assert_refused(config, "servers[1].tls.client_cert", missing, [missing, "No such file"])

    def test_missing_ticket_key_file(self):
        if not OPENSSL:
            self.skipTest("openssl not installed")
        folder = os.path.dirname(harness.scratch_path("x"))
        cert, key = os.path.join(folder, "check.pem"), os.path.join(folder, "check.key")
        subprocess.run([OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=sprayer.test"],
                       check=True, capture_output=True, timeout=20)
        missing = os.path.join(folder, "no-such-tickets.key")
        config = base_config()
        config["listeners"].append({"name": "https", "address": f"127.0.0.1:{harness.free_port()}",
                                    "tls": {"certificates": [{"cert": cert, "key": key}],
                                            "ticket_key_file": missing}})
        self.assert_refused(config, "listeners[1].tls.ticket_key_file", missing, [missing])

    def test_access_log_folder_missing(self):
        log = os.path.join(harness.scratch_path("log") + "-no-such-folder", "access.log")
        config = base_config(access_log={"enabled": True, "path": log})
        path = self.assert_refused(config, "access_log.path", log, ["No such file"])
        self.assert_start_fails(path, [log])

    def test_missing_sqlite_database(self):
        missing = harness.scratch_path("no-such-pool") + ".db"
        config = base_config(ownership={"source": "sqlite", "sqlite_path": missing})
        self.assert_refused(config, "ownership.sqlite_path", missing, [missing, "read-only"])
        self.assertFalse(os.path.exists(missing), "-t must not create the database it checks")

    def test_sqlite_database_without_tables(self):
        empty = harness.scratch_path("empty-pool") + ".db"
        sqlite3.connect(empty).close()  # a valid database file, but not the pool's
        config = base_config(ownership={"source": "sqlite", "sqlite_path": empty})
        rc, err, path = self.check(config)
        self.assertEqual(rc, 1, err)
        self.assertRegex(err, rf"{re.escape(path)}:{line_of(path, empty)}:\d+: ownership.query_full: .*no such table")

    def test_sqlite_database_of_the_pool_passes(self):
        with harness.SqlitePool() as db:
            rc, err, _ = self.check(base_config(ownership={"source": "sqlite", "sqlite_path": db.path}))
            self.assertEqual(rc, 0, err)

    def test_port_in_use_is_a_warning(self):
        holder = socket.socket()
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        try:
            config = base_config(port=port)
            rc, err, path = self.check(config)
            self.assertEqual(rc, 0, f"a taken port must not fail -t (the old process may hold it):\n{err}")
            line = line_of(path, f"127.0.0.1:{port}")
            self.assertRegex(err, rf"{re.escape(path)}:{line}:\d+: listeners\[0\].address: warning: .*in use")
        finally:
            holder.close()


class CommandLineTest(harness.TestCase):
    def run_sprayer(self, *args):
        proc = subprocess.run([harness.SPRAYER_BIN, *args], capture_output=True, timeout=20)
        return proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")

    def test_config_without_file(self):
        for flag in ("-c", "--config"):
            with self.subTest(flag=flag):
                rc, _, err = self.run_sprayer("-t", flag)
                self.assertEqual(rc, 2)
                self.assertIn(f"{flag} needs a file", err)
                self.assertNotIn("unknown argument", err)

    def test_config_spellings(self):
        path = harness.write_config(base_config(), "spelling")
        for args in (["-c", path], ["--config", path], [f"--config={path}"]):
            with self.subTest(args=args):
                rc, out, err = self.run_sprayer("-t", *args)
                self.assertEqual(rc, 0, err)
                self.assertIn(f"configuration {path} is valid", out)

    def test_long_version(self):
        rc, out, _ = self.run_sprayer("-V")
        self.assertEqual(rc, 0)
        for library in ("sprayer ", " build)", "libuv ", "OpenSSL ", "llhttp ", "yaml-cpp ", "SQLite ", "libpq "):
            self.assertIn(library, out)

    def test_dump_reads_back_equal(self):
        config = base_config(
            timeouts={"client_header": "2s", "upstream_response": "1h30m"},
            limits={"max_header_bytes": "16KiB", "max_body_bytes": "10MB"},
            http={"via": "edge", "x_forwarded": False},
            admin={"address": f"127.0.0.1:{harness.free_port()}", "token": "s3cret"},
            access_log={"enabled": True, "path": "stderr", "format": "combined"},
            affinity={"extractors": [{"kind": "header", "name": "X-User"}, "basic_auth"], "map": {"jd": "jdoe"}},
            health={"expect_status": [], "interval": "1500ms", "headers": {"X-Check": "sprayer"}},
            directory={"enabled": False, "base_dn": "dc=example,dc=com", "ttl": "2h"},
        )
        config["servers"].append({"id": "pool2", "address": "localhost:18002", "weight": 3,
                                  "tls": {"verify": False, "sni": "pool.test"}})
        first = harness.write_config(config, "dump-source")
        rc, dumped, err = self.run_sprayer("-T", "-c", first)
        self.assertEqual(rc, 0, err)
        for needle in ('client_header: "2s"', 'upstream_response: "1h30m"', 'via: "edge"', 'max_body_bytes: "10000000B"',
                       'format: "combined"', 'name: "X-User"', '"jd": "jdoe"', 'expect_status: []',
                       'interval: "1s500ms"', 'sni: "pool.test"', "weight: 3", '"X-Check": "sprayer"',
                       'base_dn: "dc=example,dc=com"', 'ttl: "2h"',
                       # defaults filled in
                       'client_idle: "1m15s"', "max_connections: 100000", 'drain: "30s"'):
            self.assertIn(needle, dumped)
        second = harness.write_config(dumped, "dump-again")
        rc, out, err = self.run_sprayer("-t", "-c", second)
        self.assertEqual(rc, 0, f"-T output refused by -t:\n{err}\n{dumped}")
        rc, again, err = self.run_sprayer("-T", "-c", second)
        self.assertEqual(rc, 0, err)
        body = lambda text: text.split("\n", 1)[1]  # noqa: E731 - the first line names the source file
        self.assertEqual(body(dumped), body(again), "-T of -T's output must print the same configuration")


if __name__ == "__main__":
    harness.main()
