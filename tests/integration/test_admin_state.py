"""Admin states outlive the process: a server drained (or put into maintenance) through the
API is still drained after sprayer restarts, read from admin.state_file, and /api/v1/servers
says where each state came from. Each line carries when the change was made (what the pair's
members compare, test_pair.py). A damaged state file is ignored with a warning, never
half-applied."""

import re

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Sprayer, wait_until  # noqa: E402


def servers(sprayer):
    resp = harness.http_request(sprayer.admin_port, "GET", "/api/v1/servers", timeout=5)
    return {s["id"]: s for s in json.loads(resp.body)["servers"]}


def post(sprayer, target):
    resp = harness.http_request(sprayer.admin_port, "POST", target, headers=harness.ADMIN_WRITE, timeout=5)
    if resp.status != 200:
        raise AssertionError(f"POST {target}: {resp.status} {resp.body[:200]!r}")


class AdminStateFileTest(harness.TestCase):
    TIMEOUT = 60.0

    def setUp(self):
        super().setUp()
        self.pool = harness.pool(3)
        self.config = harness.sprayer_config(self.pool)
        self.state_file = self.config["admin"]["state_file"]

    def tearDown(self):
        self.pool.stop()
        super().tearDown()

    def test_drain_survives_a_restart(self):
        with Sprayer(self.config) as first:
            self.assertEqual(servers(first)["pool1"]["admin_source"], "none")
            post(first, "/api/v1/servers/pool1/drain")
            post(first, "/api/v1/servers/pool2/maintenance")
            now = servers(first)
            self.assertEqual((now["pool1"]["admin"], now["pool1"]["admin_source"]), ("drain", "api"))
            self.assertEqual(now["pool2"]["admin"], "maintenance")
        with open(self.state_file) as f:
            kept = f.read()
        self.assertRegex(kept, r"(?m)^pool1 drain \d{13}$")
        self.assertRegex(kept, r"(?m)^pool2 maintenance \d{13}$")
        drained_at = int(re.search(r"(?m)^pool1 drain (\d+)$", kept).group(1))
        self.assertEqual(now["pool1"]["admin_changed_at_ms"], drained_at)
        self.assertFalse(os.path.exists(self.state_file + ".tmp"), "the temporary file must be renamed away")

        with Sprayer(self.config) as second:
            now = servers(second)
            self.assertEqual((now["pool1"]["admin"], now["pool1"]["admin_source"]), ("drain", "state_file"))
            self.assertEqual((now["pool2"]["admin"], now["pool2"]["admin_source"]), ("maintenance", "state_file"))
            self.assertEqual(now["pool3"]["admin"], "ready")
            # Maintenance means no request at all reaches pool2, from the first request on.
            for i in range(20):
                resp = second.request("GET", f"/Microsoft-Server-ActiveSync?Cmd=Sync&User=u{i}&DeviceId=d&DeviceType=x")
                self.assertEqual(resp.status, 200)
                self.assertNotEqual(resp.header("X-Served-By"), "pool2", resp.describe())
            post(second, "/api/v1/servers/pool1/ready")
            post(second, "/api/v1/servers/pool2/ready")
        with open(self.state_file) as f:
            kept = f.read()
        # An undrain stays in the file with its time: it must beat an older drain a peer still holds.
        self.assertNotRegex(kept, r"(?m)^pool\d (drain|maintenance)", "ready servers are written as ready")
        self.assertRegex(kept, r"(?m)^pool1 ready \d{13}$")
        self.assertNotIn("pool3", kept, "a server never changed is not in the file")

    def test_damaged_file_is_ignored_whole(self):
        with open(self.state_file, "w") as f:
            f.write("pool1 drain\npool2 sideways\n")
        with Sprayer(self.config) as sprayer:
            now = servers(sprayer)
            self.assertEqual({s["admin"] for s in now.values()}, {"ready"}, "a damaged file must not be half-applied")
            wait_until(lambda: "admin state file ignored" in sprayer.stderr_text(), 5, what="the warning")
            self.assertIn(":2:", sprayer.stderr_text())


if __name__ == "__main__":
    harness.main()
