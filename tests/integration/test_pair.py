"""Active/standby pair: two sprayers behind one virtual IP, held by real keepalived (VRRPv3).

The test builds its own network out of namespaces: a bridge in a namespace of its own, and a
client, two sprayers and the poolsim servers each in a namespace joined to that bridge by a veth
pair. Both sprayers run the same configuration (listening on the VIP with freebind), read the
same SQLite ownership table and share TLS ticket keys; keepalived runs the shipped
conf/deploy/keepalived/keepalived.conf with only its settings block filled in. A client in its
namespace keeps sending requests for many users to the VIP while the active sprayer is killed,
stopped, cut off the network and brought back. Needs root and `ip netns`; skipped otherwise.

Both also share drain and maintenance through each other's admin API (admin.peer): a server
drained on the active stays drained on the standby that takes over, and an undrain made there
reaches the old active once it is back. LoopbackPairTest runs the same exchange with two
sprayers on loopback (no namespaces, no keepalived), so it runs on every machine.

Run alone as a script, it is also the load client (`test_pair.py --load-client ...`), started
inside the client namespace: stdlib only, and decided before the harness is imported.
"""

import json
import os
import socket
import sys
import threading
import time


# ---------------------------------------------------------------------------------------------
# The load client (runs inside the client namespace).

def load_client(argv):
    """--load-client VIP PORT USERS THREADS OUT STOPFILE MAXSECONDS: each thread cycles over its
    share of users, one request per new connection, and appends one JSON line per attempt:
    start/end (CLOCK_MONOTONIC, shared with the test), user, status, served_by, owner, error."""
    vip, port, users, threads, out_path, stop_path, max_seconds = argv
    port, users, threads, max_seconds = int(port), int(users), int(threads), float(max_seconds)
    out = open(out_path, "a", buffering=1)
    lock = threading.Lock()
    deadline = time.monotonic() + max_seconds

    def one(user):
        start = time.monotonic()
        rec = {"start": start, "user": user, "status": 0, "served_by": "", "owner": "", "error": ""}
        try:
            # A SYN sent while the VIP moves is lost (the old holder has dropped the address,
            # the client still has its MAC): retry it after 100 ms, as a LAN client would.
            with socket.create_connection((vip, port), timeout=0.1) as s:
                s.settimeout(1.0)
                s.sendall((f"GET /Microsoft-Server-ActiveSync?Cmd=Sync&User={user}&DeviceId=d1&DeviceType=t "
                           f"HTTP/1.1\r\nHost: mail.example.com\r\nConnection: close\r\n\r\n").encode())
                data = b""
                while b"\r\n\r\n" not in data and len(data) < 65536:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
            rec["status"] = int(head[0].split()[1]) if head and head[0].startswith("HTTP/") else 0
            for line in head[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "x-served-by":
                    rec["served_by"] = value.strip()
                elif name.strip().lower() == "x-owner":
                    rec["owner"] = value.strip()
        except (OSError, ValueError, IndexError) as e:
            rec["error"] = type(e).__name__
        rec["end"] = time.monotonic()
        with lock:
            out.write(json.dumps(rec) + "\n")
        return rec

    def worker(k):
        mine = [f"user{i:03d}" for i in range(users) if i % threads == k]
        i = 0
        while time.monotonic() < deadline and not os.path.exists(stop_path):
            rec = one(mine[i % len(mine)])
            i += 1
            # Steady, not flooding: a short pause after an answer, a shorter one after a failure.
            time.sleep(0.02 if rec["status"] else 0.005)

    ts = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=max_seconds + 5)
    return 0


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "--load-client":
    sys.exit(load_client(sys.argv[2:]))


# ---------------------------------------------------------------------------------------------
# The test.

import contextlib  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import unittest  # noqa: E402

import harness  # noqa: E402
from harness import Sprayer, wait_until  # noqa: E402

IP = shutil.which("ip")
KEEPALIVED = shutil.which("keepalived")
CURL = shutil.which("curl")
OPENSSL = shutil.which("openssl")
DEPLOY = os.path.join(harness.SOURCE_DIR, "conf", "deploy", "keepalived")

SUBNET = "10.213.0"
ADDR = {"cli": f"{SUBNET}.1", "a": f"{SUBNET}.2", "b": f"{SUBNET}.3", "pool": f"{SUBNET}.4"}
VIP = f"{SUBNET}.100"
HTTP_PORT, TLS_PORT = 80, 443
POOL_PORTS = {"pool1": 8001, "pool2": 8002, "pool3": 8003}
USERS = 120
TAKEOVER_KILL_S = 0.5    # the brief: answered again within 500 ms of kill -9
TAKEOVER_STOP_S = 3.0    # a hung sprayer: within 3 s
PRIORITY = {"a": 250, "b": 249}


