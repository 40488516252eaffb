"""Served model name → the deployment and its Ready instances; picks the least busy one.

The table is reloaded (in a thread) when the console publishes "routes" (an instance or deployment
changed) and at least every ``REFRESH_S`` in case a message was lost.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from django.db import close_old_connections

from fleet.deployments.choices import InstanceState
from fleet.deployments.models import Deployment, Instance

REFRESH_S = 5.0
DOWN_FOR_S = 2.0  # after a connect failure, try other instances first for this long


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
    upstreams: list[Upstream] = field(default_factory=list)

    def pick(self, exclude: set[int]) -> Upstream | None:
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
    routes = {
        name: Route(pk, name, model_id, int(created.timestamp()))
        for pk, name, model_id, created in Deployment.objects.values_list("pk", "name", "model_id", "created_at")
    }
    by_id = {r.deployment_id: r for r in routes.values()}
    ready = Instance.objects.filter(state=InstanceState.READY).values_list("pk", "deployment_id", "address", "port")
    for pk, deployment_id, address, port in ready.order_by("pk"):
        if deployment_id in by_id:
            by_id[deployment_id].upstreams.append(Upstream(pk, f"http://{address}:{port}"))
    return routes


def merge(old: dict[str, Route], new: dict[str, Route]) -> dict[str, Route]:
    """Keep in-flight counts and down marks of instances that are still there."""
    for name, route in new.items():
        previous = {u.instance_id: u for u in old[name].upstreams} if name in old else {}
        kept = [previous.get(u.instance_id) for u in route.upstreams]
        route.upstreams = [
            k if k is not None and k.base_url == u.base_url else u for k, u in zip(kept, route.upstreams, strict=True)
        ]
    return new
