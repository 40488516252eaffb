"""Side effects for deployments: create, scale, start, stop, restart, delete (each audited, then
reconciled after commit), and the agents' reports of what their instances do."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, cast

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

import audit
from console.actions import Actor, ServiceError
from console.live import publish_on_commit
from console.states import TransitionError
from fleet.catalog.models import ModelArtifact, slug_validator
from fleet.deployments import reconciler, rollouts
from fleet.deployments.choices import DesiredState, InstanceState, Rollout, Routing, ScaleMetric
from fleet.deployments.models import Deployment, Instance
from fleet.nodes import queries
from fleet.nodes.models import Node
from fleet.nodes.services import agent_node, fleet_event, refuse
from fleet.planning import placement
from fleet.planning.estimator import EstimateError
from fleet.protocol import tasks
from fleet.protocol import vllm as vllm_options

if TYPE_CHECKING:
    from access.people.models import User

log = logging.getLogger(__name__)
MAX_REPLICAS = 64


def _snapshot(d: Deployment) -> dict:
    return {
        "name": d.name,
        "model": d.model.name,
        "replicas": d.replicas,
        "desired_state": d.desired_state,
        "options": d.options,
        "selector": d.selector,
        "strategy": d.strategy,
        "routing": d.routing,
        "fallback": d.fallback.name if d.fallback else None,
        "force": d.force,
        "autoscale": {k: getattr(d, k) for k in AUTOSCALE_FIELDS} if d.autoscale else None,
    }


def _event(d: Deployment, kind: str, **extra: Any) -> None:
    publish_on_commit(f"deployment.{d.pk}", {"kind": kind, **extra})


def check(
    *,
    name: Any,
    model: Any,
    replicas: Any,
    options: Any,
    selector: Any,
    strategy: Any,
    force: bool,
    routing: Any = Routing.LEAST_BUSY,
) -> tuple[dict, placement.Placement]:
    """Validate a deployment and plan it over the fleet; ServiceError names the field at fault."""
    _check_routing(routing)
    try:
        slug_validator(name)
    except ValidationError as exc:
        raise ServiceError(f"Name {name!r}: {exc.messages[0]}", "name") from None
    if not isinstance(model, ModelArtifact):
        raise ServiceError("Choose a registered model.", "model")
    if isinstance(replicas, bool) or not isinstance(replicas, int) or not 0 <= replicas <= MAX_REPLICAS:
        raise ServiceError(f"Replicas must be 0–{MAX_REPLICAS}.", "replicas")
    if not isinstance(selector, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in selector.items()
    ):
        raise ServiceError("The node selector maps label names to values.", "selector")
    try:
        clean = vllm_options.validate(options, settings.FLEET_VLLM_EXTRA_OPTIONS)
    except vllm_options.OptionError as exc:
        raise ServiceError(exc.message, exc.field) from None
    draft = Deployment(
        name=name,
        model=model,
        replicas=max(1, replicas),
        options=clean,
        selector=selector,
        strategy=strategy,
        force=force,
    )
    try:
        planned = placement.plan(reconciler.spec_for(draft, max(1, replicas)), queries.fleet_view())
    except EstimateError as exc:
        raise ServiceError(exc.message, exc.field or "options") from None
    return clean, planned


def create(
    actor: Actor,
    *,
    name: str,
    model: Any,
    replicas: int = 1,
    options: Any = None,
    selector: Any = None,
    strategy: str = "binpack",
    routing: Any = Routing.LEAST_BUSY,
    force: bool = False,
) -> Deployment:
    options, selector = options if options is not None else {}, selector if selector is not None else {}
    clean, planned = check(
        name=name,
        model=model,
        replicas=replicas,
        options=options,
        selector=selector,
        strategy=strategy,
        force=force,
        routing=routing,
    )
    if replicas and not planned.ok:
        reasons = "; ".join(f"{node}: {why}" for node, why in list(planned.rejected.items())[:5])
        raise ServiceError(f"{planned.message} {reasons}".strip(), "options")
    if any(len({stage.node_id for stage in stages}) > 1 for stages in planned.replicas):
        raise ServiceError(
            "These pipeline stages would span several nodes; running one replica across nodes "
            "(vLLM over a Ray cluster) is not supported yet. Use a node with "
            f"{clean['tensor_parallel_size'] * clean['pipeline_parallel_size']} GPUs, or a smaller "
            "pipeline parallel size.",
            "pipeline_parallel_size",
        )
    try:
        with transaction.atomic():
            deployment = Deployment.objects.create(
                name=name,
                model=model,
                replicas=replicas,
                options=clean,
                selector=selector,
                strategy=strategy,
                routing=routing,
                force=force,
                created_by=cast("User | None", actor if getattr(actor, "pk", None) else None),
            )
            audit.record(actor, "deployment.create", deployment, after=_snapshot(deployment))
            reconciler.reconcile_after_commit(deployment.pk)
    except IntegrityError:
        raise ServiceError(f"A deployment named {name!r} exists already.", "name") from None
    return deployment


def _change(actor: Actor, deployment: Deployment, action: str, **changes: Any) -> Deployment:
    with transaction.atomic():
        d = Deployment.objects.select_for_update(no_key=True).select_related("model").get(pk=deployment.pk)
        before = {k: getattr(d, k) for k in changes}
        for key, value in changes.items():
            if key == "desired_state":
                d.set_desired_state(value)
            else:
                setattr(d, key, value)
        d.save()
        audit.record(actor, action, d, before=before, after=changes)
        _event(d, "changed")
        reconciler.reconcile_after_commit(d.pk)
    return d


def scale(actor: Actor, deployment: Deployment, replicas: Any) -> Deployment:
    if isinstance(replicas, bool) or not isinstance(replicas, int) or not 0 <= replicas <= MAX_REPLICAS:
        raise ServiceError(f"Replicas must be 0–{MAX_REPLICAS}.", "replicas")
    return _change(actor, deployment, "deployment.scale", replicas=replicas)


def _check_routing(routing: Any) -> None:
    if routing not in Routing.values:
        raise ServiceError(f"Routing must be one of: {', '.join(Routing.values)}.", "routing")


def set_routing(actor: Actor, deployment: Deployment, routing: Any) -> Deployment:
    """How the gateway picks an instance for each call; every gateway reloads it at once."""
    _check_routing(routing)
    return _change(actor, deployment, "deployment.routing", routing=routing)


def set_fallback(actor: Actor, deployment: Deployment, fallback: Any) -> Deployment:
    """The deployment that answers this one's calls while it has no Ready instance or fails
    before the first byte (None: none). One hop: a fallback's own fallback is not followed."""
    if fallback is not None and not isinstance(fallback, Deployment):
        raise ServiceError("Choose a deployment as the fallback, or none.", "fallback")
    if fallback is not None and fallback.pk == deployment.pk:
        raise ServiceError("A deployment cannot be its own fallback; choose another one.", "fallback")
    return _change(actor, deployment, "deployment.fallback", fallback_id=fallback.pk if fallback else None)


