#!/usr/bin/env python3
"""The memory budget under hostile clients: a sprayer with limits.memory_budget of a few MiB
and 50 connections of each hostile kind (pipelined GETs of large answers never read, slow
readers of big responses, TLS KeyUpdate floods that never read, chunk extensions of
megabytes, slowloris heads). Its RSS stays under the budget plus a fixed margin, it lives,
a normal client is answered meanwhile (and served), the overload is visible in the metrics
and the log once per transition, and normal service returns once the hostile clients go.

Run by hand with OVERLOAD_BINARY=/path/to/sprayer OVERLOAD_BUDGET=none to measure a sprayer
without the budget (the numbers only, no assertions): `python3 test_overload.py measure`."""
import os
import re
import socket
import subprocess
import sys
import threading
import time

import harness
from harness import Sprayer, TestCase, build_request, wait_until
from test_tls import Pki, scratch_folder, tls_config

KEYUPDATE_FLOOD = os.environ.get("KEYUPDATE_FLOOD_BIN")
BUDGET = 8 << 20
PER_KIND = 50
HOSTILE_S = 20.0           # how long the hostile clients push
NORMAL_BOUND_S = 30.0      # a normal request is answered within this, even on a busy machine
BIG = 20_000_000           # a response nobody reads to its end
# RSS over the start's allowed: the budget, plus what the budget does not count, for 250
# connections: the connection objects, parser arenas and libuv handles (~6 KiB each), the TLS
# handshakes' OpenSSL state until sprayer's record layer takes over (~40 KiB each for 50),
# and the allocator's slack for memory freed back to it but not to the system (4 MiB).
MARGIN_KIB = 250 * 6 + 50 * 40 + 4096


class Hostile:
    """The hostile clients, pushed by one thread until stop(); every loop is bounded by the
    phase's deadline."""

    def __init__(self, plain_port, tls_port):
        self.plain_port, self.tls_port = plain_port, tls_port
        self.socks = []
        self.floods = []
        self.stop_event = threading.Event()
        self.thread = None

    def _connect(self, rcvbuf=4096):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(5)
        s.connect(("127.0.0.1", self.plain_port))
        s.setblocking(False)
        self.socks.append(s)
        return s

    @staticmethod
    def _send(s, data):
        try:
            return s.send(data)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError:
            return -1

    def start(self):
        pipelined = build_request("GET", "/poolsim/blob?size=262144") * 200
        self.readers, self.extensions, self.loris = [], [], []
        for _ in range(PER_KIND):
            self._send(self._connect(), pipelined)
            r = self._connect()
            self._send(r, build_request("GET", f"/poolsim/blob?size={BIG}"))
            self.readers.append(r)
            e = self._connect(rcvbuf=65536)
            head = build_request("POST", "/poolsim/echo", headers=[("Transfer-Encoding", "chunked")])
            self._send(e, head + b"5;")
            self.extensions.append([e, 3 << 19])  # 1.5 MiB of extension bytes to send
            lo = self._connect()
            self._send(lo, b"GET /traveler?action=getStatus HTTP/1.1\r\nHost: sprayer.test\r\nX-Slow: ")
            self.loris.append(lo)
        if KEYUPDATE_FLOOD:
            for _ in range(PER_KIND):
                p = subprocess.Popen([KEYUPDATE_FLOOD, str(self.tls_port), "3000", "300", f"/poolsim/blob?size={BIG}"],
                                     stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                harness._reaper.add(p)
                self.floods.append(p)
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()
        return self

    def _pump(self):
        deadline = time.monotonic() + HOSTILE_S + 60
        chunk = b"a" * 65536
        tick = 0
        while not self.stop_event.wait(0.2) and time.monotonic() < deadline:
            tick += 1
            for r in self.readers:  # 256 bytes every 0.2 s: 1.3 KB/s of a 20 MB answer
                try:
                    r.recv(256)
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    pass
            for e in self.extensions:
                if e[1] > 0:
                    n = self._send(e[0], chunk[:min(e[1], len(chunk))])
                    e[1] = 0 if n < 0 else e[1] - n
            if tick % 5 == 0:
                for lo in self.loris:
                    self._send(lo, b"x")

    def stop(self):
        self.stop_event.set()
        if self.thread:
            self.thread.join(10)
        for s in self.socks:
            s.close()
        for p in self.floods:
            p.kill()
            p.wait(10)
            p.stdin.close()


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))] if values else None


