"""The /status page in a real headless Chromium, driven through chromedriver's WebDriver HTTP
API (stdlib urllib only): the page loads with no external assets, lists the servers with
their state, a button click without the token is refused, and with the token typed in it
changes a server's state (checked through the JSON API); a screenshot is a real PNG.
/api/v1/status, the JSON twin, is checked against what sprayer knows."""

import base64
import json
import os
import shutil
import struct
import sys
import threading
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Sprayer, SqlitePool, TestCase, wait_until  # noqa: E402

TOKEN = "status-page-token-1"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


class WebDriver:
    """The few W3C WebDriver calls this test needs, over plain HTTP."""

    def __init__(self, port):
        self.base = f"http://127.0.0.1:{port}"
        self.session = None

    def call(self, method, path, body=None, timeout=30):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.load(r)["value"]
        except urllib.error.HTTPError as e:
            raise AssertionError(f"WebDriver {method} {path}: {e.code} {e.read()[:500]!r}") from None

    def start(self, user_data_dir):
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync",
                         f"--user-data-dir={user_data_dir}", "--window-size=1200,800"],
            }}}}
        self.session = self.call("POST", "/session", caps, timeout=60)["sessionId"]

    def s(self, path):
        return f"/session/{self.session}{path}"

    def get(self, url):
        self.call("POST", self.s("/url"), {"url": url})

    def script(self, source, *args):
        return self.call("POST", self.s("/execute/sync"), {"script": source, "args": list(args)})

    def find(self, css):
        value = self.call("POST", self.s("/element"), {"using": "css selector", "value": css})
        return next(iter(value.values()))

    def click(self, element):
        self.call("POST", self.s(f"/element/{element}/click"), {})

    def type(self, element, text):
        self.call("POST", self.s(f"/element/{element}/value"), {"text": text})

    def accept_alert(self):
        self.call("POST", self.s("/alert/accept"), {})

    def dismiss_alert(self):
        self.call("POST", self.s("/alert/dismiss"), {})

    def alert_text(self):
        return self.call("GET", self.s("/alert/text"))

    def screenshot(self):
        return base64.b64decode(self.call("GET", self.s("/screenshot")))

    def quit(self):
        if self.session:
            try:
                self.call("DELETE", self.s(""), timeout=15)
            except Exception:  # noqa: BLE001 - best effort; the process is killed anyway
                pass
            self.session = None


def png_size(data):
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise AssertionError(f"not a PNG: {data[:16]!r}")
    return struct.unpack(">II", data[16:24])


