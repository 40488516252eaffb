"""Writing and verifying the hash chain.

Each event stores its predecessor's hash and SHA-256(prev_hash + canonical JSON of its content).
Writers serialize on a transaction-scoped Postgres advisory lock, so the chain stays linear
however many processes write at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, models, transaction
from django.utils import timezone
from psycopg.types.json import set_json_loads

from audit import context as audit_context
from audit.models import COLUMNS, AuditEvent
from audit.serializers import public_event
from console import live
from console.actions import Actor

__all__ = ["record", "record_many", "lock", "verify", "VerifyResult", "canonical_json", "event_hash", "GENESIS"]

log = logging.getLogger(__name__)
GENESIS = "0" * 64
_LOCK_KEY = 0x466C656574417564  # "FleetAud": one advisory lock for the whole chain
# Secrets are redacted by name: a key that is, or ends in "_" and, one of these words. Never by
# substring, which also blanked counts ("prompt_tokens", "completion_tokens") that auditors need.
_SECRET_KEY = re.compile(
    r"(?:^|_)(?:password\d*|secret|token|credential|api_?key|key|digest|authorization|cookie)$", re.IGNORECASE
)


def is_secret(key: str) -> bool:
    return _SECRET_KEY.search(key) is not None


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, cls=DjangoJSONEncoder)


def event_hash(content: dict) -> str:
    return hashlib.sha256((content["prev_hash"] + canonical_json(content)).encode()).hexdigest()


def _scrub(value: Any) -> Any:
    """JSON-normalise and blank anything whose key names a secret; events never hold secrets."""
    if isinstance(value, dict):
        return {str(k): ("[redacted]" if is_secret(str(k)) else _scrub(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v) for v in value]
    if value is None or isinstance(value, (str, bool, int)):
        return value
    return json.loads(canonical_json(value))  # dates, decimals, floats: as they will read back


def _describe_target(target: Any) -> tuple[str, str, str]:
    if target is None:
        return "", "", ""
    if isinstance(target, models.Model):
        return target._meta.label_lower, str(target.pk), str(target)[:200]
    if isinstance(target, tuple):
        kind, ident, text = (list(target) + ["", ""])[:3]
        return str(kind), str(ident), str(text)[:200]
    return "", "", str(target)[:200]


def _describe_actor(actor: Actor) -> tuple[int | None, str, str, str]:
    if actor is None:
        return None, "system", "", ""
    if isinstance(actor, str):
        return None, actor[:150], "", ""
    if isinstance(actor, tuple):  # already described: (id, name, role, department)
        return actor
    department = getattr(actor, "department", None)
    return actor.pk, actor.get_username(), getattr(actor, "role", ""), department.name if department else ""


def record(
    actor: Actor, action: str, target: Any = None, *, before: Any = None, after: Any = None, **context: Any
) -> AuditEvent:
    """Append one event. ``actor`` is a user, a name (e.g. an agent) or None for the system.

    Source IP, request id and channel come from the bound ``audit.context``; extra keyword
    arguments are stored as the event's context (keys naming secrets are redacted).
    """
    bound = audit_context.current()
    actor_id, actor_name, actor_role, actor_department = _describe_actor(actor)
    target_type, target_id, target_repr = _describe_target(target)
    event = AuditEvent(
        created_at=timezone.now(),
        actor_id=actor_id,
        actor_name=actor_name,
        actor_role=actor_role,
        actor_department=actor_department,
        action=action,
        target_type=target_type,
        target_id=target_id,
        target_repr=target_repr,
        before=_scrub(before),
        after=_scrub(after),
        context=_scrub(context) or {},
        source_ip=bound.source_ip or "",
        request_id=bound.request_id or "",
        channel=bound.channel,
    )
    # Everything but the position is serialised here, outside the lock; the database fills in seq
    # and prev_hash from the last event and hashes the result in one call, so the lock is held for
    # one round trip and the commit. The hashed text is exactly canonical_json(event.as_dict()):
    # verify() recomputes it in Python.
    a, b, c = _template(event)
    # Inside the caller's transaction the event commits (or rolls back) with its action. Alone, the
    # one statement is its own transaction, committed without waiting for the disk while the lock is
    # held; the next statement (a transaction with an id, committed synchronously) returns only once
    # the WAL is flushed past it, so the event is as durable as ever when record() returns.
    standalone = not connection.in_atomic_block
    with connection.cursor() as cursor:
        cursor.execute(_APPEND, [standalone, a, b, c, *(_db_value(event, f) for f in _INSERT_FIELDS)])
        event.pk, event.seq, event.prev_hash, event.hash = cursor.fetchone()
        if standalone:
            cursor.execute("SELECT txid_current()")
    transaction.on_commit(lambda: _publish(event))
    return event


_INSERT_FIELDS = tuple(c for c in COLUMNS if c not in ("seq", "prev_hash"))  # the database sets these two
# audit_append() (migration 0003) takes the lock, numbers, links, hashes and inserts in one call.
_APPEND = f"SELECT o_id, o_seq, o_prev, o_hash FROM audit_append({', '.join(['%s'] * (4 + len(_INSERT_FIELDS)))})"


def _template(event: AuditEvent) -> tuple[str, str, str]:
    """canonical_json(event.as_dict()) cut where prev_hash's and seq's values go (random markers, so
    no content can imitate them)."""
    mark = secrets.token_hex(16)
    prev_mark, seq_mark = f"prev-{mark}", f"seq-{mark}"
    event.prev_hash, event.seq = prev_mark, seq_mark
    text = canonical_json(event.as_dict())
    a, rest = text.split(f'"{prev_mark}"', 1)
    b, c = rest.split(f'"{seq_mark}"', 1)
    return a, b, c


def _db_value(event: AuditEvent, name: str) -> Any:
    field = AuditEvent._meta.get_field(name)
    assert isinstance(field, models.Field)  # one of the table's own columns
    return field.get_db_prep_save(getattr(event, name), connection)


def lock() -> None:
    """Hold the chain's lock until the caller's transaction ends (re-taking it inside is free)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_KEY])


