"""sprayer under a systemd-style supervisor (Type=notify): the test is the supervisor — it binds
the unix datagram socket, passes it as NOTIFY_SOCKET and reads what sprayer says. READY=1
comes only once the port accepts and the ownership snapshot is loaded; SIGHUP gives
RELOADING=1 (with MONOTONIC_USEC) then READY=1; a refused reload still ends in READY=1, with
a STATUS line that names the refusal."""

import json
import os
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Sprayer  # noqa: E402

USERS = 60000


class Supervisor:
    def __init__(self):
        self.path = harness.scratch_path("notify") + ".sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)

    def next(self, timeout, what):
        """The next message as a dict of its fields."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise harness.WaitTimeout(f"no notification ({what}) within {timeout}s")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            return dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)

    def close(self):
        self.sock.close()


class SystemdNotifyTest(harness.TestCase):
    TIMEOUT = 120.0

    def setUp(self):
        super().setUp()
        self.pool = harness.pool(2)
        self.db = harness.SqlitePool()
        self.db.bulk_owners([(f"user{i:05d}", "pool1" if i % 2 else "pool2") for i in range(USERS)])
        self.supervisor = Supervisor()
        self.config = harness.sprayer_config(self.pool, ownership={"source": "sqlite", "sqlite_path": self.db.path})

    def tearDown(self):
        self.supervisor.close()
        self.pool.stop()
        self.db.cleanup()
        super().tearDown()

    def start(self):
        sprayer = Sprayer(self.config)
        os.environ["NOTIFY_SOCKET"] = self.supervisor.path
        try:
            sprayer._stderr = open(sprayer.stderr_path, "wb")
            sprayer.proc = harness._spawn([harness.SPRAYER_BIN, "-c", sprayer.config_path], sprayer._stderr,
                                          sprayer._stderr)
        finally:
            del os.environ["NOTIFY_SOCKET"]
        return sprayer

    def users_loaded(self, sprayer):
        resp = harness.http_request(sprayer.admin_port, "GET", "/api/v1/ownership", timeout=5)
        return json.loads(resp.body)["users"]

    def test_ready_reload_and_refusal(self):
        sprayer = self.start()
        try:
            ready = self.supervisor.next(60, "READY=1 at start")
            # The first word sprayer says is READY: at that moment everything must be up.
            self.assertEqual(ready.get("READY"), "1", ready)
            self.assertTrue(harness.port_accepts(sprayer.port), "READY=1 before the listener accepts")
            self.assertEqual(self.users_loaded(sprayer), USERS, "READY=1 before the snapshot was loaded")
            self.assertIn("serving, ", ready.get("STATUS", ""))
            self.assertIn("snapshot 60,000 users", ready["STATUS"])

            # A good reload: RELOADING=1, then READY=1 again.
            before = time.clock_gettime(time.CLOCK_MONOTONIC)
            sprayer.kill(signal.SIGHUP)
            reloading = self.next_with("RELOADING")
            usec = int(reloading["MONOTONIC_USEC"])
            self.assertGreaterEqual(usec, int(before * 1e6))
            self.assertLessEqual(usec, int(time.clock_gettime(time.CLOCK_MONOTONIC) * 1e6))
            done = self.next_with("READY")
            self.assertNotIn("refused", done.get("STATUS", ""))

            # A refused reload: READY=1 all the same (still serving), the status says why.
            with open(sprayer.config_path, "a") as f:
                f.write("workerz: 3\n")
            sprayer.kill(signal.SIGHUP)
            self.next_with("RELOADING")
            done = self.next_with("READY")
            self.assertIn("reload refused", done.get("STATUS", ""))
            self.assertIn("workerz", done["STATUS"])
            sprayer.assert_alive()
        finally:
            sprayer.stop()

    def next_with(self, field):
        """The next message carrying `field` (STATUS-only updates from health changes are skipped)."""
        for _ in range(50):
            message = self.supervisor.next(20, field)
            if field in message:
                return message
        raise AssertionError(f"no {field} among 50 notifications")


if __name__ == "__main__":
    harness.main()
