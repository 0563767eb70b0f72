#!/usr/bin/env python3
"""A private OpenLDAP server (slapd) for tests, on a loopback port, in a directory of its own.

As a module: `with LdapServer(users) as ldap: ldap.uri, ldap.stop(), ldap.start()`.
`users` is a list of (uid, common name, mail); each becomes cn=NAME,ou=People,o=Acme, an
inetOrgPerson, so one person has several names: uid, mail, cn, and the DN itself. A service
account cn=sprayer,o=Acme (password in `password_file`) may bind and read.

slapd runs in the foreground (-d 0, so it never forks and its pid is ours to signal) with a
generated slapd.conf and an mdb database loaded by slapadd before the start; readiness is a
successful anonymous search, waited for with a deadline.
"""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
SUFFIX = "o=Acme"
BIND_DN = "cn=sprayer,o=Acme"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def user_ldif(uid, name, mail):
    return (f"dn: cn={name},ou=People,{SUFFIX}\nobjectClass: inetOrgPerson\ncn: {name}\n"
            f"sn: {name.split()[-1]}\nuid: {uid}\nmail: {mail}\n\n")


class LdapServer:
    def __init__(self, users, state_dir=None, bind_password="bind-Pw-7"):
        if not os.path.exists(SLAPD):
            raise RuntimeError("slapd not found (install the slapd and ldap-utils packages)")
        self.users = list(users)
        self.owned_dir = state_dir is None
        self.state_dir = state_dir or tempfile.mkdtemp(prefix="sprayer-ldap-")
        self.bind_password = bind_password
        self.password_file = os.path.join(self.state_dir, "bind.pw")
        self.port = _free_port()
        self.proc = None
        self.log_path = os.path.join(self.state_dir, "slapd.log")
        self._log = None
        self._write_config()
        self._load()

    @property
    def uri(self):
        return f"ldap://127.0.0.1:{self.port}"

    def _write_config(self):
        db = os.path.join(self.state_dir, "db")
        shutil.rmtree(db, ignore_errors=True)
        os.makedirs(db)
        self.conf = os.path.join(self.state_dir, "slapd.conf")
        with open(self.conf, "w") as f:
            f.write("include /etc/ldap/schema/core.schema\n"
                    "include /etc/ldap/schema/cosine.schema\n"
                    "include /etc/ldap/schema/inetorgperson.schema\n"
                    "modulepath /usr/lib/ldap\nmoduleload back_mdb\n"
                    f"pidfile {self.state_dir}/slapd.pid\n"
                    "sizelimit 10\n"
                    # Anyone may authenticate; only a bound client may read.
                    "access to attrs=userPassword by anonymous auth by * none\n"
                    "access to * by users read by anonymous auth\n"
                    f"database mdb\nmaxsize 268435456\nsuffix \"{SUFFIX}\"\n"
                    f"rootdn \"cn=admin,{SUFFIX}\"\nrootpw admin-secret\ndirectory {db}\n"
                    "index uid,mail,cn eq\n")
        with open(self.password_file, "w") as f:
            f.write(self.bind_password)  # no newline: ldapsearch -y sends the file as is
        os.chmod(self.password_file, 0o600)

    def _load(self):
        ldif = os.path.join(self.state_dir, "data.ldif")
        with open(ldif, "w") as f:
            f.write(f"dn: {SUFFIX}\nobjectClass: organization\no: Acme\n\n")
            f.write(f"dn: ou=People,{SUFFIX}\nobjectClass: organizationalUnit\nou: People\n\n")
            f.write(f"dn: {BIND_DN}\nobjectClass: person\ncn: sprayer\nsn: sprayer\n"
                    f"userPassword: {self.bind_password}\n\n")
            for uid, name, mail in self.users:
                f.write(user_ldif(uid, name, mail))
        subprocess.run([SLAPADD, "-q", "-f", self.conf, "-l", ldif], check=True, capture_output=True, timeout=120)

    def start(self, timeout=20.0):
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([SLAPD, "-d", "0", "-h", f"ldap://127.0.0.1:{self.port}/", "-f", self.conf],
                                     stdout=self._log, stderr=self._log, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"slapd exited with {self.proc.returncode}: {open(self.log_path).read()[-2000:]}")
            if self.search(f"(uid={self.users[0][0]})" if self.users else "(o=Acme)", timeout=2) is not None:
                return self
            time.sleep(0.05)
        self.kill()
        raise RuntimeError("slapd did not answer in time")

    def search(self, flt, timeout=5):
        """ldapsearch as the service account; the output, or None if the server did not answer."""
        try:
            r = subprocess.run(["ldapsearch", "-x", "-LLL", "-H", self.uri, "-D", BIND_DN, "-y", self.password_file,
                                "-o", f"nettimeout={timeout}", "-l", str(timeout), "-b", SUFFIX, flt, "uid"],
                               capture_output=True, text=True, timeout=timeout + 2)
        except subprocess.TimeoutExpired:
            return None
        return r.stdout if r.returncode == 0 else None

    def pause(self):
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)

    def stop(self, timeout=10.0):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        if self._log:
            self._log.close()
            self._log = None

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def cleanup(self):
        self.stop()
        if self.owned_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()
