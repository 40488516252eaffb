"""The console's Ed25519 key: it signs audit export manifests and archive segments.

The private key lives in ``FLEET_AUDIT_SIGNING_KEY`` (a PEM file path) or, by default,
``<data>/audit_signing_key.pem`` (0600, created on first use). The public key is shown on the
audit trail page so auditors can check bundles offline with ``verify_export.py``."""

from __future__ import annotations

import base64
import hashlib
import os
from functools import lru_cache
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from console.config import data_dir


def key_path() -> Path:
    return Path(os.environ.get("FLEET_AUDIT_SIGNING_KEY") or data_dir() / "audit_signing_key.pem")


@lru_cache(maxsize=1)
def private_key() -> Ed25519PrivateKey:
    path = key_path()
    if not path.exists():
        new_key = Ed25519PrivateKey.generate()
        pem = new_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} does not hold an Ed25519 private key")
    return key


def public_key_b64() -> str:
    raw = private_key().public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def fingerprint() -> str:
    """SHA-256 of the raw public key, grouped for reading aloud over the phone."""
    digest = hashlib.sha256(base64.b64decode(public_key_b64())).hexdigest()[:32]
    return ":".join(digest[i : i + 4] for i in range(0, 32, 4))


def sign(data: bytes) -> str:
    return base64.b64encode(private_key().sign(data)).decode()
