"""Side effects for nodes: joining, heartbeats, rollups, liveness, cordon and removal.

The UI, the API and the Celery tasks that agents call all come through here; each write records
its audit event. Agents authenticate with a secret of their own, stored as SHA-256 (the join
token admits a node once; the agent secret keeps it in).
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from datetime import datetime, timedelta, timezone as dt_timezone
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

import audit
from console.live import publish
from fleet import telemetry
from fleet.choices import NodeKind, NodeState
from fleet.models import GPU, JoinToken, Node, TelemetryRollup, node_name_validator

log = logging.getLogger(__name__)
JOIN_TOKEN_KIND = "fjt"  # fleet join token: recognisable in logs and by secret scanners
MAX_JOIN_TOKEN_HOURS = 24 * 30
MALFORMED_COUNTER = "fleet:telemetry:malformed"


class ServiceError(Exception):
    """A refusal shown to the person (or agent) as it is: a 400 in the API, an error to the agent."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _agent_actor(name: str) -> str:
    return f"agent:{name}"[:150]


def count_malformed(reason: str) -> None:
    cache.add(MALFORMED_COUNTER, 0, timeout=None)
    cache.incr(MALFORMED_COUNTER)
    log.warning("dropped a malformed agent message: %s", reason)


def malformed_count() -> int:
    return int(cache.get(MALFORMED_COUNTER) or 0)


def fleet_event(kind: str, node: Node, **extra: Any) -> None:
    """Tell browsers watching the fleet that a node changed (state, cordon, removal)."""
    payload = {"kind": kind, "node": node.pk, "name": node.name, "state": node.state,
               "cordoned": node.cordoned, **extra}
    transaction.on_commit(lambda: publish("fleet", payload))


# --- join tokens -------------------------------------------------------------------------------
def create_join_token(actor: Any, *, label: str = "", expires_in_hours: int = 24) -> tuple[JoinToken, str]:
    """Returns the row and the plaintext, which is shown once and never stored."""
    if not 1 <= expires_in_hours <= MAX_JOIN_TOKEN_HOURS:
        raise ServiceError(f"Expiry must be between 1 and {MAX_JOIN_TOKEN_HOURS} hours.", "expires_in_hours")
    prefix = secrets.token_hex(6)
    plaintext = f"{JOIN_TOKEN_KIND}_{prefix}_{secrets.token_urlsafe(32)}"
    with transaction.atomic():
        token = JoinToken.objects.create(
            label=label, prefix=prefix, digest=digest(plaintext), created_by=actor if getattr(actor, "pk", None) else None,
            expires_at=timezone.now() + timedelta(hours=expires_in_hours),
        )
        audit.record(actor, "node.join_token.create", token,
                     after={"label": label, "prefix": prefix, "expires_at": token.expires_at})
    return token, plaintext


def revoke_join_token(actor: Any, token: JoinToken) -> JoinToken:
    with transaction.atomic():
        token = JoinToken.objects.select_for_update().get(pk=token.pk)
        if token.revoked_at or token.used_at:
            raise ServiceError("This join token is already used or revoked.")
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        audit.record(actor, "node.join_token.revoke", token, after={"revoked_at": token.revoked_at})
    return token


def _token_row(plaintext: str) -> JoinToken | None:
    parts = plaintext.split("_", 2) if isinstance(plaintext, str) else []
    if len(parts) != 3 or parts[0] != JOIN_TOKEN_KIND:
        return None
    row = JoinToken.objects.select_for_update().filter(prefix=parts[1]).first()
    return row if row is not None and hmac.compare_digest(row.digest, digest(plaintext)) else None


# --- joining -----------------------------------------------------------------------------------
def _refuse(name: str, reason: str, **context: Any) -> ServiceError:
    # Recorded outside the caller's transaction, which is rolled back by the refusal.
    audit.record(_agent_actor(name), "node.join.refused", ("fleet.node", "", name), reason=reason, **context)
    return ServiceError(reason)