def run(binary=None, budget=BUDGET, checks=None):
    """One sprayer, the hostile phase, and the recovery; returns what was measured."""
    pki = Pki(scratch_folder("overload-pki"))
    pool = harness.pool(1)
    tls_port, plain_port, admin_port = harness.free_port(), harness.free_port(), harness.free_port()
    config = tls_config(pki, pool, tls_port, harness.free_port(), admin_port, pki.tickets, plain_port=plain_port)
    config["listeners"] = [config["listeners"][0], config["listeners"][2]]
    # Slowloris heads and unread answers are held for the whole phase (the header and send
    # timeouts would otherwise end them, which is not what this test is about).
    config["timeouts"] = {"client_header": "120s", "client_send": "120s", "drain": "2s"}
    # The busy machine must not take the one server down: its answers are not the question.
    config["health"] = {"enabled": False}
    if budget:
        config["limits"] = {"memory_budget": str(budget)}
    sprayer = Sprayer(config, binary=binary).start()
    out = {"start_rss_kib": sprayer.start_rss_kib, "max_rss_kib": sprayer.start_rss_kib, "normal": []}
    hostile = Hostile(plain_port, tls_port)
    stop = threading.Event()

    def sample():
        while not stop.wait(0.05):
            try:
                out["max_rss_kib"] = max(out["max_rss_kib"], sprayer.rss_kib())
            except (OSError, AssertionError):
                return

    def normal_client():
        # A device: a fresh connection, one request, then the next a quarter second later.
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                resp = harness.http_request(plain_port, "GET", "/poolsim/blob?size=1000", timeout=NORMAL_BOUND_S)
                status, retry = resp.status, resp.header("Retry-After")
            except (OSError, AssertionError) as e:
                status, retry = f"error: {e}", None
            out["normal"].append((status, time.monotonic() - t0, retry))
            stop.wait(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    normal = threading.Thread(target=normal_client, daemon=True)
    try:
        sampler.start()
        hostile.start()
        normal.start()
        phase_end = time.monotonic() + HOSTILE_S
        while time.monotonic() < phase_end:  # the phase's length; the process must live through it
            sprayer.assert_alive()
            time.sleep(0.5)
        out["hostile_rss_kib"] = sprayer.rss_kib()
        stop.set()
        normal.join(NORMAL_BOUND_S + 5)
        sampler.join(5)
        hostile.stop()
        sprayer.assert_alive()
        if budget:
            for name in ("sprayer_overload_shed_connections_total", "sprayer_overload_refused_requests_total",
                         "sprayer_memory_allocation_failures_total", "sprayer_memory_budget_bytes"):
                out[name] = harness.metric(admin_port, name)
            # Back to normal once the hostile clients are gone: the state, then the service.
            wait_until(lambda: harness.metric(admin_port, "sprayer_overload_state", state="normal") == 1, 30,
                       what="the overload state to return to normal")
            out["after_buffered"] = harness.metric(admin_port, "sprayer_memory_buffered_bytes")
        after = []
        for _ in range(20):
            t0 = time.monotonic()
            resp = harness.http_request(plain_port, "GET", "/poolsim/blob?size=1000", timeout=NORMAL_BOUND_S)
            after.append((resp.status, time.monotonic() - t0))
        out["after"] = after
        out["log"] = [line for line in sprayer.stderr_text().splitlines() if "overload:" in line]
        if checks:
            checks(out, sprayer)
    finally:
        stop.set()
        hostile.stop()
        sprayer.stop()
        pool.stop()
    return out


def report(out):
    served = [lat for status, lat, _ in out["normal"] if status == 200]
    answered = [lat for status, lat, _ in out["normal"] if isinstance(status, int)]
    grown = out["max_rss_kib"] - out["start_rss_kib"]
    sys.stderr.write(
        f"\noverload: RSS start {out['start_rss_kib']} KiB, peak {out['max_rss_kib']} KiB "
        f"(+{grown} KiB, {grown * 1024 // (5 * PER_KIND)} bytes per hostile connection), "
        f"end of phase {out['hostile_rss_kib']} KiB\n"
        f"overload: normal client during the phase: {len(out['normal'])} requests, {len(served)} served (200), "
        f"{len(answered) - len(served)} answered 503; latency p50 {percentile(answered, 0.5)}, "
        f"max {max(answered) if answered else None} s; served p50 {percentile(served, 0.5)} s\n"
        f"overload: after: {[s for s, _ in out['after']].count(200)}/20 served, "
        f"p50 {percentile([lat for _, lat in out['after']], 0.5)} s, max {max(lat for _, lat in out['after'])} s\n")
    for key in ("sprayer_overload_shed_connections_total", "sprayer_overload_refused_requests_total",
                "sprayer_memory_allocation_failures_total", "after_buffered"):
        if key in out:
            sys.stderr.write(f"overload: {key} = {out[key]}\n")
    log = out.get("log", [])
    sys.stderr.write(f"overload: {len(log)} transitions logged; the first and the last:\n")
    sys.stderr.write("".join(f"overload: log: {line}\n" for line in log[:6] + ["..."] + log[-3:]))


class OverloadTest(TestCase):
    TIMEOUT = 300.0

    def test_hostile_clients_stay_within_the_memory_budget(self):
        if not KEYUPDATE_FLOOD:
            self.skipTest("keyupdate_flood not built")

        def checks(out, sprayer):
            report(out)
            limit = out["start_rss_kib"] + BUDGET // 1024 + MARGIN_KIB
            self.assertLess(out["max_rss_kib"], limit,
                            f"peak RSS {out['max_rss_kib']} KiB over start + budget + margin ({limit} KiB)")
            # The budget was what held them: the process went past its refuse mark and acted.
            self.assertTrue(any("refusing" in line for line in out["log"]), "never overloaded")
            self.assertGreater(out["sprayer_overload_shed_connections_total"] +
                               out["sprayer_overload_refused_requests_total"], 0)
            # Every normal request was answered within the bound: served, or told when to come back.
            for status, latency, retry in out["normal"]:
                self.assertIn(status, (200, 503), f"normal client: {status} after {latency:.1f} s")
                if status == 503:
                    self.assertEqual(retry, "5", "a 503 for overload says when to retry")
            self.assertTrue(any(status == 200 for status, _, _ in out["normal"]),
                            "the normal client was never served while the hostile clients pushed")
            # Normal service after they left.
            self.assertEqual([s for s, _ in out["after"]], [200] * 20)
            # Idle chunks kept for reuse stay under half the budget.
            self.assertLess(out["after_buffered"], BUDGET * 0.5 + 2 * 32 * 1024)
            # One log line per transition, not per request or connection: each line starts from
            # the state the line before it ended in, and the last one is back to normal.
            self.assertTrue(out["log"], "no overload transition logged")
            words = {"normal service": "normal", "refusing new": "refusing", "closing the": "shedding"}
            state = "normal"
            for line in out["log"]:
                self.assertIn(f"(was {state})", line, "\n".join(out["log"]))
                state = next(v for k, v in words.items() if k in line)
            self.assertEqual(state, "normal", out["log"][-1])

        run(checks=checks)


if __name__ == "__main__":
    if sys.argv[1:] == ["measure"]:
        budget = os.environ.get("OVERLOAD_BUDGET", str(BUDGET))
        report(run(binary=os.environ.get("OVERLOAD_BINARY"), budget=None if budget == "none" else int(budget)))
    else:
        harness.main()
