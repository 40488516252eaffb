"""A called name → the deployment and its Ready instances, and which instance takes a call. A
name is a deployment's (admins' scripts) or a model's (what a grant names): a model's goes to a
deployment serving it that has Ready instances.

Each deployment picks by its routing setting: the least busy instance, or by prompt prefix:
consistent hashing with bounded load (as KubeAI's CHWBL), so calls sharing a prefix reach the
instance whose prefix cache likely holds it, unless that one already has ``MIN_BOUND`` calls in
flight and more than ``LOAD_FACTOR`` × the mean load, when the next instance on the ring takes it.
The ring hashes with BLAKE2b, not Python's per-process ``hash``, so every gateway process sends a
prefix to the same instance.

The table is reloaded (in a thread) when the console publishes "routes" (an instance or deployment
changed) and at least every ``REFRESH_S`` in case a message was lost.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import time
from dataclasses import dataclass, field

from django.db import close_old_connections

from fleet.deployments.choices import DesiredState, InstanceState, Routing
from fleet.deployments.models import Deployment, Instance

REFRESH_S = 5.0
DOWN_FOR_S = 2.0  # after a connect failure, try other instances first for this long
RING_POINTS = 256  # virtual points per instance on the ring (KubeAI's default replication)
LOAD_FACTOR = 1.25  # an instance takes a prefix's call while under this × the mean load
# ... and always below this many calls in flight: vLLM batches a few calls at little cost, while a
# spill makes a cold instance prefill the whole long prompt (and evict another to hold it). With
# few instances the mean bound alone spills often: at 4 calls on 2, an owner already holding 3
# passes the 4th on. AIBrix's prefix router likewise leaves its match only past an absolute imbalance.
MIN_BOUND = 4
PREFIX_CHARS = 256  # how much of the conversation's start names its prefix


def ring_hash(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def prefix_key(body: dict) -> int | None:
    """The hash of the first ``PREFIX_CHARS`` of a call's input: the messages' text in order (the
    system prompt first, where prefix caches share most), or the prompt; None without text."""
    value = body.get("messages", body.get("prompt"))
    parts: list[str] = []
    size = 0
    for item in value if isinstance(value, list) else [value]:
        content = item.get("content") if isinstance(item, dict) else item
        if isinstance(content, list):  # content parts: their text, in order
            content = "".join(
                p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
            )
        if isinstance(content, str):
            parts.append(content)
            size += len(content)
            if size >= PREFIX_CHARS:
                break
    text = "\x1e".join(parts)[:PREFIX_CHARS]
    return ring_hash(text.encode("utf-8", "surrogatepass")) if text else None


@dataclass
class Upstream:
    instance_id: int
    base_url: str  # http://host:port
    outstanding: int = 0
    down_until: float = 0.0


@dataclass
class Route:
    deployment_id: int
    name: str
    model_id: int
    created: int
    model_name: str = ""
    upstreams: list[Upstream] = field(default_factory=list)
    routing: str = Routing.LEAST_BUSY
    fallback: str | None = None  # the deployment that answers when this one cannot (one hop)
    wakes: bool = False  # autoscaled down to zero when idle: a call wakes it (and waits) instead of failing
    asleep: bool = False  # it wakes and is at zero or starting: a call now is held, not failed
    _ring: tuple[list[int], list[Upstream]] | None = field(default=None, init=False, repr=False)
    _ring_of: tuple[int, ...] = field(default=(), init=False, repr=False)

    def pick(self, exclude: set[int], key: int | None = None) -> Upstream | None:
        """The instance for a call not yet tried on ``exclude``: by ``key`` on the ring when the
        deployment routes by prefix, else (or when all are busy) the least busy; healthy first."""
        if key is not None and self.routing == Routing.PREFIX and len(self.upstreams) > 1:
            chosen = self._by_prefix(key, exclude)
            if chosen is not None:
                return chosen
        return self.least_busy(exclude)

    def ring(self) -> tuple[list[int], list[Upstream]]:
        """Points and their instances, sorted; rebuilt when the instances change."""
        ids = tuple(id(u) for u in self.upstreams)
        if self._ring is None or ids != self._ring_of:
            points = sorted(
                (ring_hash(f"{u.instance_id}:{i}".encode()), n)
                for n, u in enumerate(self.upstreams)
                for i in range(RING_POINTS)
            )
            self._ring = ([p for p, _ in points], [self.upstreams[n] for _, n in points])
            self._ring_of = ids
        return self._ring

    def _by_prefix(self, key: int, exclude: set[int]) -> Upstream | None:
        now = time.monotonic()
        usable = {u.instance_id: u for u in self.upstreams if u.instance_id not in exclude and u.down_until <= now}
        if not usable:
            return None
        mean = (sum(u.outstanding for u in usable.values()) + 1) / len(usable)
        bound = max(MIN_BOUND, math.ceil(LOAD_FACTOR * mean))
        points, owners = self.ring()
        start = bisect.bisect_left(points, key)
        seen: set[int] = set()
        for i in range(len(points)):  # clockwise from the key: the first usable instance under the bound
            up = owners[(start + i) % len(points)]
            if up.instance_id in usable and up.outstanding + 1 <= bound:
                return up
            seen.add(up.instance_id)
            if len(seen) == len(self.upstreams):
                break
        return None

    def least_busy(self, exclude: set[int]) -> Upstream | None:
        """Least outstanding requests among the instances not tried yet; healthy ones first."""
        now = time.monotonic()
        best: Upstream | None = None
        for up in self.upstreams:
            if up.instance_id in exclude:
                continue
            if best is None or (up.down_until > now, up.outstanding) < (best.down_until > now, best.outstanding):
                best = up
        return best


def load() -> dict[str, Route]:
    """Every deployment by served name, with its Ready instances (runs in a worker thread)."""
    close_old_connections()
    fields = ("pk", "name", "model_id", "created_at", "model__name", "routing", "fallback__name")
    rows = Deployment.objects.values_list(*fields, "autoscale", "min_replicas", "desired_state", "replicas").order_by(
        "pk"
    )
    # A call is held only while the deployment is at zero or on its way up (instances starting, or
    # not yet placed): one whose instance failed answers at once, not after the wake timeout.
    live: dict[int, int] = {}
    starting, failed = set(), set()
    current = Instance.objects.filter(state__in=InstanceState.LIVE | {InstanceState.FAILED})
    for deployment_id, state in current.values_list("deployment_id", "state"):
        if state == InstanceState.FAILED:
            failed.add(deployment_id)
            continue
        live[deployment_id] = live.get(deployment_id, 0) + 1
        if state != InstanceState.READY:  # pending, starting, or restarting after a crash
            starting.add(deployment_id)
    routes = {}
    for pk, name, model_id, created, model_name, routing, fallback, autoscale, low, desired, replicas in rows:
        wakes = autoscale and low == 0 and desired == DesiredState.RUNNING
        routes[name] = Route(
            pk,
            name,
            model_id,
            int(created.timestamp()),
            model_name,
            routing=routing,
            fallback=fallback,
            wakes=wakes,
            asleep=wakes and (not replicas or pk in starting or (live.get(pk, 0) < replicas and pk not in failed)),
        )
    by_id = {r.deployment_id: r for r in routes.values()}
    ready = Instance.objects.filter(state=InstanceState.READY).values_list("pk", "deployment_id", "address", "port")
    for pk, deployment_id, address, port in ready.order_by("pk"):
        if deployment_id in by_id:
            by_id[deployment_id].upstreams.append(Upstream(pk, f"http://{address}:{port}"))
    return routes


def resolve(table: dict[str, Route], name: str) -> Route | None:
    """The deployment called ``name``, else the deployment serving the model called ``name`` with
    the most Ready instances (with none, one that wakes on a call; the oldest on a tie); None if
    neither exists."""
    route = table.get(name)
    if route is not None:
        return route
    serving = [r for r in table.values() if r.model_name == name]
    return max(serving, key=lambda r: (len(r.upstreams), r.asleep), default=None)


def callable_names(table: dict[str, Route], model_ids: frozenset[int]) -> list[tuple[str, Route]]:
    """Every name a key for ``model_ids`` may call: each granted model served somewhere, then each
    deployment serving one, with a route for each."""
    served = [r for r in table.values() if r.model_id in model_ids]
    models = {r.model_name: r for r in reversed(served)}  # the oldest deployment stands for its model
    return sorted(models.items()) + [(r.name, r) for r in served if r.name not in models]


def merge(old: dict[str, Route], new: dict[str, Route]) -> dict[str, Route]:
    """Keep in-flight counts and down marks of instances that are still there."""
    for name, route in new.items():
        previous = {u.instance_id: u for u in old[name].upstreams} if name in old else {}
        kept = [previous.get(u.instance_id) for u in route.upstreams]
        route.upstreams = [
            k if k is not None and k.base_url == u.base_url else u for k, u in zip(kept, route.upstreams, strict=True)
        ]
        if name in old and old[name]._ring_of == tuple(id(u) for u in route.upstreams):
            route._ring, route._ring_of = old[name]._ring, old[name]._ring_of  # same instances: same ring
    return new