def _apply_facts(node: Node, facts: dict) -> list[dict]:
    host, gpu = facts.get("host") or {}, facts.get("gpu") or {}
    node.hostname = str(host.get("hostname", ""))[:255]
    node.os = str(host.get("os", ""))[:255]
    node.cpu_model = str(host.get("cpu_model", ""))[:255]
    node.cpu_cores = int(host.get("cpu_cores") or 0)
    node.ram_bytes = int(host.get("ram_bytes") or 0)
    node.driver_version = str(gpu.get("driver_version", ""))[:64]
    node.cuda_version = str(gpu.get("cuda_version", ""))[:32]
    node.nvml_error = str(gpu.get("nvml_error", ""))[:255]
    node.agent_version = str(facts.get("agent_version", ""))[:32]
    node.telemetry_interval_s = float(facts.get("interval_s") or 1.0)
    gpus = [g for g in gpu.get("gpus") or [] if isinstance(g, dict) and "error" not in g]
    node.kind = NodeKind.GPU if gpus else NodeKind.CPU
    return gpus


def _save_gpus(node: Node, gpus: list[dict]) -> None:
    node.gpus.all().delete()
    GPU.objects.bulk_create([
        GPU(node=node, index=int(g["index"]), uuid=str(g.get("uuid", ""))[:64], name=str(g.get("name", ""))[:128],
            memory_total=int(g.get("memory_total") or 0), compute_capability=str(g.get("compute_capability", ""))[:8],
            mig_mode=g.get("mig_mode"), pcie_gen=g.get("pcie_gen"), pcie_width=g.get("pcie_width"),
            nvlink_peers=list(g.get("nvlink_peers") or []))
        for g in gpus
    ])


def register_node(*, name: Any, secret: Any, facts: Any, join_token: str | None = None,
                  node_id: int | None = None) -> Node:
    """Admit an agent: with a join token the first time, with its own secret after a restart."""
    if not isinstance(name, str) or not isinstance(secret, str) or len(secret) < 32 or not isinstance(facts, dict):
        raise _refuse(str(name)[:63], "malformed registration: name, secret (32+ chars) and facts are required")
    try:
        node_name_validator(name)
    except ValidationError:
        raise _refuse(name[:63], f"node name {name!r} is not valid: use 1–63 lower-case letters, digits and hyphens")
    refusal: str | None = None
    with transaction.atomic():
        if join_token is not None:
            token = _token_row(join_token)
            refusal = "unknown join token" if token is None else token.unusable_reason()
            existing = Node.objects.select_for_update().filter(name=name).first()
            if refusal is None and existing is not None and existing.state == NodeState.ONLINE:
                refusal = f"a node named {name!r} is online; remove it first or choose another name"
            if refusal is None:
                node = existing or Node(name=name)
                before = {"state": existing.state} if existing else None
                node.agent_digest = digest(secret)
                node.state, node.last_heartbeat = NodeState.ONLINE, timezone.now()
                gpus = _apply_facts(node, facts)
                node.save()
                _save_gpus(node, gpus)
                token.used_at, token.used_by = timezone.now(), node
                token.save(update_fields=["used_at", "used_by"])
                audit.record(_agent_actor(name), "node.join", node, before=before,
                             after={"kind": node.kind, "gpus": len(gpus), "token": token.prefix})
        else:
            node = Node.objects.select_for_update().filter(pk=node_id, name=name).first()
            if node is None or not hmac.compare_digest(node.agent_digest, digest(secret)):
                refusal = "unknown node or wrong agent secret; join again with a new join token"
            else:
                gpus = _apply_facts(node, facts)
                was = node.state
                node.state, node.last_heartbeat = NodeState.ONLINE, timezone.now()
                node.save()
                _save_gpus(node, gpus)
                audit.record(_agent_actor(name), "node.rejoin", node, before={"state": was},
                             after={"state": node.state, "kind": node.kind, "gpus": len(gpus)})
        if refusal is None:
            fleet_event("joined", node)
            return node
    raise _refuse(name, refusal)


# --- heartbeats and telemetry --------------------------------------------------------------------
def _agent_node(node_id: Any, secret: Any) -> Node | None:
    if not isinstance(node_id, int) or not isinstance(secret, str):
        return None
    node = Node.objects.filter(pk=node_id).first()
    if node is None or not hmac.compare_digest(node.agent_digest, digest(secret)):
        return None
    return node