ROLLOUT_ACTIONS = ("pause", "resume", "abort")
AUTOSCALE_FIELDS = (
    "autoscale",
    "min_replicas",
    "max_replicas",
    "scale_metric",
    "scale_target",
    "scale_up_after_s",
    "scale_down_after_s",
)


def set_autoscale(actor: Actor, deployment: Deployment, values: dict[str, Any]) -> Deployment:
    """Turn autoscaling on or off and set its bounds, target and windows (fields as validated by
    AutoscaleSerializer); the autoscaler's next pass moves the replicas within the bounds."""
    changes = {k: values[k] for k in AUTOSCALE_FIELDS if k in values}
    low = changes.get("min_replicas", deployment.min_replicas)
    high = changes.get("max_replicas", deployment.max_replicas)
    if not 1 <= high <= MAX_REPLICAS:
        raise ServiceError(f"Max replicas must be 1–{MAX_REPLICAS}.", "max_replicas")
    if not 0 <= low <= high:
        raise ServiceError(f"Min replicas must be 0–{high} (the max).", "min_replicas")
    if "scale_metric" in changes and changes["scale_metric"] not in ScaleMetric.values:
        raise ServiceError(f"The metric must be one of: {', '.join(ScaleMetric.values)}.", "scale_metric")
    with transaction.atomic():
        d = _change(actor, deployment, "deployment.autoscale_settings", **changes)
        # The autoscaler's clocks start again: idle time counted while it was off (or under other
        # bounds) must not scale it to zero on the first pass.
        now = time.time()
        d.scale_state = {"active_at": now, "changed_at": now}
        Deployment.objects.filter(pk=d.pk).update(scale_state=d.scale_state)
    return d


