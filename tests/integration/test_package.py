"""The Debian package: built by CPack from the build tree under test, lintian-clean, installed
with apt-get on this machine, its `sprayer -t` accepting the shipped configuration, the
installed binary run as the package's user in front of poolsim, then purged with nothing
left behind. Needs root and a machine where sprayer is not installed otherwise (skipped
then); uses ports of its own, so it runs beside the other suites."""

import contextlib
import grp
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import TestCase, timeout, wait_until  # noqa: E402

BUILD_DIR = os.environ.get("SPRAYER_BUILD_DIR") or os.path.dirname(os.path.dirname(harness.SPRAYER_BIN))
APT = ["apt-get", "-y", "-qq", "-o", "DPkg::Lock::Timeout=120"]
LEFT_BEHIND = ["/etc/sprayer", "/var/lib/sprayer", "/var/log/sprayer", "/usr/sbin/sprayer",
               "/usr/lib/systemd/system/sprayer.service", "/etc/logrotate.d/sprayer", "/usr/share/doc/sprayer",
               "/usr/share/sprayer"]


def installed():
    proc = subprocess.run(["dpkg-query", "-W", "-f=${Status}", "sprayer"], capture_output=True, text=True)
    return proc.returncode == 0 and "installed" in proc.stdout and "not-installed" not in proc.stdout


