"""Replicas that follow the load: each pass (beat, every ``FLEET_AUTOSCALE_S``) reads, for every
autoscaled deployment, vLLM's own gauges of its Ready instances as the agents last reported them
(running and waiting calls, and the token counters that show any call at all), and moves the
replica count toward ``ceil(load / target)`` within [min, max]:

- up once the load has stayed above what the replicas hold for ``scale_up_after_s``;
- down once it has stayed below for ``scale_down_after_s`` (the cooldown), never sooner than
  that after the last change nor while an instance still starts; to zero only when no call at all
  was seen for the cooldown;
- back from zero when the gateway holds a call for it (``wake``).

Each decision is one ``deployment.autoscale`` audit event with its reason and load; the page's
chart of replicas over time is drawn from those events. The clocks live in ``scale_state``,
written with ``update()`` so that a pass that decides nothing reloads no gateway's routes."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from django.db import transaction

import audit
from console.live import publish_on_commit
from fleet.deployments import reconciler
from fleet.deployments.choices import DesiredState, InstanceState, ScaleMetric
from fleet.deployments.models import Deployment, Instance
from fleet.nodes.choices import NodeState
from fleet.nodes.models import Node

ACTOR = "autoscaler"


@dataclass(frozen=True)
class Reading:
    """What a deployment's Ready instances report, summed."""

    ready: int
    running: float
    waiting: float
    tokens: float  # prompt + generated tokens so far: any change means a call was served
    starting: int = 0  # instances placed or starting: the replicas a scale-up added, on their way

    def load(self, metric: str) -> float:
        return self.waiting if metric == ScaleMetric.WAITING else self.running + self.waiting


@dataclass(frozen=True)
class Decision:
    replicas: int
    reason: str


def readings(deployment_ids: list[int]) -> dict[int, Reading]:
    """Each deployment's reading from its instances' figures in the online nodes' latest samples."""
    figures: dict[int, dict] = {}
    for sample in Node.objects.filter(state=NodeState.ONLINE).values_list("last_sample", flat=True):
        for f in (sample or {}).get("instances", []):
            if isinstance(f, dict) and isinstance(f.get("instance"), int):
                figures[f["instance"]] = f
    sums: dict[int, list[float]] = {pk: [0, 0.0, 0.0, 0.0, 0] for pk in deployment_ids}
    states = (InstanceState.READY, InstanceState.PENDING, InstanceState.STARTING)
    live = Instance.objects.filter(deployment_id__in=deployment_ids, state__in=states)
    for pk, deployment_id, state in live.values_list("pk", "deployment_id", "state"):
        row, f = sums[deployment_id], figures.get(pk, {})
        if state != InstanceState.READY:
            row[4] += 1
            continue
        row[0] += 1
        for i, key in ((1, "running"), (2, "waiting")):
            row[i] += _number(f.get(key))
        row[3] += _number(f.get("prompt_tokens")) + _number(f.get("generation_tokens"))
    return {pk: Reading(int(r[0]), r[1], r[2], r[3], int(r[4])) for pk, r in sums.items()}


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def decide(d: Deployment, reading: Reading, state: dict, now: float) -> Decision | None:
    """The replica count to move to now, or None; ``state`` (the deployment's clocks) is updated."""
    if state.get("tokens") != reading.tokens or reading.load(ScaleMetric.IN_FLIGHT) > 0 or reading.ready < d.replicas:
        state["active_at"] = now  # a call was served or runs since the last pass, or an instance starts
    state["tokens"] = reading.tokens
    current = d.replicas
    if current < d.min_replicas:
        return Decision(d.min_replicas, f"below its minimum of {d.min_replicas}")
    if current > d.max_replicas:
        return Decision(d.max_replicas, f"above its maximum of {d.max_replicas}")
    load = reading.load(d.scale_metric)
    wanted = min(d.max_replicas, max(d.min_replicas, 1, math.ceil(load / d.scale_target)))
    if d.min_replicas == 0 and now - state.get("active_at", now) >= d.scale_down_after_s:
        wanted = 0  # no call for the whole cooldown: stop until the gateway wakes it
    if current == 0 and wanted > 0:
        wanted = 0  # at zero only a held call wakes it (there is no load to read)
    if wanted > current:
        state.pop("down_since", None)
        since = state.setdefault("up_since", now)
        if reading.ready < current:
            return None  # the last step's instances still start: the load has yet to spread to them
        if now - since >= d.scale_up_after_s:
            return Decision(wanted, f"load {load:g} over {d.scale_target:g} per instance for {now - since:.0f} s")
        return None
    state.pop("up_since", None)
    if wanted == 0 and current > 0:  # idle for the whole cooldown already (a wake counts as a call)
        return Decision(0, f"no call for {now - state['active_at']:.0f} s: scaled to zero")
    if wanted < current:
        if reading.starting:  # judged once they serve: a burst on one instance read under target
            state.pop("down_since", None)  # while its new sibling started, and stopped it (2-core bench)
            return None
        since = state.setdefault("down_since", now)
        quiet = now - max(since, state.get("changed_at", 0.0))
        if quiet >= d.scale_down_after_s:
            return Decision(wanted, f"load {load:g} under {d.scale_target:g} per instance for {quiet:.0f} s")
        return None
    state.pop("down_since", None)
    return None


def autoscale_pass(now: float | None = None) -> list[tuple[str, int, int]]:
    """One pass over every autoscaled, running deployment: (name, from, to) for each change."""
    now = time.time() if now is None else now
    deployments = list(Deployment.objects.filter(autoscale=True, desired_state=DesiredState.RUNNING))
    found = readings([d.pk for d in deployments])
    changed = []
    for d in deployments:
        state = dict(d.scale_state)
        decision = decide(d, found[d.pk], state, now)
        if decision is None:
            if state != d.scale_state:
                Deployment.objects.filter(pk=d.pk).update(scale_state=state)
            continue
        load = found[d.pk].load(d.scale_metric)
        if apply(d.pk, decision, state, now, load=load, expect=d.replicas):
            changed.append((d.name, d.replicas, decision.replicas))
    return changed


def apply(pk: int, decision: Decision, state: dict, now: float, *, load: float, expect: int | None) -> bool:
    """Set the replicas (if they are still ``expect``: an admin's scale in between wins), audit the
    decision, reconcile after commit."""
    with transaction.atomic():
        d = Deployment.objects.select_for_update(no_key=True).filter(pk=pk, autoscale=True).first()
        if d is None or (expect is not None and d.replicas != expect) or d.replicas == decision.replicas:
            return False
        before = d.replicas
        state = {k: v for k, v in state.items() if k not in ("up_since", "down_since")} | {"changed_at": now}
        Deployment.objects.filter(pk=pk).update(replicas=decision.replicas, scale_state=state)
        audit.record(
            ACTOR,
            "deployment.autoscale",
            d,
            before={"replicas": before},
            after={"replicas": decision.replicas},
            reason=decision.reason,
            load=round(load, 3),
        )
        publish_on_commit(f"deployment.{pk}", {"kind": "changed"})
        reconciler.reconcile_after_commit(pk)
    return True


def wake(pk: int) -> bool:
    """A call is held for this deployment scaled to zero: start one replica (True if this did)."""
    now = time.time()
    d = Deployment.objects.filter(pk=pk).first()
    if d is None or not d.autoscale or d.replicas or d.desired_state != DesiredState.RUNNING:
        return False
    state = dict(d.scale_state) | {"active_at": now}
    wanted = max(1, d.min_replicas)
    return apply(pk, Decision(wanted, "a call arrived while it was scaled to zero"), state, now, load=1, expect=0)
