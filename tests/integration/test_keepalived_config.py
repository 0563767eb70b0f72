"""The pair's keepalived files (conf/deploy/keepalived/) checked by the real keepalived.

`keepalived -t` parses the shipped config with its settings block filled in; broken variants
must be refused with a non-zero exit: a syntax error, a check script in a folder others can
write, enable_script_security without a script user. check-config.sh adds what keepalived
2.2.7's `-t` lets through (a script that is not executable). Needs root (script security
checks switch users) and keepalived; skipped otherwise.
"""

import os
import pwd
import re
import shutil
import subprocess
import tempfile
import unittest

import harness

KEEPALIVED = shutil.which("keepalived")
DEPLOY = os.path.join(harness.SOURCE_DIR, "conf", "deploy", "keepalived")
CHECK_CONFIG = os.path.join(DEPLOY, "check-config.sh")


def ethernet_interface():
    """An Ethernet interface of this machine: keepalived -t wants the VRRP interface to exist
    (and not be loopback)."""
    for name in sorted(os.listdir("/sys/class/net")):
        try:
            with open(f"/sys/class/net/{name}/type") as f:
                if f.read().strip() == "1":
                    return name
        except OSError:
            continue
    return None


IFACE = ethernet_interface()


def skip_reason():
    if os.geteuid() != 0:
        return "needs root (keepalived's script security switches users)"
    if KEEPALIVED is None:
        return "keepalived is not installed (scripts/install-deps.sh test)"
    if IFACE is None:
        return "no Ethernet interface for keepalived -t to bind VRRP to"
    return None


@unittest.skipIf(skip_reason() is not None, f"keepalived config test skipped: {skip_reason()}")
class KeepalivedConfigTest(harness.TestCase):
    TIMEOUT = 60.0

    def setUp(self):
        super().setUp()
        # Root-owned and 0755 up to /: keepalived refuses scripts under folders others can write.
        self.dir = tempfile.mkdtemp(prefix="sprayer-ka-", dir="/run")
        os.chmod(self.dir, 0o755)
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.script = os.path.join(self.dir, "sprayer-healthz.sh")
        shutil.copy(os.path.join(DEPLOY, "sprayer-healthz.sh"), self.script)
        os.chmod(self.script, 0o755)

    def render(self, script=None, user="nobody", edit=None):
        with open(os.path.join(DEPLOY, "keepalived.conf")) as f:
            text = f.read()
        settings = {"IFACE": IFACE, "CHECK_SCRIPT": script or self.script, "SCRIPT_USER": user,
                    "SPRAYER_BIN": harness.SPRAYER_BIN}
        for key, value in settings.items():
            text, n = re.subn(rf"^\${key}=.*$", f"${key}={value}", text, flags=re.M)
            self.assertEqual(n, 1, f"keepalived.conf must have one ${key}= line")
        if edit:
            text = edit(text)
        path = os.path.join(self.dir, "keepalived.conf")
        with open(path, "w") as f:
            f.write(text)
        return path

    def keepalived_t(self, path):
        proc = subprocess.run([KEEPALIVED, "-t", "-f", path], capture_output=True, text=True, timeout=20)
        return proc.returncode, proc.stdout + proc.stderr

    def check_config(self, path):
        proc = subprocess.run(["sh", CHECK_CONFIG, path], capture_output=True, text=True, timeout=30,
                              env={**os.environ, "KEEPALIVED": KEEPALIVED})
        return proc.returncode, proc.stdout + proc.stderr

    def test_shipped_config_is_valid(self):
        # With script_user root keepalived 2.2.7 runs the whole test and exits 0.
        rc, out = self.keepalived_t(self.render(user="root"))
        self.assertEqual(rc, 0, out)
        self.assertEqual(out.strip(), "", "keepalived -t must have nothing to say about the shipped config")
        # With an unprivileged script user (as shipped) it ends by SIGTERM on itself and says
        # nothing; check-config.sh knows that and checks the script itself.
        rc, out = self.keepalived_t(self.render())
        self.assertIn(rc, (0, -15), out)
        self.assertEqual(out.strip(), "")
        rc, out = self.check_config(self.render())
        self.assertEqual(rc, 0, out)
        self.assertIn(": ok", out)
        # The shipped settings block is complete (the test filled in this machine's interface).
        with open(os.path.join(DEPLOY, "keepalived.conf")) as f:
            shipped = f.read()
        for key in ("IFACE", "VIP", "VRID", "PRIORITY", "SPRAYER_BIN", "SPRAYER_CONFIG", "CHECK_SCRIPT",
                    "HEALTHZ_URL", "SCRIPT_USER"):
            self.assertRegex(shipped, rf"(?m)^\${key}=\S")
        for needed in ("vrrp_version 3", "nopreempt", "enable_script_security", "script_user ${SCRIPT_USER}",
                       "vrrp_garp_master_refresh 1", "init_fail", "interval 1"):
            self.assertIn(needed, shipped)
        advert = float(re.search(r"(?m)^\s*advert_int\s+(\S+)", shipped).group(1))
        self.assertLess(advert, 1.0)

    def test_syntax_error_is_refused(self):
        rc, out = self.keepalived_t(self.render(user="root", edit=lambda t: t.replace("nopreempt", "nopreemptt")))
        self.assertNotEqual(rc, 0)
        self.assertIn("nopreemptt", out)
        rc, out = self.check_config(self.render(edit=lambda t: t.replace("nopreempt", "nopreemptt")))
        self.assertNotEqual(rc, 0, out)

    def test_script_in_world_writable_folder_is_refused(self):
        folder = os.path.join(self.dir, "open")
        os.mkdir(folder)
        os.chmod(folder, 0o777)
        script = os.path.join(folder, "sprayer-healthz.sh")
        shutil.copy(self.script, script)
        os.chmod(script, 0o755)
        rc, out = self.keepalived_t(self.render(script=script, user="root"))
        self.assertNotEqual(rc, 0, out)
        self.assertIn("insecure", out)
        rc, out = self.check_config(self.render(script=script))
        self.assertNotEqual(rc, 0, out)
        self.assertIn("writable by others", out)

    def test_script_security_without_script_user_is_refused(self):
        try:
            pwd.getpwnam("keepalived_script")
            self.skipTest("a keepalived_script user exists here, so keepalived would use it")
        except KeyError:
            pass
        rc, out = self.keepalived_t(self.render(edit=lambda t: t.replace("  script_user ${SCRIPT_USER}\n", "")))
        self.assertNotEqual(rc, 0, out)
        self.assertIn("Unable to set default user", out)

    def test_non_executable_script_is_refused(self):
        os.chmod(self.script, 0o644)
        rc, out = self.check_config(self.render())
        self.assertNotEqual(rc, 0, out)
        self.assertIn("not executable", out)

    def test_missing_script_user_and_unsafe_owner_are_refused(self):
        rc, out = self.check_config(self.render(user="no-such-user-sprayer"))
        self.assertNotEqual(rc, 0, out)
        os.chmod(self.script, 0o775)  # group-writable
        rc, out = self.check_config(self.render())
        self.assertNotEqual(rc, 0, out)
        self.assertIn("writable by others", out)


if __name__ == "__main__":
    harness.main()
