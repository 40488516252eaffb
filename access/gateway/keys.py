"""What the gateway knows about a key, cached per process by prefix.

An entry is loaded from the database once (in a thread, off the event loop) and then answers
every request with no query. The whole cache is dropped when the console publishes "keys" (a key
or grant was created, revoked or changed); entries also expire after ``TTL_S`` in case a message
was lost while Redis was away.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from django.db import close_old_connections

from access import tokens
from access.grants.choices import GrantPurpose
from access.grants.models import LIMIT_FIELDS, ApiKey, DepartmentQuota
from access.people.choices import Role

TTL_S = 60.0
MISSING_TTL_S = 5.0


@dataclass(frozen=True)
class KeyEntry:
    key_id: int
    prefix: str
    digest: str
    user_id: int
    username: str
    role: str
    department_id: int | None
    department: str
    model_ids: frozenset[int]  # artifacts this key may call
    key_expires_at: float | None  # epoch seconds
    grant_expires_at: float
    revoked: bool
    grant_revoked: bool
    user_active: bool
    key_limits: dict[str, int] = field(default_factory=dict)  # the tighter of key and grant, set ones only
    department_limits: dict[str, int] = field(default_factory=dict)


def _tighter(*levels: dict[str, int | None]) -> dict[str, int]:
    out: dict[str, int] = {}
    for name in LIMIT_FIELDS:
        values = [v for v in (lv.get(name) for lv in levels) if v]
        if values:
            out[name] = min(values)
    return out


def load(prefix: str) -> KeyEntry | None:
    """One key with its grant, user and department quota (runs in a worker thread)."""
    close_old_connections()
    key = (
        ApiKey.objects.select_related("grant", "user", "user__department")
        .prefetch_related("models", "grant__models")
        .filter(prefix=prefix)
        .first()
    )
    if key is None:
        return None
    grant, user = key.grant, key.user
    granted = {m.pk for m in grant.models.all()}
    chosen = {m.pk for m in key.models.all()}
    # no department: an exact None is IS NULL, which no quota matches
    quota = DepartmentQuota.objects.filter(department_id=user.department_id).first()  # type: ignore[misc]
    return KeyEntry(
        key_id=key.pk,
        prefix=key.prefix,
        digest=key.digest,
        user_id=user.pk,
        username=user.username,
        role=user.role,
        department_id=user.department_id,
        department=user.department.name if user.department is not None else "",
        model_ids=frozenset(chosen & granted if chosen else granted),
        key_expires_at=key.expires_at.timestamp() if key.expires_at else None,
        grant_expires_at=grant.expires_at.timestamp(),
        revoked=key.revoked_at is not None,
        # an administrator's playground grant lapses the moment its holder is no longer one
        grant_revoked=grant.revoked_at is not None
        or (grant.purpose == GrantPurpose.PLAYGROUND and user.role != Role.ADMIN),
        user_active=user.is_active,
        key_limits=_tighter(key.limits(), grant.limits()),
        department_limits=_tighter(quota.limits()) if quota else {},
    )


class KeyCache:
    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, KeyEntry | None]] = {}

    def get(self, prefix: str) -> tuple[bool, KeyEntry | None]:
        """(known, entry): known is False when the prefix must be loaded first."""
        hit = self._entries.get(prefix)
        if hit is None or hit[0] < time.monotonic():
            return False, None
        return True, hit[1]

    def put(self, prefix: str, entry: KeyEntry | None) -> None:
        if len(self._entries) > 100_000:  # a flood of random prefixes must not grow memory forever
            self._entries.clear()
        self._entries[prefix] = (time.monotonic() + (TTL_S if entry else MISSING_TTL_S), entry)

    def clear(self) -> None:
        self._entries.clear()


def parse_bearer(header: bytes | None) -> tuple[str, str] | None:
    """(plaintext, prefix) of a well-formed gateway key with a valid checksum."""
    if not header:
        return None
    scheme, _, value = header.decode("latin-1").partition(" ")
    if scheme.lower() != "bearer":
        return None
    value = value.strip()
    prefix = tokens.parse_prefix(value, tokens.KEY_KIND)
    return (value, prefix) if prefix else None