def why_no_namespaces():
    """None when this machine can run the test, else the reason to skip."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    for name, tool in (("ip", IP), ("keepalived", KEEPALIVED), ("curl", CURL), ("openssl", OPENSSL)):
        if tool is None:
            return f"`{name}` is not installed (scripts/install-deps.sh test)"
    probe = f"sprprobe{os.getpid()}"
    made = subprocess.run([IP, "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    try:
        # The link kinds the test network needs: a bridge, veth pairs, macvlan (keepalived's vmac).
        for argv in (["link", "add", "br0", "type", "bridge"], ["link", "add", "v0", "type", "veth", "peer", "name", "v1"],
                     ["link", "add", "link", "v0", "name", "m0", "type", "macvlan", "mode", "private"]):
            step = subprocess.run([IP, "-n", probe, *argv], capture_output=True, text=True)
            if step.returncode != 0:
                return f"cannot create a {argv[-1] if argv[-1] != 'private' else 'macvlan'} link: {step.stderr.strip()}"
    finally:
        subprocess.run([IP, "netns", "del", probe], capture_output=True)
    return None


def run(argv, timeout=10.0, check=True):
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


class Network:
    """The namespaces, bridge and veth pairs of one run. Names carry a per-run prefix; every
    link lives inside a namespace made here, so deleting the namespaces removes everything."""

    def __init__(self):
        self.prefix = f"spr{os.getpid() % 100000}"
        self.ns = {role: f"{self.prefix}-{role}" for role in ("br", "cli", "a", "b", "pool")}
        self.made = []

    def build(self):
        for name in self.ns.values():
            run([IP, "netns", "add", name])
            self.made.append(name)
            run([IP, "-n", name, "link", "set", "lo", "up"])
        br = self.ns["br"]
        run([IP, "-n", br, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0"])
        run([IP, "-n", br, "link", "set", "br0", "up"])
        for role in ("cli", "a", "b", "pool"):
            port = self.port(role)
            run([IP, "-n", br, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", self.ns[role]])
            run([IP, "-n", br, "link", "set", port, "master", "br0"])
            run([IP, "-n", br, "link", "set", port, "up"])
            run([IP, "-n", self.ns[role], "addr", "add", f"{ADDR[role]}/24", "dev", "eth0"])
            run([IP, "-n", self.ns[role], "link", "set", "eth0", "up"])

    @staticmethod
    def port(role):
        return f"p-{role}"  # the bridge-side end, in the bridge namespace

    def destroy(self):
        for name in reversed(self.made):
            subprocess.run([IP, "netns", "del", name], capture_output=True, timeout=10)
        self.made = []

    def exec_argv(self, role, argv):
        return [IP, "netns", "exec", self.ns[role], *argv]

    def holds_vip(self, role):
        # On the VRRP macvlan interface (use_vmac), not on eth0 itself.
        out = run([IP, "-n", self.ns[role], "-4", "-o", "addr", "show"], check=False).stdout
        return f" {VIP}/" in out

    def vip_holders(self):
        return [r for r in ("a", "b") if self.holds_vip(r)]

    def healthz(self, role):
        out = run(self.exec_argv(role, [CURL, "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "1",
                                        "http://127.0.0.1:9100/healthz"]), check=False).stdout
        return out.strip()


def render_keepalived(role, sprayer_config, script, folder):
    """The shipped config with its settings block filled in for this namespace."""
    with open(os.path.join(DEPLOY, "keepalived.conf")) as f:
        text = f.read()
    settings = {
        "IFACE": "eth0", "VIP": f"{VIP}/24", "VRID": "51", "PRIORITY": str(PRIORITY[role]),
        "SPRAYER_BIN": harness.SPRAYER_BIN, "SPRAYER_CONFIG": sprayer_config, "CHECK_SCRIPT": script,
        "HEALTHZ_URL": "http://127.0.0.1:9100/healthz", "SCRIPT_USER": "nobody",
    }
    for key, value in settings.items():
        text, n = re.subn(rf"^\${key}=.*$", f"${key}={value}", text, flags=re.M)
        assert n == 1, f"keepalived.conf has no single ${key}= line"
    path = os.path.join(folder, f"keepalived-{role}.conf")
    with open(path, "w") as f:
        f.write(text)
    return path


SKIP_REASON = why_no_namespaces() if __name__ == "__main__" else "not run as a script"
ADMIN_TOKEN = "pair-admin-t0ken"
AUTH = [("Authorization", f"Bearer {ADMIN_TOKEN}")]


class LoopbackPairTest(harness.TestCase):
    """Two sprayers on loopback, each naming the other as admin.peer: the admin state exchange
    without namespaces. A drain on A reaches B; with A killed, B keeps it, says once that the
    peer is gone (log and metric) and takes an undrain at once; A, started again with its older
    drain still in its state file, takes the newer undrain from B."""
    TIMEOUT = 90.0

    def setUp(self):
        super().setUp()
        self.pool = harness.pool(2)
        self.addCleanup(self.pool.stop)
        ports = {"a": harness.free_port(), "b": harness.free_port()}
        self.config = {}
        for role, other in (("a", "b"), ("b", "a")):
            config = harness.sprayer_config(self.pool, workers=1, admin_port=ports[role])
            config["admin"].update({"token": ADMIN_TOKEN, "peer": f"http://127.0.0.1:{ports[other]}"})
            config["health"] = {"interval": "500ms"}
            self.config[role] = config
        self.sprayers = {}
        for role in ("a", "b"):
            self.start(role)

    def start(self, role):
        sprayer = Sprayer(self.config[role]).start()
        self.sprayers[role] = sprayer
        self.addCleanup(lambda: sprayer.returncode is None and sprayer.stop())
        return sprayer

    def servers(self, role):
        resp = harness.http_request(self.sprayers[role].admin_port, "GET", "/api/v1/servers", timeout=5)
        self.assertEqual(resp.status, 200, resp.body[:300])
        return json.loads(resp.body)

    def server(self, role, sid):
        return next(s for s in self.servers(role)["servers"] if s["id"] == sid)

    def post(self, role, target):
        started = time.monotonic()
        resp = harness.http_request(self.sprayers[role].admin_port, "POST", target,
                                    headers=[*harness.ADMIN_WRITE, *AUTH], timeout=5)
        self.assertEqual(resp.status, 200, resp.body[:300])
        return time.monotonic() - started

    def test_admin_states_follow_the_pair(self):
        a, b = self.sprayers["a"], self.sprayers["b"]
        for role in ("a", "b"):
            wait_until(lambda r=role: self.servers(r)["peer"]["up"] is True, 10, interval=0.05,
                       what=f"sprayer {role} to exchange admin states with its peer")
        drained_at = time.monotonic()
        self.post("a", "/api/v1/servers/pool1/drain")
        mine = self.server("a", "pool1")
        self.assertEqual((mine["admin"], mine["admin_source"]), ("drain", "api"))
        theirs = wait_until(lambda: (lambda s: s["admin"] == "drain" and s)(self.server("b", "pool1")), 5,
                            interval=0.01, what="the drain to reach the peer")
        reached = time.monotonic() - drained_at
        self.assertEqual(theirs["admin_source"], "peer")
        self.assertEqual(theirs["admin_changed_at_ms"], mine["admin_changed_at_ms"], "one change, one stamp")
        print(f"\n[pair/loopback] a drain on A reached B after {reached * 1000:.0f} ms", flush=True)

        # A dies: B keeps the server drained (no new users for pool1) and says once that A is gone.
        a.kill()
        a.proc.wait(timeout=5)
        a._stderr.close()
        wait_until(lambda: self.servers("b")["peer"]["exchanges_failed"] >= 3, 15, interval=0.1,
                   what="B to try its dead peer a few times")
        self.assertEqual(self.server("b", "pool1")["admin"], "drain")
        self.assertIs(self.servers("b")["peer"]["up"], False)
        self.assertEqual(harness.metric(b.admin_port, "sprayer_admin_peer_up"), 0)
        self.assertGreaterEqual(harness.metric(b.admin_port, "sprayer_admin_peer_exchanges_total", result="failed"), 3)
        gone = [line for line in b.stderr_text().splitlines() if "admin peer" in line and "no exchange" in line]
        self.assertEqual(len(gone), 1, "a dead peer is logged once, not at every exchange:\n" + "\n".join(gone))
        for i in range(10):
            resp = b.request("GET", f"/Microsoft-Server-ActiveSync?Cmd=Sync&User=new{i}&DeviceId=d&DeviceType=x")
            self.assertEqual(resp.header("X-Served-By"), "pool2", f"a drained server takes no new users: {resp.describe()}")

        # An undrain on B does not wait for the dead peer.
        took = self.post("b", "/api/v1/servers/pool1/ready")
        self.assertLess(took, 1.0, "a local change must not wait for a peer that is down")
        self.assertEqual(self.server("b", "pool1")["admin"], "ready")
        print(f"[pair/loopback] undrain on B with A down answered in {took * 1000:.0f} ms", flush=True)

        # A comes back with its own (older) drain in its state file: B's newer undrain wins.
        with open(self.config["a"]["admin"]["state_file"]) as f:
            self.assertRegex(f.read(), r"(?m)^pool1 drain \d+$", "A kept its drain in its state file")
        back_at = time.monotonic()
        self.start("a")
        back = wait_until(lambda: (lambda s: s["admin"] == "ready" and s)(self.server("a", "pool1")), 10,
                          interval=0.02, what="the undrain made on B to reach A once it is back")
        self.assertEqual(back["admin_source"], "peer")
        print(f"[pair/loopback] A restarted: the undrain from B applied {1000 * (time.monotonic() - back_at):.0f} ms "
              f"after its start began", flush=True)
        wait_until(lambda: "admin peer" in b.stderr_text() and "answers again" in b.stderr_text(), 10,
                   what="B to log that its peer answers again")
        self.assertEqual(self.servers("b")["peer"]["up"], True)
        with open(self.config["a"]["admin"]["state_file"]) as f:
            self.assertRegex(f.read(), r"(?m)^pool1 ready \d+$", "A's state file follows the peer's change")

    def test_wrong_token_is_an_unreachable_peer(self):
        b = self.sprayers["b"]
        # Restart A with another token: B's exchanges are refused, and B says why.
        self.sprayers["a"].stop()
        self.config["a"]["admin"]["token"] = "another-t0ken"
        self.start("a")
        peer = wait_until(lambda: (lambda p: "HTTP 403" in p["last_error"] and p)(self.servers("b")["peer"]), 10,
                          interval=0.05, what="B to see its exchanges refused")
        self.assertIs(peer["up"], False)
        self.assertIn("HTTP 403", peer["last_error"])
        self.assertIn("wrong token", peer["last_error"])
        self.assertNotIn(ADMIN_TOKEN, b.stderr_text(), "the token is never logged")


@unittest.skipIf(SKIP_REASON is not None, f"active/standby pair test skipped: {SKIP_REASON}")
class PairTest(harness.TestCase):
    TIMEOUT = 150.0

    @classmethod
    def setUpClass(cls):
        cls.net = Network()
        cls.procs = {}
        cls.ka_pids = []
        # Scripts keepalived runs as an unprivileged user must sit in folders only root can
        # write: /run, not /tmp.
        cls.run_dir = tempfile.mkdtemp(prefix=f"{cls.net.prefix}-", dir="/run")
        os.chmod(cls.run_dir, 0o755)
        harness._reaper.add_cleanup(cls.cleanup)
        try:
            cls.setup_pair()
        except BaseException:
            cls.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.cleanup()

    @classmethod
    def cleanup(cls):
        for proc in list(cls.procs.values()):
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    proc.send_signal(signal.SIGCONT)
                    proc.terminate()
        for proc in list(cls.procs.values()):
            with contextlib.suppress(Exception):
                proc.wait(timeout=5)
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    proc.kill()
        # keepalived's VRRP child, should its parent have died without taking it along.
        for pid_file in cls.ka_pids:
            with contextlib.suppress(OSError, ValueError):
                with open(pid_file) as f:
                    pid = int(f.read().strip())
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if b"keepalived" in f.read():
                        os.kill(pid, signal.SIGKILL)
        cls.procs = {}
        cls.net.destroy()
        if not os.environ.get("SPRAYER_KEEP_TMP"):
            shutil.rmtree(cls.run_dir, ignore_errors=True)
        elif not getattr(cls, "kept_said", False):
            cls.kept_said = True
            sys.stderr.write(f"[pair] logs kept in {cls.run_dir}\n")

    @classmethod
    def spawn(cls, name, role, argv, log):
        """Starts argv inside namespace `role` (None: as it is, e.g. keepalived --namespace)."""
        with open(log, "ab") as out:
            proc = harness._spawn(cls.net.exec_argv(role, argv) if role else argv, out, out)
        cls.procs[name] = proc
        return proc

    @classmethod
    def setup_pair(cls):
        cls.net.build()
        # The pool: one SQLite table, users assigned round-robin before anything starts.
        # WAL: the sprayers' polls and the poolsims' heartbeats do not wait for each other.
        cls.db = harness.SqlitePool(journal_mode="WAL")
        ids = list(POOL_PORTS)
        cls.owner = {f"user{i:03d}": ids[i % len(ids)] for i in range(USERS)}
        cls.db.bulk_owners(sorted(cls.owner.items()))
        for sid, port in POOL_PORTS.items():
            cls.spawn(sid, "pool", [harness.POOLSIM_BIN, "--id", sid, "--listen", f"{ADDR['pool']}:{port}",
                                    "--db", cls.db.spec], os.path.join(cls.run_dir, f"{sid}.log"))
        # TLS: one certificate and one ticket key file, shared by both sprayers.
        cert, key, tickets = (os.path.join(cls.run_dir, n) for n in ("cert.pem", "key.pem", "tickets.key"))
        run([OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-days", "2", "-subj", "/CN=mail.example.com", "-keyout", key, "-out", cert], timeout=30)
        run([OPENSSL, "rand", "-base64", "-out", tickets, "80"])
        config = {
            "workers": 1,
            "listeners": [
                {"name": "http", "address": f"{VIP}:{HTTP_PORT}", "freebind": True},
                {"name": "https", "address": f"{VIP}:{TLS_PORT}", "freebind": True,
                 "tls": {"certificates": [{"cert": cert, "key": key}], "ticket_key_file": tickets}},
            ],
            "servers": [{"id": sid, "address": f"{ADDR['pool']}:{port}"} for sid, port in POOL_PORTS.items()],
            "timeouts": {"upstream_connect": "500ms", "drain": "1s"},
            # Both members run on one file system here: neither keeps admin states in a file;
            # they share them through each other's admin API (admin.peer, set per member below).
            "admin": {"address": "0.0.0.0:9100", "state_file": "", "token": ADMIN_TOKEN},
            "ownership": {"source": "sqlite", "sqlite_path": cls.db.path, "max_staleness": "5s"},
            "health": {"interval": "500ms"},
            "log": {"level": "info"},
        }
        # Same content, two paths: keepalived's track_process tells the sprayers apart by their
        # command line, as both run on one kernel.
        cls.sprayer_config = {}
        for role in ("a", "b"):
            folder = os.path.join(cls.run_dir, f"sprayer-{role}")
            os.mkdir(folder, 0o755)
            path = os.path.join(folder, "sprayer.yaml")
            mine = json.loads(json.dumps(config))
            mine["admin"]["peer"] = f"http://{ADDR[cls.other(role)]}:9100"
            with open(path, "w") as f:
                f.write(harness.to_yaml(mine))
            cls.sprayer_config[role] = path
            cls.start_sprayer(role)
        for role in ("a", "b"):
            harness.wait_until(lambda r=role: cls.net.healthz(r) == "200", 20.0, interval=0.1,
                               what=f"sprayer {role}'s /healthz to answer 200")
        script = os.path.join(cls.run_dir, "sprayer-healthz.sh")
        shutil.copy(os.path.join(DEPLOY, "sprayer-healthz.sh"), script)
        os.chmod(script, 0o755)
        # A first, so that it is the first active; B once A holds the VIP.
        for role in ("a", "b"):
            conf = render_keepalived(role, cls.sprayer_config[role], script, cls.run_dir)
            pids = [os.path.join(cls.run_dir, f"ka-{role}.{kind}.pid") for kind in ("main", "vrrp", "checkers")]
            cls.ka_pids.append(pids[1])
            cls.spawn(f"keepalived-{role}", None,  # the namespace comes from --namespace, not `ip netns exec`
                      [KEEPALIVED, "-n", "-l", "-D", "-P", "--no-syslog", "-f", conf,
                       f"--namespace={cls.net.ns[role]}", "-p", pids[0], "-r", pids[1], "-c", pids[2]],
                      os.path.join(cls.run_dir, f"keepalived-{role}.log"))
            if role == "a":
                harness.wait_until(lambda: cls.net.vip_holders() == ["a"], 20.0, interval=0.05,
                                   what="keepalived A to take the VIP")
        harness.wait_until(lambda: cls.ready_backup("b"), 20.0, interval=0.1,
                           what="keepalived B to become a ready backup")
        for role in ("a", "b"):
            text = cls.log(f"keepalived-{role}")
            for bad in ("disabling", "insecure", "Unknown keyword", "not found"):
                assert bad not in text, f"keepalived {role} complains ({bad}):\n{text[-3000:]}"
        # The steady load, from the client namespace.
        cls.events_path = os.path.join(cls.run_dir, "events.jsonl")
        cls.stop_path = os.path.join(cls.run_dir, "stop-load")
        cls.spawn("client", "cli", [sys.executable, os.path.abspath(__file__), "--load-client", VIP, str(HTTP_PORT),
                                    str(USERS), "4", cls.events_path, cls.stop_path, "120"],
                  os.path.join(cls.run_dir, "client.log"))

    @classmethod
    def start_sprayer(cls, role):
        cls.spawn(f"sprayer-{role}", role, [harness.SPRAYER_BIN, "-c", cls.sprayer_config[role]],
                  os.path.join(cls.run_dir, f"sprayer-{role}.log"))

    @classmethod
    def log(cls, name):
        return harness.read_text(os.path.join(cls.run_dir, f"{name}.log"))

    @classmethod
    def ready_backup(cls, role):
        """keepalived `role` is BACKUP (its last state change) and its /healthz check passes."""
        text = cls.log(f"keepalived-{role}")
        states = re.findall(r"Entering (\w+) STATE", text)
        checks = re.findall(r"sprayer_healthz\S* (succeeded|failed)", text)
        return bool(states) and states[-1] == "BACKUP" and bool(checks) and checks[-1] == "succeeded"

    # --- helpers

    def events(self, since=0.0):
        out = []
        for line in harness.read_text(self.events_path).splitlines():
            with contextlib.suppress(ValueError):
                rec = json.loads(line)
                if rec["start"] >= since:
                    out.append(rec)
        return out

    def wait_answers(self, since, n, timeout=10.0):
        """Waits for n successful answers that started after `since`; returns all events since."""
        def enough():
            return sum(1 for e in self.events(since) if e["status"] == 200) >= n
        harness.wait_until(enough, timeout, interval=0.05, what=f"{n} answers through the VIP")
        return self.events(since)

    def wait_all_users(self, since, timeout=15.0):
        """Waits until every user has been answered at least once since `since`."""
        def all_users():
            return len({e["user"] for e in self.events(since) if e["status"] == 200}) >= USERS
        harness.wait_until(all_users, timeout, interval=0.05, what="every user to be answered")

    def check_routing(self, events, context):
        """Every answer came from the user's owner in the table, the same whichever sprayer was active."""
        answered = [e for e in events if e["status"] == 200]
        self.assertTrue(answered, f"{context}: no answers")
        wrong = [e for e in answered if e["served_by"] != self.owner[e["user"]]]
        self.assertEqual(wrong[:5], [], f"{context}: {len(wrong)} of {len(answered)} answers from another server")
        other = [e for e in events if e["status"] not in (0, 200)]
        self.assertEqual(other[:5], [], f"{context}: answers other than 200")
        return len(answered)

    def active(self):
        holders = self.net.vip_holders()
        self.assertEqual(len(holders), 1, f"exactly one sprayer must hold the VIP, holders: {holders}\n"
                                          f"{self.diagnostics()}")
        return holders[0]

    def diagnostics(self, lines=25):
        out = []
        for name in ("keepalived-a", "keepalived-b", "sprayer-a", "sprayer-b"):
            tail = self.log(name).splitlines()[-lines:]
            out.append(f"--- {name} (last {len(tail)} lines):\n" + "\n".join(tail))
        return "\n".join(out)

    def wait_vip(self, role, timeout):
        start = time.monotonic()
        harness.wait_until(lambda: self.net.vip_holders() == [role], timeout, interval=0.01,
                           what=f"the VIP to move to {role}")
        return time.monotonic() - start

    def assert_vip_stays(self, role, seconds):
        """No flapping: the VIP stays on `role` (and only there) for `seconds`."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.assertEqual(self.net.vip_holders(), [role], "the VIP moved although its holder is healthy")
            time.sleep(0.1)

    def wait_healthy_backup(self, role, timeout=20.0):
        harness.wait_until(lambda: self.net.healthz(role) == "200", timeout, interval=0.1,
                           what=f"sprayer {role}'s /healthz to answer 200 again")
        # keepalived's check needs `rise` passes (one a second) before the instance leaves FAULT.
        harness.wait_until(lambda: self.ready_backup(role), timeout, interval=0.1,
                           what=f"keepalived {role} to become a ready backup again")

    @staticmethod
    def other(role):
        return "b" if role == "a" else "a"

    def tls_session(self, sess_in=None, sess_out=None):
        """One openssl s_client handshake from the client namespace; "New" or "Reused"."""
        argv = [OPENSSL, "s_client", "-connect", f"{VIP}:{TLS_PORT}", "-servername", "mail.example.com",
                "-tls1_2"]
        argv += ["-sess_in", sess_in] if sess_in else []
        argv += ["-sess_out", sess_out] if sess_out else []
        proc = subprocess.run(self.net.exec_argv("cli", argv), input="", capture_output=True, text=True,
                              timeout=15)
        m = re.search(r"^(New|Reused), TLSv", proc.stdout, re.M)
        self.assertIsNotNone(m, f"s_client said:\n{proc.stdout[-1500:]}\n{proc.stderr[-500:]}")
        return m.group(1)

    def admin(self, role, method, target):
        """The admin API of sprayer `role`, from inside its namespace, with the token."""
        argv = [CURL, "-s", "--max-time", "3", "-X", method, "-H", f"Authorization: Bearer {ADMIN_TOKEN}",
                "-H", "X-Sprayer-Admin: 1", "-w", "\n%{http_code}", f"http://127.0.0.1:9100{target}"]
        out = run(self.net.exec_argv(role, argv), check=False).stdout
        body, _, code = out.rpartition("\n")
        self.assertEqual(code, "200", f"{method} {target} on {role}: {out[-300:]}")
        return json.loads(body)

    def admin_server(self, role, sid):
        return next(s for s in self.admin(role, "GET", "/api/v1/servers")["servers"] if s["id"] == sid)

    # --- the scenarios, in order (each starts from the state the previous one left)

    def test_1_kill9_active(self):
        active = self.active()
        standby = self.other(active)
        baseline = self.wait_answers(time.monotonic(), 2 * USERS)
        self.check_routing(baseline, "before the kill")
        session = os.path.join(self.run_dir, "tls.session")
        self.assertEqual(self.tls_session(sess_out=session), "New")

        killed_at = time.monotonic()
        self.procs[f"sprayer-{active}"].kill()
        moved = self.wait_vip(standby, 5.0)
        self.wait_all_users(killed_at)
        after = self.events(killed_at)
        first = min(e["end"] for e in after if e["status"] == 200)
        gap = first - killed_at
        failed = sum(1 for e in after if e["status"] != 200 and e["end"] <= first)
        print(f"\n[pair] kill -9 of the active sprayer: VIP on the standby after {moved * 1000:.0f} ms, "
              f"clients answered again after {gap * 1000:.0f} ms ({failed} failed attempts meanwhile; the client "
              f"retries a connect after 100 ms)",
              flush=True)
        self.assertLess(gap, TAKEOVER_KILL_S, "clients must be answered again within 500 ms of kill -9")
        n = self.check_routing(after, "after the kill")
        # Shared ticket keys: the session from the old active resumes on the new one.
        self.assertEqual(self.tls_session(sess_in=session), "Reused",
                         "a TLS session of the old active must resume on the new one (shared ticket keys)")

        # The old active comes back: it becomes the backup, the VIP stays put.
        harness.wait_until(lambda: not self.ready_backup(active), 5.0, interval=0.05,
                           what=f"keepalived {active} to notice its sprayer is gone")
        self.start_sprayer(active)
        self.wait_healthy_backup(active)
        self.assert_vip_stays(standby, 3.0)
        print(f"[pair] old active back: VIP stayed on the new active for 3 s; {n} answers checked for "
              f"their owner", flush=True)

    def test_2_sigstop_active(self):
        active = self.active()
        standby = self.other(active)
        self.wait_answers(time.monotonic(), USERS)
        proc = self.procs[f"sprayer-{active}"]
        stopped_at = time.monotonic()
        proc.send_signal(signal.SIGSTOP)
        try:
            moved = self.wait_vip(standby, 10.0)
            print(f"\n[pair] SIGSTOP of the active sprayer: taken over after {moved * 1000:.0f} ms", flush=True)
            self.assertLess(moved, TAKEOVER_STOP_S, "a hung sprayer must be taken over within 3 s")
            after = self.wait_answers(stopped_at + moved, USERS)
            self.check_routing(after, "after the SIGSTOP take-over")
        finally:
            proc.send_signal(signal.SIGCONT)
        # Resumed, it turns healthy again and stays the backup (nopreempt).
        self.wait_healthy_backup(active)
        self.assert_vip_stays(standby, 3.0)

    def test_3_link_cut_and_heal(self):
        active = self.active()
        standby = self.other(active)
        br, port = self.net.ns["br"], self.net.port(active)
        self.wait_answers(time.monotonic(), USERS)
        cut_at = time.monotonic()
        run([IP, "-n", br, "link", "set", port, "down"])
        try:
            moved = self.wait_vip(standby, 5.0)
            print(f"\n[pair] link of the active sprayer cut: VIP on the standby after {moved * 1000:.0f} ms",
                  flush=True)
            self.wait_answers(cut_at, USERS)
        finally:
            healed_at = time.monotonic()
            run([IP, "-n", br, "link", "set", port, "up"])
        # After the heal the pair settles on one holder and clients keep being answered.
        harness.wait_until(lambda: len(self.net.vip_holders()) == 1, 5.0, interval=0.05,
                           what="one VIP holder after the heal")
        settle = healed_at + 2.0
        harness.wait_until(lambda: time.monotonic() > settle + 2.0, 10.0, what="two seconds of load after settling")
        late = self.events(settle)
        failed = [e for e in late if e["status"] != 200]
        print(f"[pair] link healed: VIP on {self.net.vip_holders()}, {len(late)} requests in the 2 s after "
              f"settling, {len(failed)} failed", flush=True)
        self.assertTrue(late, "no requests after the heal")
        self.assertEqual(failed[:5], [], "clients must keep working after the heal")
        self.check_routing(late, "after the heal")
        self.wait_healthy_backup(active)

    def test_4_partition_heals_by_gratuitous_arp(self):
        """A partition the active does not notice (its link stays up): both become master; after
        the heal one steps down, and the periodic gratuitous ARP points the client at the holder."""
        active = self.active()
        standby = self.other(active)
        br, port = self.net.ns["br"], self.net.port(active)
        self.wait_answers(time.monotonic(), USERS)
        run([IP, "-n", br, "link", "set", port, "nomaster"])
        try:
            harness.wait_until(lambda: self.net.holds_vip(standby), 5.0, interval=0.02,
                               what="the standby to take the VIP during the partition")
            # Heal at once, before the cut-off sprayer's own checks mark the pool down (it cannot
            # reach it either, about 1 s): both are master for a moment, the case gratuitous ARP
            # must fix.
            split = self.net.holds_vip(active)
        finally:
            healed_at = time.monotonic()
            run([IP, "-n", br, "link", "set", port, "master", "br0"])
        harness.wait_until(lambda: len(self.net.vip_holders()) == 1, 5.0, interval=0.05,
                           what="the split brain to resolve to one VIP holder")
        settle = healed_at + 2.0  # one vrrp_garp_master_refresh period and some margin
        harness.wait_until(lambda: time.monotonic() > settle + 2.0, 10.0, what="two seconds of load after settling")
        late = self.events(settle)
        failed = [e for e in late if e["status"] != 200]
        print(f"\n[pair] partition healed ({'both were master' if split else 'the cut-off one had stepped down'}): "
              f"VIP on {self.net.vip_holders()}, {len(late)} requests in the 2 s after settling, {len(failed)} failed",
              flush=True)
        self.assertTrue(late, "no requests after the heal")
        self.assertEqual(failed[:5], [], "clients must reach the VIP holder after the heal (gratuitous ARP)")
        self.check_routing(late, "after the partition")

    def test_5_admin_states_follow_the_vip(self):
        """Drain on the active, kill it: the new active keeps the server drained; an undrain made
        there reaches the old active once it is back."""
        active = self.active()
        standby = self.other(active)
        self.wait_healthy_backup(standby)
        for role in (active, standby):
            wait_until(lambda r=role: self.admin(r, "GET", "/api/v1/servers")["peer"]["up"] is True, 10,
                       interval=0.1, what=f"sprayer {role} to exchange admin states with its peer")
        drained_at = time.monotonic()
        self.admin(active, "POST", "/api/v1/servers/pool1/drain")
        theirs = wait_until(lambda: (lambda s: s["admin"] == "drain" and s)(self.admin_server(standby, "pool1")), 5,
                            interval=0.02, what="the drain to reach the standby")
        reached = time.monotonic() - drained_at
        self.assertEqual(theirs["admin_source"], "peer")

        killed_at = time.monotonic()
        self.procs[f"sprayer-{active}"].kill()
        self.wait_vip(standby, 5.0)
        self.wait_answers(killed_at, USERS)
        now = self.admin_server(standby, "pool1")
        self.assertEqual((now["admin"], now["admin_source"]), ("drain", "peer"),
                         "the new active must keep the server drained")
        # Drained, not in maintenance: pool1's own users still reach it, through the new active.
        self.check_routing(self.events(killed_at), "after the kill, pool1 drained")
        took = time.monotonic()
        self.admin(standby, "POST", "/api/v1/servers/pool1/ready")
        took = time.monotonic() - took
        self.assertEqual(self.admin_server(standby, "pool1")["admin"], "ready")

        back_at = time.monotonic()
        self.start_sprayer(active)
        self.wait_healthy_backup(active)
        back = wait_until(lambda: (lambda s: s["admin"] == "ready" and s)(self.admin_server(active, "pool1")), 10,
                          interval=0.05, what="the undrain to reach the old active once it is back")
        print(f"\n[pair] drain on the active reached the standby after {reached * 1000:.0f} ms; after the kill the "
              f"new active kept it (undrain there answered in {took * 1000:.0f} ms with the peer down); the old "
              f"active, back, took the undrain {time.monotonic() - back_at:.1f} s after its restart began "
              f"(source {back['admin_source']})", flush=True)
        self.assertEqual(back["admin_source"], "peer")


if __name__ == "__main__":
    harness.main()
