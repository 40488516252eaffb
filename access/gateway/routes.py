"""A called name → the deployment and its Ready instances; picks the least busy one. A name is a
deployment's (admins' scripts) or a model's (what a grant names): a model's goes to a deployment
serving it that has Ready instances.

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
    model_name: str = ""
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
    rows = Deployment.objects.values_list("pk", "name", "model_id", "created_at", "model__name")
    routes = {
        name: Route(pk, name, model_id, int(created.timestamp()), model_name)
        for pk, name, model_id, created, model_name in rows.order_by("pk")
    }
    by_id = {r.deployment_id: r for r in routes.values()}
    ready = Instance.objects.filter(state=InstanceState.READY).values_list("pk", "deployment_id", "address", "port")
    for pk, deployment_id, address, port in ready.order_by("pk"):
        if deployment_id in by_id:
            by_id[deployment_id].upstreams.append(Upstream(pk, f"http://{address}:{port}"))
    return routes


def resolve(table: dict[str, Route], name: str) -> Route | None:
    """The deployment called ``name``, else the deployment serving the model called ``name`` with
    the most Ready instances (the oldest on a tie); None if neither exists."""
    route = table.get(name)
    if route is not None:
        return route
    serving = [r for r in table.values() if r.model_name == name]
    return max(serving, key=lambda r: len(r.upstreams), default=None)


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
    return new
