"""/metrics end to end: the exposition passes `promtool check metrics`, the values follow the
traffic sent (requests by server, status class and reason; latency histograms; owned users
from the ownership table; epoch), and a real Prometheus server started here scrapes sprayer
and answers a query through its HTTP API with the value sprayer exports."""

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Sprayer, SqlitePool, TestCase, wait_until  # noqa: E402

USERS = {"alice": "pool1", "bob": "pool1", "carol": "pool1", "dave": "pool2", "erin": "pool2"}
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool")

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$')


def parse_metrics(text):
    """{(name, frozenset(labels)): value} for every sample line."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            raise AssertionError(f"unparsable sample line: {line!r}")
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


class MetricsTest(TestCase):
    TIMEOUT = 90.0

    @classmethod
    def setUpClass(cls):
        cls.db = SqlitePool()
        cls.addClassCleanup(cls.db.cleanup)
        cls.db.bulk_owners(list(USERS.items()))
        cls.pool = harness.pool(2, db=cls.db.spec, claim=False)
        cls.addClassCleanup(cls.pool.stop)
        config = harness.sprayer_config(
            cls.pool, ownership={"source": "sqlite", "sqlite_path": cls.db.path, "poll_interval": "100ms"})
        cls.alt_port = harness.free_port()
        config["listeners"].append({"name": "alt", "address": f"127.0.0.1:{cls.alt_port}"})
        cls.sprayer = Sprayer(config).start()
        cls.addClassCleanup(cls.sprayer.stop)
        wait_until(lambda: cls.api("/api/v1/ownership")["users"] == len(USERS), 10,
                   what="the ownership snapshot to load")

    @classmethod
    def api(cls, target):
        resp = harness.http_request(cls.sprayer.admin_port, "GET", target, timeout=5)
        if resp.status != 200:
            raise AssertionError(f"GET {target}: {resp.status}")
        return json.loads(resp.body)

    def scrape(self):
        resp = harness.http_request(self.sprayer.admin_port, "GET", "/metrics", timeout=5)
        self.assertStatus(resp, 200, "/metrics")
        self.assertIn("text/plain", resp.header("Content-Type", ""))
        return resp.body.decode()

    def send_users(self, n_each):
        with self.sprayer.client(timeout=10) as c:
            for _ in range(n_each):
                for user in USERS:
                    resp = c.request("POST", f"/Microsoft-Server-ActiveSync?Cmd=Sync&User={user}"
                                             f"&DeviceId=d1&DeviceType=iPhone", body=b"xyz")
                    self.assertStatus(resp, 200, f"Sync for {user}")
                    self.assertEqual(resp.header("X-Served-By"), USERS[user], f"owner of {user}")

    def test_a_promtool_accepts_the_exposition(self):
        if not PROMTOOL:
            self.skipTest("promtool not installed (Debian package prometheus; scripts/install-deps.sh test)")
        self.send_users(1)
        text = self.scrape()
        proc = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
        self.assertEqual(proc.returncode, 0, f"promtool check metrics:\n{proc.stdout.decode()}{proc.stderr.decode()}")
        for name in ("sprayer_requests_completed_total", "sprayer_request_duration_seconds",
                     "sprayer_upstream_connect_duration_seconds", "sprayer_upstream_first_byte_seconds",
                     "sprayer_server_owned_users", "sprayer_server_state", "sprayer_ownership_epoch",
                     "sprayer_tls_handshakes_total", "sprayer_downstream_connections"):
            self.assertIn(f"# TYPE {name} ", text, f"family {name} missing")
        for user in USERS:
            self.assertNotIn(user, text, "a user name leaked into the metrics")

    def test_b_values_follow_traffic_and_ownership(self):
        before = parse_metrics(self.scrape())
        self.send_users(4)
        # A worker counts a request just after its last byte went out: wait for all 20.
        want = (value(before, "sprayer_request_duration_seconds_count") or 0) + 20
        after = wait_until(lambda: (lambda m: value(m, "sprayer_request_duration_seconds_count") >= want and m)(
            parse_metrics(self.scrape())), 5, what="20 requests counted")

        def delta(name, **labels):
            return (value(after, name, **labels) or 0) - (value(before, name, **labels) or 0)

        self.assertEqual(delta("sprayer_requests_completed_total", server="pool1", code="2xx", reason="owner"), 12)
        self.assertEqual(delta("sprayer_requests_completed_total", server="pool2", code="2xx", reason="owner"), 8)
        self.assertEqual(delta("sprayer_request_duration_seconds_count"), 20)
        self.assertGreater(delta("sprayer_request_duration_seconds_sum"), 0)
        self.assertEqual(delta("sprayer_upstream_first_byte_seconds_count"), 20)
        inf = value(after, "sprayer_request_duration_seconds_bucket", le="+Inf")
        self.assertEqual(inf, value(after, "sprayer_request_duration_seconds_count"))
        self.assertGreaterEqual(delta("sprayer_upstream_sent_bytes_total"), 20 * 3)
        self.assertGreater(delta("sprayer_downstream_received_bytes_total"), 0)
        self.assertEqual(value(after, "sprayer_server_owned_users", server="pool1"), 3)
        self.assertEqual(value(after, "sprayer_server_owned_users", server="pool2"), 2)
        self.assertEqual(value(after, "sprayer_server_state", server="pool1", state="up"), 1)
        self.assertEqual(value(after, "sprayer_server_up", server="pool2"), 1)
        self.assertEqual(value(after, "sprayer_ownership_users"), len(USERS))
        self.assertGreater(value(after, "sprayer_ownership_epoch"), 0)
        self.assertGreater(value(after, "sprayer_ownership_snapshot_bytes"), 0)
        self.assertEqual(value(after, "sprayer_ownership_source_state", state="ok"), 1)
        age = value(after, "sprayer_ownership_snapshot_age_seconds")
        self.assertIsNotNone(age)
        self.assertLess(age, 5)
        self.assertGreaterEqual(value(after, "sprayer_uptime_seconds"), 0)

        # An owner in maintenance: its users are taken over and counted so.
        self.post("/api/v1/servers/pool2/maintenance")
        try:
            wait_until(lambda: value(parse_metrics(self.scrape()), "sprayer_server_state", server="pool2",
                                     state="maintenance") == 1, 5, what="pool2 in maintenance in /metrics")
            with self.sprayer.client(timeout=10) as c:
                resp = c.request("POST", "/Microsoft-Server-ActiveSync?Cmd=Sync&User=dave&DeviceId=d1&DeviceType=x",
                                 body=b"x")
                self.assertStatus(resp, 200, "dave taken over")
            final = wait_until(lambda: (lambda m: value(m, "sprayer_requests_completed_total", server="pool1",
                                                        code="2xx", reason="takeover") and m)(
                parse_metrics(self.scrape())), 5, what="the takeover counted")
            self.assertEqual(value(final, "sprayer_requests_completed_total", server="pool1", code="2xx",
                                   reason="takeover"), 1)
            self.assertEqual(value(final, "sprayer_server_up", server="pool2"), 0)
        finally:
            self.post("/api/v1/servers/pool2/ready")

    def post(self, target):
        resp = harness.http_request(self.sprayer.admin_port, "POST", target, timeout=5, headers=harness.ADMIN_WRITE)
        self.assertStatus(resp, 200, f"POST {target}")

    def test_b2_connections_by_listener(self):
        before = parse_metrics(self.scrape())
        self.send_users(1)  # on the first listener, "http"
        with harness.HttpClient(self.alt_port) as c:
            self.assertStatus(c.request("GET", "/traveler?action=getStatus"), 200, "on the alt listener")
            now = wait_until(lambda: (lambda m: value(m, "sprayer_downstream_connections", listener="alt") == 1 and m)(
                parse_metrics(self.scrape())), 5, what="the open connection on alt")

            def delta(name, **labels):
                return (value(now, name, **labels) or 0) - (value(before, name, **labels) or 0)

            self.assertEqual(delta("sprayer_downstream_connections_accepted_total", listener="alt"), 1)
            self.assertGreaterEqual(delta("sprayer_downstream_connections_accepted_total", listener="http"), 1)
            # Plain listeners: their TLS series are there, at 0.
            self.assertEqual(value(now, "sprayer_tls_handshakes_total", listener="alt"), 0)
            self.assertIsNone(value(now, "sprayer_downstream_connections"), "no unlabelled series beside them")
        wait_until(lambda: value(parse_metrics(self.scrape()), "sprayer_downstream_connections", listener="alt") == 0,
                   5, what="the closed connection to leave the gauge")

    def test_c_real_prometheus_scrapes_sprayer(self):
        if not os.path.exists(PROMETHEUS):
            self.skipTest("prometheus not installed (Debian package prometheus; scripts/install-deps.sh test)")
        port = harness.free_port()
        data_dir = harness.scratch_path("prometheus-data")
        os.remove(data_dir)
        os.mkdir(data_dir)
        config = harness.scratch_path("prometheus") + ".yml"
        with open(config, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                    "scrape_configs:\n  - job_name: sprayer\n    static_configs:\n"
                    f"      - targets: ['127.0.0.1:{self.sprayer.admin_port}']\n")
        log_path = harness.scratch_path("prometheus.log")
        with open(log_path, "wb") as log:
            proc = harness._spawn([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={data_dir}",
                                   f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h"],
                                  log, log)
        self.addCleanup(lambda: (proc.kill(), proc.wait(timeout=10)))

        def query(expr):
            url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
            with urllib.request.urlopen(url, timeout=3) as r:
                doc = json.load(r)
            if doc.get("status") != "success":
                raise AssertionError(f"query {expr}: {doc}")
            return doc["data"]["result"]

        def owned():
            if proc.poll() is not None:
                raise AssertionError(f"prometheus exited ({proc.returncode}):\n{harness.read_text(log_path)[-3000:]}")
            result = query('sprayer_server_owned_users{server="pool1"}')
            return result and float(result[0]["value"][1])

        try:
            got = wait_until(owned, 45, interval=0.5, what="Prometheus to scrape sprayer's owned users")
        except harness.WaitTimeout:
            self.fail(f"no sample in Prometheus:\n{harness.read_text(log_path)[-3000:]}")
        self.assertEqual(got, 3)
        up = query('up{job="sprayer"}')
        self.assertEqual(float(up[0]["value"][1]), 1, "Prometheus sees the target up")


class TimeoutsLongPollsProcessTest(TestCase):
    """Timeouts by side and kind, Pings in their own histogram (not in the request latency
    one), and the process_* metrics Prometheus clients export, read from /proc."""
    TIMEOUT = 60.0

    @classmethod
    def setUpClass(cls):
        cls.pool = harness.pool(1, args=["--ping-hold", "400ms"])
        cls.addClassCleanup(cls.pool.stop)
        config = harness.sprayer_config(cls.pool, workers=1, timeouts={
            "client_header": "300ms", "upstream_idle": "200ms", "upstream_response": "10m"})
        cls.sprayer = Sprayer(config).start()
        cls.addClassCleanup(cls.sprayer.stop)

    def scrape(self):
        resp = harness.http_request(self.sprayer.admin_port, "GET", "/metrics", timeout=5)
        self.assertStatus(resp, 200, "/metrics")
        return resp.body.decode()

    def test_a_ping_goes_to_the_long_poll_histogram(self):
        before = parse_metrics(self.scrape())
        resp = self.sprayer.request("POST", "/Microsoft-Server-ActiveSync?Cmd=Ping&User=amy&DeviceId=d1"
                                            "&DeviceType=iPhone", body=b"x")
        self.assertStatus(resp, 200, "the Ping")
        resp = self.sprayer.request("POST", "/Microsoft-Server-ActiveSync?Cmd=Sync&User=amy&DeviceId=d1"
                                            "&DeviceType=iPhone", body=b"x")
        self.assertStatus(resp, 200, "the Sync")
        after = wait_until(lambda: (lambda m: value(m, "sprayer_request_duration_seconds_count") ==
                                    (value(before, "sprayer_request_duration_seconds_count") or 0) + 1 and m)(
            parse_metrics(self.scrape())), 5, what="the Sync counted")
        count = "sprayer_long_poll_duration_seconds_count"
        self.assertEqual(value(after, count) - (value(before, count) or 0), 1, "the Ping, alone")
        self.assertGreaterEqual(value(after, "sprayer_long_poll_duration_seconds_sum"), 0.4)
        # Held 400 ms: in the 1 s bucket, which the request histogram would have smeared.
        self.assertEqual(value(after, "sprayer_long_poll_duration_seconds_bucket", le="1"), 1)
        bounds = sorted(float(dict(k[1])["le"]) for k in after
                        if k[0] == "sprayer_long_poll_duration_seconds_bucket" and dict(k[1])["le"] != "+Inf")
        self.assertEqual(bounds[-1], 600, "buckets stop at timeouts.upstream_response (10m)")

    def test_b_timeouts_by_side_and_kind(self):
        def timeouts(side, kind):
            return harness.metric(self.sprayer.admin_port, "sprayer_timeouts_total", side=side, kind=kind)

        header_before = timeouts("client", "header")
        with self.sprayer.client(timeout=10) as c:
            c.send(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finished
            resp = c.read_response(timeout=10)
        self.assertEqual(resp.status, 408)
        wait_until(lambda: timeouts("client", "header") == header_before + 1, 5, what="the header timeout counted")

        idle_before = timeouts("upstream", "idle")
        self.assertStatus(self.sprayer.request("GET", "/traveler?action=getStatus"), 200,
                          "a request that leaves a pooled connection")
        wait_until(lambda: timeouts("upstream", "idle") >= idle_before + 1, 5,
                   what="the pooled connection's idle timeout counted")
        self.assertEqual(timeouts("upstream", "response"), 0)
        self.assertEqual(timeouts("client", "send"), 0)

    def test_c_process_metrics(self):
        text = self.scrape()
        if PROMTOOL:
            proc = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True,
                                  timeout=30)
            self.assertEqual(proc.returncode, 0, proc.stdout.decode() + proc.stderr.decode())
        m = parse_metrics(text)
        with open(f"/proc/{self.sprayer.pid}/limits") as f:
            soft = next(line.split()[3] for line in f if line.startswith("Max open files"))
        self.assertEqual(value(m, "process_max_fds"), float(soft))
        fds = len(os.listdir(f"/proc/{self.sprayer.pid}/fd"))
        self.assertGreater(value(m, "process_open_fds"), 5)
        self.assertLess(abs(value(m, "process_open_fds") - fds), 5, f"/proc says {fds}")
        rss_kib = self.sprayer.rss_kib()
        self.assertGreater(value(m, "process_resident_memory_bytes"), 1 << 20)
        self.assertLess(abs(value(m, "process_resident_memory_bytes") / 1024 - rss_kib), rss_kib / 2)
        self.assertGreaterEqual(value(m, "process_cpu_seconds_total"), 0)
        self.assertLessEqual(value(m, "process_cpu_seconds_total"), self.sprayer.cpu_seconds() + 0.05)
        self.assertEqual(value(m, "process_start_time_seconds"), value(m, "sprayer_start_time_seconds"))
        self.assertIn("# TYPE process_cpu_seconds_total counter", text)


if __name__ == "__main__":
    harness.main()