def record_many(items: list[dict[str, Any]]) -> list[AuditEvent]:
    """Append several events under one lock (the gateway's ledger writes a batch at a time).

    Each item holds ``actor``, ``action``, ``target`` as for ``record`` plus optional ``after``,
    ``context``, ``created_at``, ``source_ip``, ``request_id`` and ``channel``.
    """
    if not items:
        return []
    events: list[AuditEvent] = []
    with transaction.atomic():
        lock()
        last = AuditEvent.objects.order_by("-seq").values_list("seq", "hash").first()
        seq, prev_hash = (last[0] + 1, last[1]) if last else (1, GENESIS)
        for item in items:
            actor_id, actor_name, actor_role, actor_department = _describe_actor(item["actor"])
            target_type, target_id, target_repr = _describe_target(item.get("target"))
            event = AuditEvent(
                seq=seq,
                created_at=item.get("created_at") or timezone.now(),
                actor_id=actor_id,
                actor_name=actor_name,
                actor_role=actor_role,
                actor_department=actor_department,
                action=item["action"],
                target_type=target_type,
                target_id=target_id,
                target_repr=target_repr,
                before=None,
                after=_scrub(item.get("after")),
                context=_scrub(item.get("context")) or {},
                source_ip=item.get("source_ip", ""),
                request_id=item.get("request_id", ""),
                channel=item.get("channel", ""),
                prev_hash=prev_hash,
            )
            event.hash = event_hash(event.as_dict())
            events.append(event)
            seq, prev_hash = seq + 1, event.hash
        AuditEvent.objects.bulk_create(events)
        transaction.on_commit(lambda: _publish_many(events))
    return events


def _publish_many(events: list[AuditEvent]) -> None:
    try:
        live.publish_many("audit", [public_event(e) for e in events])
    except Exception:
        log.exception("could not publish audit events %s..%s", events[0].seq, events[-1].seq)


