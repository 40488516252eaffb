"""Writing and verifying the hash chain.

Each event stores its predecessor's hash and SHA-256(prev_hash + canonical JSON of its content).
Writers serialize on a transaction-scoped Postgres advisory lock, so the chain stays linear
however many processes write at once.
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, models, transaction
from django.utils import timezone

from audit import context as audit_context
from audit.models import AuditEvent

__all__ = ["record", "record_many", "verify", "VerifyResult", "canonical_json", "event_hash", "GENESIS"]

log = logging.getLogger(__name__)
GENESIS = "0" * 64
_LOCK_KEY = 0x466C656574417564  # "FleetAud": one advisory lock for the whole chain
_SECRET_WORDS = ("password", "secret", "token", "api_key", "apikey", "authorization", "digest")


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, cls=DjangoJSONEncoder)


def event_hash(content: dict) -> str:
    return hashlib.sha256((content["prev_hash"] + canonical_json(content)).encode()).hexdigest()


def _scrub(value: Any) -> Any:
    """JSON-normalise and blank anything whose key names a secret; events never hold secrets."""
    if isinstance(value, dict):
        return {
            str(k): ("[redacted]" if any(w in str(k).lower() for w in _SECRET_WORDS) else _scrub(v))
            for k, v in value.items()
        }
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


def _describe_actor(actor: Any) -> tuple[int | None, str, str, str]:
    if actor is None:
        return None, "system", "", ""
    if isinstance(actor, str):
        return None, actor[:150], "", ""
    if isinstance(actor, tuple):  # already described: (id, name, role, department)
        return actor
    department = getattr(actor, "department", None)
    return actor.pk, actor.get_username(), getattr(actor, "role", ""), department.name if department else ""


def record(actor: Any, action: str, target: Any = None, *, before: Any = None, after: Any = None,
           **context: Any) -> AuditEvent:
    """Append one event. ``actor`` is a user, a name (e.g. an agent) or None for the system.

    Source IP, request id and channel come from the bound ``audit.context``; extra keyword
    arguments are stored as the event's context (keys naming secrets are redacted).
    """
    bound = audit_context.current()
    actor_id, actor_name, actor_role, actor_department = _describe_actor(actor)
    target_type, target_id, target_repr = _describe_target(target)
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_KEY])
        last = AuditEvent.objects.order_by("-seq").values_list("seq", "hash").first()
        seq, prev_hash = (last[0] + 1, last[1]) if last else (1, GENESIS)
        event = AuditEvent(
            seq=seq,
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
            prev_hash=prev_hash,
        )
        event.hash = event_hash(event.as_dict())
        event.save(force_insert=True)
        transaction.on_commit(lambda: _publish(event))
    return event


def record_many(items: list[dict[str, Any]]) -> list[AuditEvent]:
    """Append several events under one lock (the gateway's ledger writes a batch at a time).

    Each item holds ``actor``, ``action``, ``target`` as for ``record`` plus optional ``after``,
    ``context``, ``created_at``, ``source_ip``, ``request_id`` and ``channel``.
    """
    if not items:
        return []
    events: list[AuditEvent] = []
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_KEY])
        last = AuditEvent.objects.order_by("-seq").values_list("seq", "hash").first()
        seq, prev_hash = (last[0] + 1, last[1]) if last else (1, GENESIS)
        for item in items:
            actor_id, actor_name, actor_role, actor_department = _describe_actor(item["actor"])
            target_type, target_id, target_repr = _describe_target(item.get("target"))
            event = AuditEvent(
                seq=seq, created_at=item.get("created_at") or timezone.now(), actor_id=actor_id,
                actor_name=actor_name, actor_role=actor_role, actor_department=actor_department,
                action=item["action"], target_type=target_type, target_id=target_id, target_repr=target_repr,
                before=None, after=_scrub(item.get("after")), context=_scrub(item.get("context")) or {},
                source_ip=item.get("source_ip", ""), request_id=item.get("request_id", ""),
                channel=item.get("channel", ""), prev_hash=prev_hash)
            event.hash = event_hash(event.as_dict())
            events.append(event)
            seq, prev_hash = seq + 1, event.hash
        AuditEvent.objects.bulk_create(events)
        transaction.on_commit(lambda: _publish_many(events))
    return events


def _publish_many(events: list[AuditEvent]) -> None:
    from audit.serializers import public_event
    from console import live

    try:
        live.publish_many("audit", [public_event(e) for e in events])
    except Exception:
        log.exception("could not publish audit events %s..%s", events[0].seq, events[-1].seq)


def _publish(event: AuditEvent) -> None:
    from audit.serializers import public_event
    from console import live

    try:
        live.publish("audit", public_event(event))
    except Exception:  # the trail is written; a missed live push must not fail the action
        log.exception("could not publish audit event %s", event.seq)


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checked: int
    intact_up_to: int  # seq of the last event that verified (0 when none)
    broken_seq: int | None = None
    problem: str = ""

    def as_dict(self) -> dict:
        return {"ok": self.ok, "checked": self.checked, "intact_up_to": self.intact_up_to,
                "broken_seq": self.broken_seq, "problem": self.problem, "summary": str(self)}

    def __str__(self) -> str:
        if self.ok:
            return f"OK: {self.checked} events, intact up to event {self.intact_up_to}"
        return f"BROKEN at event {self.broken_seq}: {self.problem} (intact up to event {self.intact_up_to})"


def verify(events: Iterable[AuditEvent] | None = None) -> VerifyResult:
    """Walk the chain in order; name the first event whose link, order or content is wrong."""
    if events is None:
        events = AuditEvent.objects.order_by("seq").iterator(chunk_size=2000)
    prev_seq, prev_hash, checked = 0, GENESIS, 0
    for event in events:
        if event.seq != prev_seq + 1:
            problem = (f"sequence gap: events {prev_seq + 1}..{event.seq - 1} are missing (deleted)"
                       if event.seq > prev_seq + 1 else f"sequence out of order after event {prev_seq}")
            return VerifyResult(False, checked, prev_seq, event.seq, problem)
        if event.prev_hash != prev_hash:
            return VerifyResult(False, checked, prev_seq, event.seq,
                                "prev_hash does not match the preceding event: an event was removed or inserted")
        if event_hash(event.as_dict()) != event.hash:
            return VerifyResult(False, checked, prev_seq, event.seq,
                                "content does not match its hash: the event was altered")
        prev_seq, prev_hash, checked = event.seq, event.hash, checked + 1
    return VerifyResult(True, checked, prev_seq)