def run(argv, what, timeout=300, env=None):
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise AssertionError(f"{what} failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return proc.stdout + proc.stderr


class PackageTest(TestCase):
    TIMEOUT = 600.0

    def setUp(self):
        super().setUp()
        if os.geteuid() != 0:
            self.skipTest("installs a package: needs root")
        for tool in ("cpack", "apt-get", "dpkg-query", "setpriv"):
            if not shutil.which(tool):
                self.skipTest(f"{tool} not available")
        if not os.path.exists(os.path.join(BUILD_DIR, "CPackConfig.cmake")):
            self.skipTest(f"no CPackConfig.cmake in {BUILD_DIR}")
        if installed() or any(os.path.exists(p) for p in LEFT_BEHIND[:3]):
            self.skipTest("sprayer is installed on this machine already: not touching it")

    def build_package(self):
        out_dir = tempfile.mkdtemp(prefix="sprayer-deb-")
        self.addCleanup(shutil.rmtree, out_dir, True)
        run(["cpack", "-G", "DEB", "--config", os.path.join(BUILD_DIR, "CPackConfig.cmake"), "-B", out_dir],
            "cpack -G DEB")
        debs = [n for n in os.listdir(out_dir) if n.startswith("sprayer_") and n.endswith(".deb")]
        self.assertEqual(len(debs), 1, f"one package expected in {out_dir}: {os.listdir(out_dir)}")
        return os.path.join(out_dir, debs[0])

    def check_package_file(self, deb):
        fields = run(["dpkg-deb", "-f", deb, "Depends", "Package", "Version"], "dpkg-deb -f")
        # Dependencies come from the binary (dpkg-shlibdeps), not a hand-kept list.
        for lib in ("libuv1", "libssl3", "libyaml-cpp", "libc6"):
            self.assertIn(lib, fields, f"Depends misses {lib}:\n{fields}")
        control = run(["dpkg-deb", "--ctrl-tarfile", deb], "dpkg-deb --ctrl-tarfile")  # it opens
        self.assertTrue(control is not None)
        if shutil.which("lintian"):
            proc = subprocess.run(["lintian", "--no-tag-display-limit", deb], capture_output=True, text=True,
                                  timeout=300)
            errors = [line for line in proc.stdout.splitlines() if line.startswith("E:")]
            self.assertEqual(errors, [], f"lintian errors:\n{proc.stdout}")

    @timeout(600)
    def test_build_install_run_purge(self):
        deb = self.build_package()
        self.check_package_file(deb)

        self.addCleanup(self.purge_quietly)
        run(APT + ["install", "--no-install-recommends", deb], "apt-get install ./sprayer.deb",
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        self.assertTrue(installed())

        # As shipped: -t accepts the default configuration, which is a conffile.
        out = run(["/usr/sbin/sprayer", "-t"], "installed sprayer -t")
        self.assertIn("/etc/sprayer/sprayer.yaml is valid", out)
        conffiles = run(["dpkg-query", "-W", "-f=${Conffiles}", "sprayer"], "dpkg-query Conffiles")
        self.assertIn("/etc/sprayer/sprayer.yaml", conffiles)

        user = pwd.getpwnam("sprayer")
        self.assertLess(user.pw_uid, 1000, "a system user")
        self.assertIn(user.pw_shell, ("/usr/sbin/nologin", "/bin/false"))
        for path in ("/var/lib/sprayer", "/var/log/sprayer"):
            st = os.stat(path)
            self.assertEqual((st.st_uid, st.st_gid), (user.pw_uid, user.pw_gid), f"{path} owned by sprayer")
        unit_path = "/usr/lib/systemd/system/sprayer.service"
        unit = harness.read_text(unit_path)
        self.assertIn("ExecStart=/usr/sbin/sprayer -c /etc/sprayer/sprayer.yaml", unit)
        self.assertIn("User=sprayer", unit)
        if shutil.which("systemd-analyze"):
            run(["systemd-analyze", "verify", unit_path], "systemd-analyze verify (installed unit)")

        self.run_installed(user)

        files = [line for line in run(["dpkg-query", "-L", "sprayer"], "dpkg -L").splitlines() if line.strip()]
        run(APT + ["purge", "sprayer"], "apt-get purge sprayer",
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        self.assertFalse(installed())
        for path in LEFT_BEHIND:
            self.assertFalse(os.path.lexists(path), f"{path} left behind by purge")
        shared = ("/etc", "/usr", "/var", "/lib")
        leftovers = [f for f in files if os.path.lexists(f) and not os.path.isdir(f)
                     and not any(f == s for s in shared)]
        self.assertEqual(leftovers, [], "files of the package left behind by purge")
        with self.assertRaises(KeyError, msg="user sprayer left behind"):
            pwd.getpwnam("sprayer")
        with self.assertRaises(KeyError, msg="group sprayer left behind"):
            grp.getgrnam("sprayer")

    def run_installed(self, user):
        """The administrator's path: edit /etc/sprayer/sprayer.yaml, check it, run the binary as
        the sprayer user; one request through it to poolsim, one line in the access log."""
        with harness.pool(1) as pool:
            config = harness.sprayer_config(pool, access_log={"enabled": True, "path": "/var/log/sprayer/access.log"},
                                            ownership={"source": "none",
                                                       "cache_file": "/var/lib/sprayer/ownership.cache"})
            with open("/etc/sprayer/sprayer.yaml", "w") as f:
                f.write(harness.to_yaml(config))
            run(["/usr/sbin/sprayer", "-t"], "installed sprayer -t (edited)")
            port = int(config["listeners"][0]["address"].rsplit(":", 1)[1])
            admin = int(config["admin"]["address"].rsplit(":", 1)[1])
            stderr = open(harness.scratch_path("installed.stderr"), "w+b")
            proc = subprocess.Popen(["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups",
                                     "--", "/usr/sbin/sprayer", "-c", "/etc/sprayer/sprayer.yaml"],
                                    stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr)
            harness._reaper.add(proc)
            try:
                def up():
                    if proc.poll() is not None:
                        stderr.seek(0)
                        raise AssertionError(f"installed sprayer exited {proc.returncode}:\n{stderr.read().decode()}")
                    return harness.port_accepts(port) and harness.port_accepts(admin)
                wait_until(up, 15, what="the installed sprayer to listen")
                resp = harness.http_request(port, "GET", "/Microsoft-Server-ActiveSync?Cmd=Sync&User=jdoe&DeviceId=d1")
                self.assertEqual(resp.status, 200, resp.describe())
                self.assertEqual(resp.header("X-Served-By"), "pool1")
                wait_until(lambda: "jdoe" in harness.read_text("/var/log/sprayer/access.log"), 10,
                           what="the request in /var/log/sprayer/access.log (written as user sprayer)")
                self.assertEqual(os.stat("/var/log/sprayer/access.log").st_uid, user.pw_uid)
                proc.send_signal(signal.SIGTERM)
                self.assertEqual(proc.wait(timeout=30), 0, "installed sprayer exits 0 on SIGTERM")
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=10)
                stderr.close()

    def purge_quietly(self):
        if installed() or os.path.exists("/etc/sprayer"):
            with contextlib.suppress(Exception):
                subprocess.run(APT + ["purge", "sprayer"], capture_output=True, timeout=300,
                               env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


if __name__ == "__main__":
    harness.main()
