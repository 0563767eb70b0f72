"""Listeners are never shared by accident: the workers of one sprayer share each port through
SO_REUSEPORT, but a second sprayer started with the same configuration is refused at start,
with the address and the process that holds it, and the first one keeps every connection."""

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Sprayer, TestCase  # noqa: E402


class SecondSprayerTest(TestCase):
    TIMEOUT = 90.0

    def second_start(self, sprayer):
        """The same binary and the same file as the running one; its exit code and output."""
        proc = subprocess.run([harness.SPRAYER_BIN, "-c", sprayer.config_path], capture_output=True, timeout=30)
        return proc.returncode, (proc.stdout + proc.stderr).decode()

    def check_refused(self, admin):
        with harness.pool(1) as pool:
            config = harness.sprayer_config(pool, workers=2)
            if not admin:
                config["admin"] = {"enabled": False}
            with Sprayer(config) as first:
                code, out = self.second_start(first)
                self.assertNotEqual(code, 0, f"the second sprayer started:\n{out}")
                address = config["listeners"][0]["address"]
                self.assertIn(f"listener http: cannot listen on {address}: already in use", out)
                self.assertIn(f"pid {first.pid} (sprayer)", out, "names the process that holds the port")
                first.assert_alive()
                # Every connection still lands on the first one (a share would have been lost
                # when the second exited).
                for i in range(40):
                    resp = first.request("GET", f"/Microsoft-Server-ActiveSync?Cmd=Sync&User=u{i}&DeviceId=d")
                    self.assertEqual(resp.status, 200, resp.describe())

    def test_second_sprayer_is_refused_with_admin_off(self):
        self.check_refused(admin=False)

    def test_second_sprayer_is_refused_with_admin_on(self):
        self.check_refused(admin=True)

    def test_workers_still_share_one_port(self):
        with harness.pool(1) as pool, Sprayer(harness.sprayer_config(pool, workers=4)) as sprayer:
            port = sprayer.port
            # Four SO_REUSEPORT sockets on the port, all of this process.
            listening = 0
            for table in ("/proc/net/tcp", "/proc/net/tcp6"):
                with open(table) as f:
                    next(f)
                    for line in f:
                        fields = line.split()
                        if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                            listening += 1
            self.assertEqual(listening, 4)
            for i in range(20):
                self.assertEqual(sprayer.request("GET", "/traveler?action=getStatus").status, 200)


if __name__ == "__main__":
    harness.main()