def heartbeat(*, node_id: Any, secret: Any, sample: Any) -> Node | None:
    """Record that a node is alive, with its latest telemetry; returns None when refused."""
    node = _agent_node(node_id, secret)
    if node is None:
        log.warning("heartbeat refused for node id %r (unknown node or wrong secret)", node_id)
        return None
    try:
        telemetry.check(sample)
    except telemetry.MalformedTelemetry as exc:
        count_malformed(str(exc))
        sample = None
    now = timezone.now()
    with transaction.atomic():
        updates: dict[str, Any] = {"last_heartbeat": now}
        if sample is not None:
            updates["last_sample"] = sample
        Node.objects.filter(pk=node.pk).update(**updates)
        # Conditional update: two heartbeats racing a liveness sweep bring a node back once.
        if Node.objects.filter(pk=node.pk, state=NodeState.OFFLINE).update(state=NodeState.ONLINE):
            node.state = NodeState.ONLINE
            audit.record(_agent_actor(node.name), "node.online", node,
                         before={"state": NodeState.OFFLINE}, after={"state": NodeState.ONLINE})
            fleet_event("state", node)
    return node


def ingest_rollups(*, node_id: Any, secret: Any, minute: Any, rows: Any) -> int:
    node = _agent_node(node_id, secret)
    if node is None:
        return 0
    try:
        at = datetime.fromtimestamp(int(minute), tz=dt_timezone.utc)
        objs = [TelemetryRollup(node=node, gpu_index=int(r["gpu"]), minute=at, samples=int(r["samples"]),
                                stats={str(k): [float(x) for x in v][:3] for k, v in r["stats"].items()})
                for r in rows]
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
        count_malformed(f"rollup: {exc!r}")
        return 0
    TelemetryRollup.objects.bulk_create(objs, ignore_conflicts=True)  # a retried task adds nothing
    return len(objs)


def mark_offline(*, now: datetime | None = None) -> list[Node]:
    """Nodes silent for longer than FLEET_NODE_OFFLINE_AFTER_S go Offline (audited, pushed)."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.FLEET_NODE_OFFLINE_AFTER_S)
    gone = []
    for node in Node.objects.filter(state=NodeState.ONLINE, last_heartbeat__lt=cutoff):
        with transaction.atomic():
            if not Node.objects.filter(pk=node.pk, state=NodeState.ONLINE, last_heartbeat__lt=cutoff).update(
                    state=NodeState.OFFLINE):
                continue  # it heartbeated meanwhile
            node.state = NodeState.OFFLINE
            audit.record(None, "node.offline", node, before={"state": NodeState.ONLINE},
                         after={"state": NodeState.OFFLINE}, silent_s=round((now - node.last_heartbeat).total_seconds(), 1))
            fleet_event("state", node)
            gone.append(node)
    return gone


def prune_rollups(*, now: datetime | None = None) -> int:
    cutoff = (now or timezone.now()) - timedelta(days=settings.FLEET_ROLLUP_RETENTION_DAYS)
    deleted, _ = TelemetryRollup.objects.filter(minute__lt=cutoff).delete()
    return deleted


# --- admin actions -----------------------------------------------------------------------------
def set_cordon(actor: Any, node: Node, cordoned: bool) -> Node:
    with transaction.atomic():
        node = Node.objects.select_for_update().get(pk=node.pk)
        if node.cordoned == cordoned:
            raise ServiceError(f"{node.name} is already {'cordoned' if cordoned else 'uncordoned'}.")
        node.cordoned = cordoned
        node.save(update_fields=["cordoned"])
        audit.record(actor, "node.cordon" if cordoned else "node.uncordon", node,
                     before={"cordoned": not cordoned}, after={"cordoned": cordoned})
        fleet_event("cordon", node)
    return node


def remove_node(actor: Any, node: Node) -> None:
    """Forget a node: its GPUs and rollups go with it; its agent is refused from now on."""
    with transaction.atomic():
        node = Node.objects.select_for_update().get(pk=node.pk)
        before = {"name": node.name, "state": node.state, "kind": node.kind, "gpus": node.gpus.count()}
        audit.record(actor, "node.remove", node, before=before)
        fleet_event("removed", node)
        node.delete()