def _publish(event: AuditEvent) -> None:
    try:
        live.publish_soon("audit", public_event(event))  # gathered: a busy trail costs one message per 50 ms
    except Exception:  # the trail is written; a missed live push must not fail the action
        log.exception("could not publish audit event %s", event.seq)


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checked: int
    intact_up_to: int  # seq of the last event that verified (0 when none)
    broken_seq: int | None = None
    problem: str = ""
    head_hash: str = GENESIS  # hash of event intact_up_to: where the next incremental run starts

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "intact_up_to": self.intact_up_to,
            "broken_seq": self.broken_seq,
            "problem": self.problem,
            "head_hash": self.head_hash,
            "summary": str(self),
        }

    def __str__(self) -> str:
        if self.ok:
            return f"OK: {self.checked} events, intact up to event {self.intact_up_to}"
        return f"BROKEN at event {self.broken_seq}: {self.problem} (intact up to event {self.intact_up_to})"


_UTC_ISO = "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US') || '+00:00'"


def _fast_hash(content: dict) -> str:
    # orjson sorts keys and writes compact UTF-8 as canonical_json does, ~10x faster; where the
    # two could differ (exotic floats, huge ints) a mismatch is re-checked with canonical_json.
    return hashlib.sha256(
        content["prev_hash"].encode() + orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
    ).hexdigest()


def _rows(after_seq: int) -> Iterable[tuple]:
    """Every event after ``after_seq`` in order, through a server-side cursor (constant memory)."""
    connection.ensure_connection()
    with transaction.atomic():
        raw = connection.connection
        with raw.cursor(name=f"audit_walk_{id(raw)}") as cursor:
            set_json_loads(orjson.loads, cursor)
            cursor.itersize = 20_000
            # created_at as the text as_dict() hashes (isoformat in UTC): parsing 100k timestamps
            # only to print them again was a third of the walk.
            columns = ", ".join(_UTC_ISO if c == "created_at" else c for c in COLUMNS)
            cursor.execute(f"SELECT {columns}, hash FROM audit_auditevent WHERE seq > %s ORDER BY seq", [after_seq])
            yield from cursor


def verify(
    events: Iterable[AuditEvent] | None = None, *, after_seq: int = 0, after_hash: str = GENESIS
) -> VerifyResult:
    """Walk the chain in order from (after_seq, after_hash) — the genesis, an archive's anchor or a
    verified checkpoint — and name the first event whose link, order or content is wrong."""
    prev_seq, prev_hash, checked = after_seq, after_hash, 0
    rows = ((*(e.as_dict()[c] for c in COLUMNS), e.hash) for e in events) if events is not None else _rows(after_seq)
    for row in rows:
        seq = row[0]
        if seq != prev_seq + 1:
            problem = (
                f"sequence gap: events {prev_seq + 1}..{seq - 1} are missing (deleted)"
                if seq > prev_seq + 1
                else f"sequence out of order after event {prev_seq}"
            )
            return VerifyResult(False, checked, prev_seq, seq, problem, prev_hash)
        content = dict(zip(COLUMNS, row[:-1], strict=True))
        if not isinstance(content["created_at"], str):
            content["created_at"] = content["created_at"].isoformat(timespec="microseconds")
        if content["prev_hash"] != prev_hash:
            return VerifyResult(
                False,
                checked,
                prev_seq,
                seq,
                "prev_hash does not match the preceding event: an event was removed or inserted",
                prev_hash,
            )
        stored = row[-1]
        try:
            fast = _fast_hash(content)
        except TypeError:
            fast = ""
        if fast != stored and event_hash(content) != stored:
            return VerifyResult(
                False, checked, prev_seq, seq, "content does not match its hash: the event was altered", prev_hash
            )
        prev_seq, prev_hash, checked = seq, stored, checked + 1
    return VerifyResult(True, checked, prev_seq, head_hash=prev_hash)
