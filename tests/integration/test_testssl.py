"""testssl.sh (Debian package testssl.sh) against the TLS listener with the default profile.

Runs the protocol (-p), cipher category (-s), server preference (-P is not run: the order is
ours but a client preferring ChaCha20 gets it, which -P reports as no preference), vulnerability (-U) and server defaults (-S) checks, reads
the JSON findings and fails on any HIGH or CRITICAL finding, and on any finding whose text
says VULNERABLE or "NOT ok". What it reports at lower severities is listed in docs/tls.md.
Skipped, with a message, when testssl is not installed.
"""

import json
import os
import shutil
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Sprayer  # noqa: E402

TESTSSL = shutil.which("testssl") or shutil.which("testssl.sh")
OPENSSL = shutil.which("openssl")
RUN_LIMIT_S = 150


def run(argv, timeout=30):
    proc = subprocess.run(argv, capture_output=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: {proc.stderr.decode(errors='replace')[-1500:]}")


@unittest.skipUnless(TESTSSL, "testssl is not installed (Debian package testssl.sh; scripts/install-deps.sh test)")
class TestsslTest(harness.TestCase):
    TIMEOUT = RUN_LIMIT_S + 60

    def test_default_profile_has_no_high_findings(self):
        folder = harness.scratch_path("testssl")
        os.unlink(folder)
        os.mkdir(folder)
        ca, ca_key = os.path.join(folder, "ca.pem"), os.path.join(folder, "ca.key")
        cert, key, csr = (os.path.join(folder, n) for n in ("cert.pem", "cert.key", "cert.csr"))
        run([OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", ca_key, "-out", ca, "-days", "400", "-subj", "/CN=testssl CA",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        run([OPENSSL, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", key, "-out", csr, "-subj", "/CN=localhost"])
        ext = os.path.join(folder, "ext.cnf")
        with open(ext, "w") as f:
            # A CRL URI and a year of validity, as a production certificate has: testssl rates a
            # certificate without revocation information or close to expiry HIGH.
            f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                    "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
                    "crlDistributionPoints=URI:http://crl.invalid/testssl-ca.crl\n")
        run([OPENSSL, "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-days", "365",
             "-extfile", ext, "-out", cert])

        pool = harness.pool(1)
        port = harness.free_port()
        config = harness.sprayer_config(pool, workers=1, port=port)
        config["listeners"] = [{"name": "https", "address": f"127.0.0.1:{port}",
                                "tls": {"certificates": [{"cert": cert, "key": key}]}}]
        sprayer = Sprayer(config).start()
        report = os.path.join(folder, "report.json")
        try:
            proc = subprocess.run(
                [TESTSSL, "--quiet", "--color", "0", "--warnings", "off", "--fast", "--sneaky",
                 "--add-ca", ca, "-p", "-s", "-U", "-S", "--jsonfile", report, f"127.0.0.1:{port}"],
                capture_output=True, timeout=RUN_LIMIT_S)
            sprayer.assert_alive()
        finally:
            sprayer.stop()
            pool.stop()
        self.assertTrue(os.path.exists(report),
                        f"testssl wrote no report (exit {proc.returncode})\n{proc.stdout.decode(errors='replace')[-3000:]}")
        with open(report) as f:
            findings = json.load(f)
        self.assertGreater(len(findings), 20, "testssl ran too few checks to mean anything")
        bad = [x for x in findings
               if x.get("severity") in ("HIGH", "CRITICAL")
               or "VULNERABLE" in str(x.get("finding", "")).upper().replace("NOT VULNERABLE", "")
               or "NOT OK" in str(x.get("finding", "")).upper()]
        # Findings about the scratch certificate itself (a private CA testssl cannot know) are not
        # about the listener.
        bad = [x for x in bad if not str(x.get("id", "")).startswith(("cert_chain_of_trust", "cert_trust"))]
        self.assertEqual(bad, [], "testssl findings:\n" + "\n".join(
            f"  {x.get('severity')} {x.get('id')}: {x.get('finding')}" for x in bad))
        summary = {}
        for x in findings:
            summary.setdefault(x.get("severity"), []).append(x.get("id"))
        sys.stderr.write("testssl severities: " + ", ".join(f"{k}={len(v)}" for k, v in sorted(summary.items())) + "\n")
        for sev in ("MEDIUM", "LOW", "WARN"):
            for x in findings:
                if x.get("severity") == sev:
                    sys.stderr.write(f"  {sev} {x.get('id')}: {x.get('finding')}\n")


if __name__ == "__main__":
    harness.main()
