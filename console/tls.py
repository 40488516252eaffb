"""The certificates the agent endpoint serves: the console's own CA and server certificate, made on
first start in ``<data>/tls`` (keys 0600), or an organisation's own (FLEET_TLS_CERT, FLEET_TLS_KEY
and FLEET_TLS_CA, the CA that join tokens then pin).

The server certificate names every address this machine has when it is made, plus
FLEET_TLS_NAMES: agents check the name they dial as well as the pinned CA.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from console.config import data_dir, env, env_list
from fleet.protocol.wire import fingerprint

CA_DAYS, SERVER_DAYS = 3650, 825


@dataclass(frozen=True)
class Material:
    ca: Path
    cert: Path
    key: Path

    @property
    def ca_fingerprint(self) -> str:
        return fingerprint(self.ca.read_text())


def material() -> Material:
    """The organisation's files when configured, else the console's own (made once)."""
    cert, key, ca = env("FLEET_TLS_CERT"), env("FLEET_TLS_KEY"), env("FLEET_TLS_CA")
    if cert or key or ca:
        if not (cert and key and ca):
            raise RuntimeError("set all three of FLEET_TLS_CERT, FLEET_TLS_KEY and FLEET_TLS_CA, or none")
        return Material(Path(ca), Path(cert), Path(key))
    return ensure(data_dir() / "tls")


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    tmp.replace(path)


def _names() -> list[x509.GeneralName]:
    hosts = {"localhost", socket.gethostname(), socket.getfqdn(), *env_list("FLEET_TLS_NAMES", [])}
    addresses = {"127.0.0.1", "::1"}
    for nics in psutil.net_if_addrs().values():
        addresses |= {a.address.split("%")[0] for a in nics if a.family in (socket.AF_INET, socket.AF_INET6)}
    for host in list(hosts):
        try:
            addresses.add(str(ipaddress.ip_address(host)))
            hosts.discard(host)
        except ValueError:
            pass
    return [x509.DNSName(h) for h in sorted(hosts) if h] + [
        x509.IPAddress(ipaddress.ip_address(a)) for a in sorted(addresses)
    ]


def ensure(directory: Path) -> Material:
    """Make the CA and the server certificate unless both are there (O_EXCL lock: processes
    starting together make them once)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    made = Material(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    if made.ca.exists() and made.cert.exists() and made.key.exists():
        return made
    lock = directory / ".making"
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        for _ in range(100):  # another process is making them (a fraction of a second)
            if made.key.exists() and made.cert.exists() and made.ca.exists():
                return made
            time.sleep(0.1)
        lock.unlink(missing_ok=True)
        return ensure(directory)
    try:
        os.close(fd)
        _make(made)
    finally:
        lock.unlink(missing_ok=True)
    return made


def _make(made: Material) -> None:
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Fleet Console CA ({socket.gethostname()})")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, socket.gethostname())]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
        .add_extension(x509.SubjectAlternativeName(_names()), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    private = serialization.PrivateFormat.PKCS8
    none = serialization.NoEncryption()
    # The CA's key is not kept: nothing else is ever signed with it (a new server certificate
    # means a new CA, and join tokens made after it carry the new fingerprint).
    _write(made.key, key.private_bytes(pem, private, none), 0o600)
    _write(made.cert, cert.public_bytes(pem) + ca.public_bytes(pem), 0o600)
    _write(made.ca, ca.public_bytes(pem), 0o600)
