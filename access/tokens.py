"""Secrets people hold: ``<kind>_<prefix>_<secret><checksum>``.

- kind: ``fct`` personal API token, ``flk`` gateway key; recognisable in logs and by secret scanners.
- prefix: 12 hex digits, stored in clear and indexed, to find the row.
- secret: 32 base62 characters (190 bits); only SHA-256 of the whole string is stored.
- checksum: CRC32 of everything before it, 6 base62 characters, so a scanner (or the gateway,
  before any lookup) can tell a real key from a typo or a random string offline.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
import zlib
from dataclasses import dataclass

from django.core.validators import RegexValidator

TOKEN_KIND = "fct"  # personal API token (/api/)
KEY_KIND = "flk"  # fleet gateway key (/v1/)
_BASE62 = string.digits + string.ascii_letters
_SECRET_LEN, _CHECK_LEN, _PREFIX_LEN = 32, 6, 12


@dataclass(frozen=True)
class NewToken:
    plaintext: str
    prefix: str
    digest: str


def digest(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def _checksum(body: str) -> str:
    n, out = zlib.crc32(body.encode()), []
    for _ in range(_CHECK_LEN):
        n, r = divmod(n, 62)
        out.append(_BASE62[r])
    return "".join(reversed(out))


def generate(kind: str = TOKEN_KIND) -> NewToken:
    prefix = secrets.token_hex(_PREFIX_LEN // 2)
    body = f"{kind}_{prefix}_{''.join(secrets.choice(_BASE62) for _ in range(_SECRET_LEN))}"
    plaintext = body + _checksum(body)
    return NewToken(plaintext, prefix, digest(plaintext))


def derive(kind: str, key: str, seed: str) -> NewToken:
    """The same well-formed secret for the same ``key`` and ``seed`` (HMAC-SHA256): a secret the
    console can make again when it needs the plaintext, while only its digest is stored."""
    mac = hmac.new(key.encode(), f"{kind}:{seed}".encode(), hashlib.sha256).digest()
    n, chars = int.from_bytes(mac[6:], "big"), []  # 208 bits for 32 base62 characters (190)
    for _ in range(_SECRET_LEN):
        n, r = divmod(n, 62)
        chars.append(_BASE62[r])
    body = f"{kind}_{mac[:6].hex()}_{''.join(chars)}"
    plaintext = body + _checksum(body)
    return NewToken(plaintext, mac[:6].hex(), digest(plaintext))


def parse_prefix(plaintext: str, kind: str = TOKEN_KIND) -> str | None:
    """The prefix of a well-formed secret of this kind with a valid checksum, else None."""
    parts = plaintext.split("_", 2)
    if len(parts) != 3 or parts[0] != kind or len(parts[1]) != _PREFIX_LEN or len(parts[2]) != _SECRET_LEN + _CHECK_LEN:
        return None
    body, check = plaintext[:-_CHECK_LEN], plaintext[-_CHECK_LEN:]
    return parts[1] if hmac.compare_digest(_checksum(body), check) else None


def matches(plaintext: str, stored_digest: str) -> bool:
    return hmac.compare_digest(digest(plaintext), stored_digest)


# What a person calls a token or key: ASCII only, so the OpenAPI document's pattern (whose \w a
# client reads as ASCII) and the check mean the same (Python's \w would also take "𝓣").
LABEL_VALIDATOR = RegexValidator(r"^[\w .:-]+$", "Use letters, digits, spaces and . : - _ only.", flags=re.ASCII)
