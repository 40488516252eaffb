"""Personal API tokens: ``fct_<prefix>_<secret>``; the prefix finds the row, SHA-256 proves it."""
from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

TOKEN_KIND = "fct"  # fleet console token; recognisable in logs and by secret scanners


@dataclass(frozen=True)
class NewToken:
    plaintext: str
    prefix: str
    digest: str


def digest(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def generate() -> NewToken:
    prefix = secrets.token_hex(6)
    plaintext = f"{TOKEN_KIND}_{prefix}_{secrets.token_urlsafe(32)}"
    return NewToken(plaintext, prefix, digest(plaintext))


def parse_prefix(plaintext: str) -> str | None:
    parts = plaintext.split("_", 2)
    if len(parts) != 3 or parts[0] != TOKEN_KIND or len(parts[1]) != 12:
        return None
    return parts[1]


def matches(plaintext: str, stored_digest: str) -> bool:
    return hmac.compare_digest(digest(plaintext), stored_digest)
