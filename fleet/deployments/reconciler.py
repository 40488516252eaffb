"""Make instances match deployments (DESIGN.md rule 1): place what is missing with the planner,
tell agents to start it, stop what nobody wants, replace what died with its node. Commands are
idempotent (keyed by instance id), so a repeated pass changes nothing."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import timedelta

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.utils import timezone

import audit
from console.live import publish_on_commit
from fleet.deployments import rollouts
from fleet.deployments.choices import DesiredState, InstanceState, Rollout
from fleet.deployments.models import Deployment, Instance
from fleet.nodes import commands, queries
from fleet.nodes.choices import NodeState
from fleet.nodes.models import Node
from fleet.planning import placement
from fleet.planning.estimator import GIB, ModelShape
from fleet.protocol import tasks

log = logging.getLogger(__name__)
ACTOR = "reconciler"
COVERING = InstanceState.LIVE | {InstanceState.FAILED}  # a Failed replica waits for the admin, not re-placed


@dataclass
class Pass:
    started: list[int] = field(default_factory=list)
    stopped: list[int] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)
    unplaced: dict[str, str] = field(default_factory=dict)


def spec_for(deployment: Deployment, replicas: int) -> placement.Spec:
    o = deployment.options
    return placement.Spec(
        shape=ModelShape.from_artifact(deployment.model),
        replicas=replicas,
        tp=o["tensor_parallel_size"],
        pp=o["pipeline_parallel_size"],
        max_model_len=o["max_model_len"],
        concurrency=1,
        gpu_memory_utilization=o["gpu_memory_utilization"],
        kv_dtype="auto" if o["kv_cache_dtype"] == "auto" else "fp8",
        strategy=deployment.strategy,
        selector=tuple(sorted(deployment.selector.items())),
        cpu_kv_space_bytes=o["cpu_kv_space_gib"] * GIB,
        block_size=o.get("block_size") or None,  # options saved before it existed lack it
        check_fit=not deployment.force,
    )


send = commands.send  # to a node's command stream, once the transaction commits


def reconcile_after_commit(deployment_id: int) -> None:
    """Reconcile this deployment on the worker once the change that calls for it is committed."""
    transaction.on_commit(
        lambda: current_app.send_task(tasks.RECONCILE, args=[[deployment_id]], queue=tasks.CONSOLE_QUEUE)
    )


def start_command(instance: Instance, deployment: Deployment, node: Node) -> None:
    send(
        node,
        tasks.START_INSTANCE,
        spec={
            "id": instance.pk,
            "served": deployment.name,
            "host": instance.address,
            "port": instance.port,
            "gpus": instance.gpus,
            "model_path": deployment.model.path,
            "options": deployment.options,
        },
    )


def _free_port(node_id: int, taken: dict[int, set[int]]) -> int:
    low, high = settings.FLEET_DEPLOY_PORTS
    used = taken.setdefault(node_id, set())
    port = next(p for p in range(low, high + 1) if p not in used)
    used.add(port)
    return port


def reconcile(deployment_ids: list[int] | None = None) -> Pass:
    result = Pass()
    deployments = Deployment.objects.only("pk").order_by("pk")
    if deployment_ids is not None:
        deployments = deployments.filter(pk__in=deployment_ids)
    nodes = {n.pk: n for n in Node.objects.all()}
    live = list(
        Instance.objects.filter(state__in=InstanceState.LIVE).values_list(
            "node_id", "port", "gpus", "deployment__options"
        )
    )
    taken: dict[int, set[int]] = {}
    busy_gpus: dict[int, set[int]] = {}
    ram_used: dict[int, int] = {}
    for node_id, port, gpus, options in live:
        taken.setdefault(node_id, set()).add(port)
        busy_gpus.setdefault(node_id, set()).update(gpus)
        ram_used[node_id] = ram_used.get(node_id, 0) + options.get("cpu_kv_space_gib", 1) * GIB
    lost_after = timezone.now() - timedelta(seconds=settings.FLEET_REPLACE_AFTER_S)
    fleet = None
    for listed in deployments:
        with transaction.atomic():
            # The deployment's row first, as every service that changes it, and FOR NO KEY UPDATE
            # throughout: an audit event holds the chain's lock to the commit, where the deferred
            # foreign-key check of a new instance wants the deployment's row (KEY SHARE). A stop that
            # held the row FOR UPDATE and waited for the chain deadlocked with such a commit.
            deployment = (
                Deployment.objects.select_for_update(no_key=True, of=("self",))
                .select_related("model")
                .filter(pk=listed.pk)
                .first()
            )
            if deployment is None:
                continue  # deleted since it was listed
            instances = list(deployment.instances.all())
            for inst in instances:
                node = nodes.get(inst.node_id) if inst.node_id is not None else None
                gone = node is None or (
                    node.state == NodeState.OFFLINE and (node.last_heartbeat or lost_after) <= lost_after
                )
                if inst.state in InstanceState.LIVE and gone:
                    inst.set_state(InstanceState.LOST)
                    inst.save(update_fields=["state", "updated_at"])
                    audit.record(None, "instance.lost", inst, cause="its node went offline")
                    result.lost.append(inst.pk)
            wanted = deployment.replicas if deployment.desired_state == DesiredState.RUNNING else 0
            covered: dict[int, Instance] = {}
            outdated: list[Instance] = []  # of an earlier revision: replaced one at a time
            for inst in sorted(instances, key=lambda i: i.created_at):
                if inst.state not in COVERING:
                    continue
                if inst.revision != deployment.revision:
                    outdated.append(inst)
                elif inst.replica >= wanted or inst.replica in covered:
                    if inst.state in InstanceState.LIVE:  # nobody wants it
                        _stop(inst, nodes, result)
                else:
                    covered[inst.replica] = inst
            if outdated or deployment.rollout:
                missing = _rolling_step(deployment, instances, covered, outdated, wanted, nodes, result)
            else:
                missing = [r for r in range(wanted) if r not in covered]
            if not missing:
                if deployment.placement_note:
                    Deployment.objects.filter(pk=deployment.pk).update(placement_note="")
                continue
            if fleet is None:
                fleet = queries.fleet_view()
            view = [_minus(n, busy_gpus.get(n.id, set()), ram_used.get(n.id, 0)) for n in fleet]
            planned = placement.plan(spec_for(deployment, len(missing)), view)
            if not planned.ok:
                note = planned.message + (" " + "; ".join(f"{k}: {v}" for k, v in list(planned.rejected.items())[:3]))
                Deployment.objects.filter(pk=deployment.pk).update(placement_note=note[:500])
                result.unplaced[deployment.name] = note
                continue
            for replica, stages in zip(missing, planned.replicas, strict=False):  # placed may be fewer
                if len({stage.node_id for stage in stages}) > 1:  # deploy.check refuses these up front
                    result.unplaced[deployment.name] = "pipeline stages on several nodes"
                    continue
                node = nodes[stages[0].node_id]
                gpus = [g for stage in stages for g in stage.gpus]  # every stage's GPUs: vLLM splits them
                inst = Instance.objects.create(
                    deployment=deployment,
                    replica=replica,
                    revision=deployment.revision,
                    node=node,
                    gpus=gpus,
                    port=_free_port(node.pk, taken),
                    address=node.address,
                )
                busy_gpus.setdefault(node.pk, set()).update(gpus)
                ram_used[node.pk] = ram_used.get(node.pk, 0) + deployment.options["cpu_kv_space_gib"] * GIB
                audit.record(None, "instance.place", inst, after={"node": node.name, "gpus": gpus, "port": inst.port})
                # the deployment's page shows the new instance now, not at its first state report
                publish_on_commit(f"deployment.{deployment.pk}", {"kind": "placed", "instance": inst.pk})
                start_command(inst, deployment, node)
                result.started.append(inst.pk)
            Deployment.objects.filter(pk=deployment.pk).update(placement_note="")
    return result


def _stop(inst: Instance, nodes: dict[int, Node], result: Pass) -> None:
    """Stop an instance nobody wants: the gateway stops sending it calls (it is no longer Ready),
    and its agent lets the calls in flight finish (up to ``FLEET_DRAIN_S``) before it stops it."""
    inst.set_state(InstanceState.STOPPING)
    inst.save(update_fields=["state", "updated_at"])
    if inst.node_id in nodes:
        send(nodes[inst.node_id], tasks.STOP_INSTANCE, instance_id=inst.pk, drain_s=settings.FLEET_DRAIN_S)
    result.stopped.append(inst.pk)


def _rolling_step(
    d: Deployment,
    instances: list[Instance],
    covered: dict[int, Instance],
    outdated: list[Instance],
    wanted: int,
    nodes: dict[int, Node],
    result: Pass,
) -> list[int]:
    """One step of a rolling update; the replica slots to place now. Surge one instance of the
    current revision, wait until it is Ready, then stop (drain) one of the old revision, and
    again, until every replica runs the current one. A new instance that fails rolls back."""
    failed = [i for i in covered.values() if i.state == InstanceState.FAILED]
    if failed and d.rollout:
        back = rollouts.previous(d)
        if back is not None and back.model is not None:
            rollouts.roll_back(
                ACTOR, d, back, f"instance {failed[0].pk} of revision {d.revision} failed: {failed[0].cause}"
            )
            reconcile_after_commit(d.pk)  # the next pass replaces the failed ones with the old revision
            return []
    for inst in outdated:
        if inst.state == InstanceState.FAILED:  # serves nothing: retired at once
            inst.set_state(InstanceState.STOPPED)
            inst.save(update_fields=["state", "updated_at"])
    old = [i for i in outdated if i.state in InstanceState.LIVE]
    if wanted == 0:  # stopped or scaled to zero: nothing to keep serving, all go at once
        for inst in old:
            _stop(inst, nodes, result)
        old = []
    if d.rollout == Rollout.PAUSED:
        return []
    if any(i.state != InstanceState.READY for i in covered.values()):
        return []  # the surged instance still starts (or restarts after a crash)
    recent = timezone.now() - timedelta(seconds=settings.FLEET_DRAIN_S + 60)
    if any(i.state == InstanceState.STOPPING and i.updated_at > recent for i in instances):
        return []  # an old instance still drains: its GPUs are not free yet
    if old and len(covered) + len(old) > wanted:
        _stop(old[0], nodes, result)  # the oldest: a new one serves in its place
        return []
    if len(covered) < wanted:
        free = [r for r in range(wanted) if r not in covered]
        slot = old[0].replica if old and old[0].replica in free else free[0]
        return [slot]
    if d.rollout:
        rollouts.finish(d)
    return []


def _minus(node: placement.NodeView, gpus: set[int], ram: int) -> placement.NodeView:
    """The node as the planner should see it: GPUs held by running instances are taken."""
    if not gpus and not ram:
        return node
    return replace(node, gpus=[g for g in node.gpus if g.index not in gpus], ram_free=max(0, node.ram_free - ram))
