"""A real OpenLDAP server (Debian's slapd) for the directory tests: StartTLS with a CA made here,
the password-policy overlay (how OpenLDAP disables an account), people and nested groups.

    cn=it-admins      ← alice
    cn=auditors       ← erin
    cn=staff          ← cn=radiology-staff ← bob     (nested: bob is in staff through radiology-staff)
    carol: in no group      dave: locked (pwdAccountLockedTime), in it-admins
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from console import tls
from console.embedded import free_port
from tests.helpers import stop_process

SLAPD = shutil.which("slapd") or "/usr/sbin/slapd"
BASE = "dc=example,dc=org"
ROOT_DN, ROOT_PASSWORD = f"cn=admin,{BASE}", "root-secret-pw"
BIND_DN, BIND_PASSWORD = f"cn=fleet-reader,{BASE}", "reader-secret-pw"
PASSWORD = "Directory-passw0rd!"  # every person's
PEOPLE, GROUPS = f"ou=people,{BASE}", f"ou=groups,{BASE}"
POLICY = f"cn=default-policy,{BASE}"
MODULES = "/usr/lib/ldap"


def group_dn(name: str) -> str:
    return f"cn={name},{GROUPS}"


def person_dn(uid: str) -> str:
    return f"uid={uid},{PEOPLE}"


def _person(uid: str, given: str, sn: str, locked: bool = False) -> str:
    lines = [
        f"dn: {person_dn(uid)}",
        "objectClass: inetOrgPerson",
        f"uid: {uid}",
        f"cn: {given} {sn}",
        f"givenName: {given}",
        f"sn: {sn}",
        f"mail: {uid}@example.org",
        f"userPassword: {PASSWORD}",
    ]
    return "\n".join(lines) + ("\npwdAccountLockedTime: 000001010000Z" if locked else "") + "\n"


def _group(name: str, *members: str) -> str:
    return (
        "\n".join(
            [f"dn: {group_dn(name)}", "objectClass: groupOfNames", f"cn: {name}"] + [f"member: {m}" for m in members]
        )
        + "\n"
    )


SEED = "\n".join(
    [
        f"dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n",
        f"dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people\n",
        f"dn: {GROUPS}\nobjectClass: organizationalUnit\nou: groups\n",
        # the default password policy: it makes a pwdAccountLockedTime refuse the person's bind
        f"dn: {POLICY}\nobjectClass: device\nobjectClass: pwdPolicy\ncn: default-policy\n"
        "pwdAttribute: userPassword\npwdLockout: TRUE\n",
        f"dn: {BIND_DN}\nobjectClass: person\nobjectClass: simpleSecurityObject\ncn: fleet-reader\nsn: reader\n"
        f"userPassword: {BIND_PASSWORD}\n",
        _person("alice", "Alice", "Admin"),
        _person("bob", "Bob", "Radiologist"),
        _person("carol", "Carol", "Nogroup"),
        _person("dave", "Dave", "Locked", locked=True),
        _person("erin", "Erin", "Auditor"),
        _group("it-admins", person_dn("alice"), person_dn("dave")),
        _group("auditors", person_dn("erin")),
        _group("radiology-staff", person_dn("bob")),
        _group("staff", group_dn("radiology-staff")),
    ]
)


def _config(root: Path, certs: tls.Material) -> str:
    schema = "/etc/ldap/schema"
    return f"""
include {schema}/core.schema
include {schema}/cosine.schema
include {schema}/inetorgperson.schema
include {schema}/nis.schema
modulepath {MODULES}
moduleload back_mdb
moduleload ppolicy
pidfile {root}/slapd.pid
TLSCACertificateFile {certs.ca}
TLSCertificateFile {certs.cert}
TLSCertificateKeyFile {certs.key}
security update_tls=1 simple_bind=1
database mdb
maxsize 104857600
suffix "{BASE}"
rootdn "{ROOT_DN}"
rootpw {ROOT_PASSWORD}
directory {root}/data
overlay ppolicy
ppolicy_default "{POLICY}"
access to attrs=userPassword by self auth by anonymous auth by * none
access to * by dn.exact="{BIND_DN}" read by self read by * none
"""


@dataclass
class Directory:
    uri: str
    ca: Path
    proc: subprocess.Popen

    def modify(self, ldif: str) -> None:
        """ldapmodify as the directory's root (the IT team's change, not the console's)."""
        done = subprocess.run(
            ["ldapmodify", "-x", "-ZZ", "-H", self.uri, "-D", ROOT_DN, "-w", ROOT_PASSWORD],
            input=ldif,
            text=True,
            capture_output=True,
            env={"LDAPTLS_CACERT": str(self.ca), "PATH": "/usr/bin:/bin"},
        )
        assert done.returncode == 0, done.stderr

    def lock(self, uid: str) -> None:
        self.modify(
            f"dn: {person_dn(uid)}\nchangetype: modify\nadd: pwdAccountLockedTime\n"
            "pwdAccountLockedTime: 000001010000Z\n"
        )

    def stop(self) -> None:
        stop_process(self.proc)


def start(root: Path) -> Directory:
    (root / "data").mkdir(parents=True)
    certs = tls.ensure(root / "tls")
    conf = root / "slapd.conf"
    conf.write_text(_config(root, certs))
    seed = root / "seed.ldif"
    seed.write_text(SEED)
    subprocess.run(["slapadd", "-f", str(conf), "-l", str(seed)], check=True, capture_output=True)
    port = free_port()
    uri = f"ldap://127.0.0.1:{port}"
    # -d 0: in the foreground (the test owns the process), logging nothing
    proc = subprocess.Popen([SLAPD, "-f", str(conf), "-h", uri + "/", "-d", "0"], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        probe = subprocess.run(
            ["ldapsearch", "-x", "-ZZ", "-H", uri, "-D", BIND_DN, "-w", BIND_PASSWORD, "-b", BASE, "-s", "base", "1.1"],
            capture_output=True,
            env={"LDAPTLS_CACERT": str(certs.ca), "PATH": "/usr/bin:/bin"},
        )
        if probe.returncode == 0:
            return Directory(uri, certs.ca, proc)
        if proc.poll() is not None:
            raise RuntimeError(f"slapd exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        time.sleep(0.1)
    proc.kill()
    raise TimeoutError(f"slapd did not answer on {uri}")