def update(actor: Actor, deployment: Deployment, values: dict[str, Any]) -> Deployment:
    """A new revision: another model (or variant) and/or vLLM options (merged over the current
    ones; the runtime version is one of them). The reconciler rolls it out one replica at a time,
    without a failed call; unchanged, nothing happens."""
    model = values.get("model", deployment.model)
    given = values.get("options", {})
    if not isinstance(given, dict):
        raise ServiceError("The options are an object of vLLM option names and values.", "options")
    with transaction.atomic():
        d = Deployment.objects.select_for_update(no_key=True).select_related("model").get(pk=deployment.pk)
        clean, _planned = check(
            name=d.name,
            model=model,
            replicas=d.replicas,
            options={**d.options, **given},
            selector=d.selector,
            strategy=d.strategy,
            force=d.force,
            routing=d.routing,
        )
        if rollouts.new(actor, d, model, clean) is not None:
            reconciler.reconcile_after_commit(d.pk)
    return d


def rollout(actor: Actor, deployment: Deployment, action: Any) -> Deployment:
    """Pause or resume a rolling update, or abort it: back to the revision it started from."""
    if action not in ROLLOUT_ACTIONS:
        raise ServiceError(f"The action must be one of: {', '.join(ROLLOUT_ACTIONS)}.", "action")
    with transaction.atomic():
        d = Deployment.objects.select_for_update(no_key=True).select_related("model").get(pk=deployment.pk)
        if action == "abort":
            if d.rollout == Rollout.NONE:
                raise ServiceError("No rollout is under way: there is nothing to abort.", "action")
            back = rollouts.previous(d)
            if back is None:
                raise ServiceError("There is no earlier revision to go back to.", "action")
            rollouts.roll_back(actor, d, back, f"aborted by {getattr(actor, 'username', actor)}")
        else:
            rollouts.set_paused(actor, d, action == "pause")
        reconciler.reconcile_after_commit(d.pk)
    return d


def rollback(actor: Actor, deployment: Deployment, number: Any) -> Deployment:
    """Make an earlier revision current again; rolled out like an update."""
    with transaction.atomic():
        d = Deployment.objects.select_for_update(no_key=True).select_related("model").get(pk=deployment.pk)
        to = d.revisions.select_related("model").filter(number=number).first()
        if to is None:
            raise ServiceError(f"This deployment has no revision {number}.", "revision")
        rollouts.roll_back(actor, d, to, f"rolled back by {getattr(actor, 'username', actor)}")
        reconciler.reconcile_after_commit(d.pk)
    return d


def start(actor: Actor, deployment: Deployment) -> Deployment:
    return _change(actor, deployment, "deployment.start", desired_state=DesiredState.RUNNING)


def stop(actor: Actor, deployment: Deployment) -> Deployment:
    return _change(actor, deployment, "deployment.stop", desired_state=DesiredState.STOPPED)


def restart(actor: Actor, deployment: Deployment) -> Deployment:
    """Stop every instance (Failed ones included); the reconciler starts fresh ones."""
    with transaction.atomic():
        d = Deployment.objects.select_for_update(no_key=True).get(pk=deployment.pk)
        for inst in d.instances.filter(state__in=InstanceState.LIVE | {InstanceState.FAILED}).select_related("node"):
            was = inst.state
            inst.set_state(InstanceState.STOPPING if was in InstanceState.LIVE else InstanceState.STOPPED)
            inst.save(update_fields=["state", "updated_at"])
            if was in InstanceState.LIVE and inst.node is not None:
                reconciler.send(inst.node, tasks.STOP_INSTANCE, instance_id=inst.pk)
        audit.record(actor, "deployment.restart", d)
        _event(d, "changed")
        reconciler.reconcile_after_commit(d.pk)
    return d