class StatusPageTest(TestCase):
    TIMEOUT = 120.0

    @classmethod
    def setUpClass(cls):
        cls.db = SqlitePool()
        cls.addClassCleanup(cls.db.cleanup)
        cls.db.bulk_owners([("amy", "pool1"), ("ben", "pool1"), ("cat", "pool2")])
        cls.pool = harness.pool(2, db=cls.db.spec, claim=False, args=["--ping-hold", "6s"])
        cls.addClassCleanup(cls.pool.stop)
        config = harness.sprayer_config(
            cls.pool, ownership={"source": "sqlite", "sqlite_path": cls.db.path, "poll_interval": "100ms"})
        config["admin"]["token"] = TOKEN
        cls.sprayer = Sprayer(config).start()
        cls.addClassCleanup(cls.sprayer.stop)
        cls.admin = f"http://127.0.0.1:{cls.sprayer.admin_port}"

    def api(self, target):
        with urllib.request.urlopen(self.admin + target, timeout=5) as r:
            return json.load(r)

    def server(self, sid):
        return next(s for s in self.api("/api/v1/servers")["servers"] if s["id"] == sid)

    def test_a_json_status(self):
        st = wait_until(lambda: (lambda s: s["ownership"]["users"] == 3 and s)(self.api("/api/v1/status")), 10,
                        what="the snapshot in /api/v1/status")
        self.assertEqual(st["ownership"]["state"], "ok")
        self.assertTrue(st["ownership"]["configured"])
        self.assertGreater(st["ownership"]["epoch"], 0)
        self.assertLess(st["ownership"]["snapshot_age_seconds"], 5)
        self.assertGreaterEqual(st["uptime_seconds"], 0)
        self.assertTrue(st["version"])
        self.assertFalse(st["shutting_down"])
        owned = {s["id"]: s["owned_users"] for s in st["servers"]}
        self.assertEqual(owned, {"pool1": 2, "pool2": 1})
        self.assertEqual({s["state"] for s in st["servers"]}, {"up"})

    def test_b_page_in_chromium(self):
        with urllib.request.urlopen(self.admin + "/status", timeout=5) as r:
            self.assertIn("text/html", r.headers["Content-Type"])
            html = r.read().decode()
        for external in ("src=", "<link", "http://", "https://", "@import"):
            self.assertNotIn(external, html, "the page must not load external assets")
        if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
            self.skipTest("chromium / chromedriver not installed (scripts/install-deps.sh test)")

        port = harness.free_port()
        log_path = harness.scratch_path("chromedriver.log")
        with open(log_path, "wb") as log:
            driver_proc = harness._spawn([CHROMEDRIVER, f"--port={port}", "--allowed-ips=127.0.0.1"], log, log)
        self.addCleanup(lambda: (driver_proc.kill(), driver_proc.wait(timeout=10)))
        wd = WebDriver(port)
        wait_until(lambda: wd.call("GET", "/status", timeout=2).get("ready"), 20, interval=0.1,
                   what="chromedriver to listen")
        profile = harness.scratch_path("chromium-profile")
        os.remove(profile)
        try:
            wd.start(profile)
        except (AssertionError, OSError) as e:
            self.skipTest(f"chromium cannot start here: {e}\n{harness.read_text(log_path)[-2000:]}")
        self.addCleanup(wd.quit)

        wd.get(self.admin + "/status")
        rows = wait_until(lambda: wd.script(
            "if (document.body.dataset.loaded !== '1') return null;"
            "return Array.from(document.querySelectorAll('#servers tbody tr'))"
            ".map(r => [r.dataset.server, r.querySelector('[data-field=state]').textContent]);"), 20,
            interval=0.1, what="the page to render the servers")
        self.assertEqual(sorted(rows), [["pool1", "up"], ["pool2", "up"]])
        self.assertEqual(wd.script("return document.getElementById('source').textContent"), "ok")
        self.assertEqual(wd.script("return document.getElementById('users').textContent"), "3")

        # Maintenance asks first; cancelled, nothing changes.
        wd.click(wd.find('tr[data-server="pool2"] button[data-action="maintenance"]'))
        self.assertIn("maintenance", wait_until(lambda: self.try_alert(wd), 10, interval=0.1,
                                                what="the confirm before maintenance"))
        wd.dismiss_alert()
        msg = wait_until(lambda: wd.script("return document.getElementById('msg').textContent") or None, 10,
                         interval=0.1, what="the page to say the action was cancelled")
        self.assertIn("cancelled", msg)
        self.assertEqual(self.server("pool2")["admin"], "ready")

        # Without the token the API refuses, and the page says so.
        wd.click(wd.find('tr[data-server="pool2"] button[data-action="maintenance"]'))
        wait_until(lambda: self.try_alert(wd), 10, interval=0.1, what="the confirm before maintenance")
        wd.accept_alert()
        # The cancelled click's message stays until the refused call's answer replaces it.
        msg = wait_until(lambda: (lambda m: m if m and "cancelled" not in m else None)(
            wd.script("return document.getElementById('msg').textContent")), 10,
            interval=0.1, what="the page to report the refused click")
        self.assertIn("401", msg)
        self.assertEqual(self.server("pool2")["admin"], "ready")

        # With the token typed in, the click puts pool2 in maintenance.
        wd.type(wd.find("#token"), TOKEN)
        wd.click(wd.find('tr[data-server="pool2"] button[data-action="maintenance"]'))
        wait_until(lambda: self.try_alert(wd), 10, interval=0.1, what="the confirm before maintenance")
        wd.accept_alert()
        wait_until(lambda: self.server("pool2")["admin"] == "maintenance", 10, interval=0.1,
                   what="pool2 in maintenance after the click")
        self.assertEqual(self.server("pool2")["state"], "maintenance")
        shown = wait_until(lambda: wd.script(
            "const c = document.querySelector('tr[data-server=pool2] [data-field=state]');"
            "return c && c.textContent === 'maintenance' ? c.className : null;"), 10, interval=0.1,
            what="the page to show pool2 in maintenance")
        self.assertEqual(shown, "maintenance")

        png = wd.screenshot()
        width, height = png_size(png)
        self.assertGreaterEqual(width, 400)
        self.assertGreaterEqual(height, 300)
        self.assertGreater(len(png), 5000, "a screenshot of a rendered page, not a blank one")
        with open(harness.scratch_path("status") + ".png", "wb") as f:
            f.write(png)

        wd.click(wd.find('tr[data-server="pool2"] button[data-action="ready"]'))
        wait_until(lambda: self.server("pool2")["admin"] == "ready", 10, interval=0.1,
                   what="pool2 ready again after the click")

        self.plots_move_under_load(wd)

    @staticmethod
    def try_alert(wd):
        try:
            return wd.alert_text()
        except AssertionError:  # no alert open yet
            return None

    def plots_move_under_load(self, wd):
        """Under load the page shows pool1's address, rate, latency and a parked Ping, and its
        sparkline (and the connections plot) change from one sample to the next."""
        def cells():
            return wd.script(
                "const r = document.querySelector('tr[data-server=pool1]'); if (!r) return null;"
                "return {points: r.querySelector('[data-field=spark]').dataset.points || '',"
                " rate: r.querySelector('[data-field=rate]').textContent,"
                " parked: r.querySelector('[data-field=parked]').textContent,"
                " conns: document.getElementById('plot-conns').dataset.points || '',"
                " text: r.textContent};")

        users = ["amy", "ben"]
        load = harness.SyncLoad(self.sprayer.port, lambda rng: (
            (u := rng.choice(users),), f"/Microsoft-Server-ActiveSync?Cmd=Sync&User={u}&DeviceId=d1&DeviceType=x"),
            threads=2, bound=60).start()
        self.addCleanup(load.stop)
        ping_result = []

        def ping():
            with self.sprayer.client(timeout=20) as c:
                ping_result.append(c.request("POST", "/Microsoft-Server-ActiveSync?Cmd=Ping&User=amy&DeviceId=d2"
                                                     "&DeviceType=x", body=b"p").status)
        pinger = threading.Thread(target=ping, daemon=True)
        pinger.start()
        self.addCleanup(pinger.join, 20)

        first = wait_until(lambda: (lambda c: c and c["points"].count(",") >= 2 and float(c["rate"] or 0) > 0
                                    and c)(cells()), 20, interval=0.2,
                           what="pool1's rate and sparkline under load")
        parked = wait_until(lambda: (lambda c: c and c["parked"] == "1" and c)(cells()), 15, interval=0.2,
                            what="the parked Ping on the page")
        moved = wait_until(lambda: (lambda c: c and c["points"] != first["points"]
                                    and c["conns"] != first["conns"] and c)(cells()), 15, interval=0.2,
                           what="the sparkline to move with the next sample")
        self.assertIn(self.pool[0].address, moved["text"], "the server's address is shown")
        self.assertIn("weight 1", moved["text"])
        self.assertRegex(moved["text"], r"\d+(\.\d+)? ms / \d+(\.\d+)? ms", "p50 / p99 shown")
        self.assertTrue(parked)
        wd.script("window.scrollTo(0, 0)")
        png = wd.screenshot()
        self.assertGreater(len(png), 5000)
        with open(harness.scratch_path("status-under-load") + ".png", "wb") as f:
            f.write(png)
        load.stop()
        self.assertGreater(load.count(), 0)
        self.assertTrue(all(r[-2] == 200 for r in load.snapshot()), "every request under load answered 200")
        pinger.join(20)
        self.assertEqual(ping_result, [200])


if __name__ == "__main__":
    harness.main()