def delete(actor: Actor, deployment: Deployment) -> None:
    with transaction.atomic():
        d = Deployment.objects.select_for_update(no_key=True).select_related("model").get(pk=deployment.pk)
        for inst in d.instances.filter(state__in=InstanceState.LIVE).select_related("node"):
            if inst.node is not None:
                reconciler.send(inst.node, tasks.STOP_INSTANCE, instance_id=inst.pk)
        audit.record(actor, "deployment.delete", d, before=_snapshot(d))
        d.delete()


def drain_node(actor: Actor, node: Any) -> int:
    """Cordon the node and move its instances elsewhere: each is stopped here and the reconciler
    places its replica again (the cordon keeps it off this node). Returns how many move."""
    moved = set()
    with transaction.atomic():
        # The cordon is part of the drain: one action, one audit event (its "cordoned" says it).
        newly_cordoned = Node.objects.filter(pk=node.pk, cordoned=False).update(cordoned=True) == 1
        if newly_cordoned:
            node.cordoned = True
            fleet_event("cordon", node)
        for inst in Instance.objects.select_for_update(no_key=True).filter(node=node, state__in=InstanceState.LIVE):
            inst.set_state(InstanceState.STOPPING)
            inst.save(update_fields=["state", "updated_at"])
            reconciler.send(node, tasks.STOP_INSTANCE, instance_id=inst.pk)
            moved.add(inst.deployment_id)
        audit.record(
            actor,
            "node.drain",
            node,
            after={"instances": len(moved), "cordoned": True},
            before={"cordoned": not newly_cordoned},
        )
        for deployment_id in moved:
            reconciler.reconcile_after_commit(deployment_id)
    return len(moved)


# --- what agents report -------------------------------------------------------------------------
REPORT_ACTIONS = {
    InstanceState.READY: "instance.ready",
    InstanceState.CRASHED: "instance.crash",
    InstanceState.FAILED: "instance.failed",
    InstanceState.STOPPED: "instance.stopped",
}


def instance_report(*, node_id: Any, report: Any) -> Instance | None:
    node = agent_node(node_id)
    if node is None or not isinstance(report, dict) or not isinstance(report.get("instance"), int):
        log.warning("instance report refused (node %r)", node_id)
        return None
    state = report.get("state")
    if state not in InstanceState.values:
        return None
    with transaction.atomic():
        inst = (
            Instance.objects.select_for_update(no_key=True)
            .select_related("deployment")
            .filter(pk=report["instance"], node=node)
            .first()
        )
        if inst is None and Instance.objects.filter(pk=report["instance"]).exists():
            refuse(node.pk, tasks.INSTANCE_REPORT, f"a report about instance {report['instance']} of another node")
            return None
        if inst is None:
            # Not ours any more (deleted deployment): make sure it does not keep running.
            if state not in (InstanceState.STOPPED, InstanceState.FAILED):
                reconciler.send(node, tasks.STOP_INSTANCE, instance_id=report["instance"])
            return None
        was, restarts = inst.state, report.get("restarts")
        if state != was:
            try:
                inst.set_state(state)
            except TransitionError:
                log.info("instance %s: ignoring %s after %s", inst.pk, state, was)
                return inst
        if isinstance(report.get("pid"), int):
            inst.pid = report["pid"]
        if isinstance(restarts, int):
            inst.restarts = restarts
        if "exit_code" in report and (report["exit_code"] is None or isinstance(report["exit_code"], int)):
            inst.exit_code = report["exit_code"]
        if state in (InstanceState.CRASHED, InstanceState.FAILED):
            inst.cause, inst.remedy = str(report.get("cause", ""))[:200], str(report.get("remedy", ""))[:500]
        if state == InstanceState.READY:
            inst.ready_at, inst.cause, inst.remedy = timezone.now(), "", ""
        inst.save()
        if state != was:
            action = REPORT_ACTIONS.get(state)
            if state == InstanceState.STARTING and was == InstanceState.CRASHED:
                action = "instance.restart"
            if action:
                audit.record(
                    f"agent:{node.name}",
                    action,
                    inst,
                    before={"state": was},
                    after={"state": state, "pid": inst.pid, "restarts": inst.restarts},
                    cause=inst.cause or None,
                )
            _event(
                inst.deployment,
                "instance",
                instance=inst.pk,
                state=state,
                pid=inst.pid,
                cause=inst.cause,
                remedy=inst.remedy,
                restarts=inst.restarts,
            )
    return inst
