"""Side effects for jobs: queue a quantization or a benchmark (validated, audited, dispatched to
the node's queue after commit), cancel one, and take in what the agent running it reports. A
succeeded quantization registers its output as a variant of its parent, with recipe, size,
checksums (the console's own, compared with the node's) and the perplexity delta."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from django.db import transaction
from django.utils import timezone

import audit
from console.actions import Actor, ServiceError
from console.live import publish_on_commit
from console.states import TransitionError
from fleet.catalog import artifacts
from fleet.catalog import services as registry
from fleet.catalog.models import ModelArtifact
from fleet.deployments import reconciler
from fleet.deployments.choices import DesiredState, InstanceState
from fleet.deployments.models import Deployment, Instance
from fleet.jobs import params as job_params
from fleet.jobs.choices import JobKind, JobState
from fleet.jobs.models import Job
from fleet.nodes.choices import NodeState
from fleet.nodes.models import Node
from fleet.nodes.services import agent_node, refuse
from fleet.protocol import runtimes, tasks

if TYPE_CHECKING:
    from access.people.models import User

log = logging.getLogger(__name__)
FINISHED_ACTIONS: dict[str, str] = {
    JobState.SUCCEEDED: "job.succeeded",
    JobState.FAILED: "job.failed",
    JobState.CANCELLED: "job.cancelled",
}


def _push(job: Job, kind: str, **extra: Any) -> None:
    """Live: the job's own page (job.<id>) and the jobs list (jobs)."""
    payload = {"kind": kind, "job": job.pk, "state": job.state, "progress": job.progress, "phase": job.phase, **extra}
    publish_on_commit((job.topic, "jobs"), payload)


def _public(job: Job) -> dict:
    return {
        "kind": job.kind,
        "params": job.params,
        "node": job.node.name if job.node else None,
        "model": job.model.name if job.model else None,
        "deployment": job.deployment.name if job.deployment else None,
    }


def _choose_node(name: Any) -> Node:
    """The node asked for, or the online, uncordoned node best suited: the most GPU memory (so GPU
    nodes before CPU ones), then the fewest jobs running."""
    nodes = Node.objects.filter(state=NodeState.ONLINE)
    if name:
        node = nodes.filter(name=name).first()
        if node is None:
            raise ServiceError(f"No online node named {name!r}.", "node")
        return node
    candidates = list(nodes.filter(cordoned=False).prefetch_related("gpus"))
    busy = Counter(Job.objects.filter(state=JobState.RUNNING, node__in=candidates).values_list("node_id", flat=True))
    node = min(candidates, default=None, key=lambda n: (-sum(g.memory_total for g in n.gpus.all()), busy[n.pk], n.name))
    if node is None:
        raise ServiceError("No node is online to run the job; start an agent (README: adding a GPU node).", "node")
    return node


def _output_dir(model: ModelArtifact, variant: str) -> Path:
    """The variant's directory: beside its parent's, under the same model root (the name is a slug:
    no separators, so it cannot climb out)."""
    out = Path(model.path).parent / variant
    if not any(out.is_relative_to(root) for root in artifacts.model_roots()):
        raise ServiceError(
            f"{out} would be outside the model roots; move {model.name} into a folder of a root.", "name"
        )
    if out.exists() or out.with_name(out.name + ".partial").exists():
        raise ServiceError(f"{out} exists already; give the variant another name or move that directory.", "name")
    return out


def quantize(
    actor: Actor, model: ModelArtifact, params: Any, calibration_file: bytes | None = None, calibration_name: str = ""
) -> Job:
    if not isinstance(model, ModelArtifact):
        raise ServiceError("Choose a registered model to quantize.", "model")
    clean, samples = job_params.quantize(model, params, calibration_file, calibration_name)
    out = _output_dir(model, clean["name"])
    node = _choose_node(params.get("node") if isinstance(params, dict) else None)
    clean["node"] = node.name
    with transaction.atomic():
        if Job.objects.filter(
            kind=JobKind.QUANTIZE, state__in=[JobState.QUEUED, JobState.RUNNING], params__name=clean["name"]
        ).exists():
            raise ServiceError(f"A job making {clean['name']!r} is already queued or running.", "name")
        job = Job.objects.create(
            kind=JobKind.QUANTIZE,
            params=clean,
            node=node,
            model=model,
            created_by=cast("User | None", actor if getattr(actor, "pk", None) else None),
        )
        audit.record(actor, "job.quantize", job, after=_public(job))
        engine, version = runtimes.DEFAULT_COMPRESSOR
        spec_params = {k: v for k, v in clean.items() if k not in ("calibration", "node", "name")}
        spec_params |= {"model_path": model.path, "output_path": str(out), "calibration": samples}
        reconciler.send(
            node,
            tasks.RUN_JOB,
            spec={"id": job.pk, "kind": "quantize", "runtime": f"{engine}=={version}", "params": spec_params},
        )
        _push(job, "created")
    return job


def ready_instance(deployment: Deployment) -> Instance:
    if deployment.desired_state != DesiredState.RUNNING:
        raise ServiceError(f"Deployment {deployment.name} is stopped; start it, then benchmark it.", "deployment")
    instance = deployment.instances.filter(state=InstanceState.READY).select_related("node").order_by("replica").first()
    if instance is None or instance.node is None:
        raise ServiceError(
            f"Deployment {deployment.name} has no Ready instance yet; wait until one is Ready.", "deployment"
        )
    return instance


def benchmark(actor: Actor, deployment: Deployment, params: Any) -> Job:
    if not isinstance(deployment, Deployment):
        raise ServiceError("Choose a deployment to benchmark.", "deployment")
    clean = job_params.benchmark(params, int(deployment.options.get("max_model_len") or 2048))
    instance = ready_instance(deployment)
    assert instance.node is not None  # ready_instance checks it
    clean |= {"instance": instance.pk, "served": deployment.name}
    with transaction.atomic():
        job = Job.objects.create(
            kind=JobKind.BENCHMARK,
            params=clean,
            node=instance.node,
            model=deployment.model,
            deployment=deployment,
            created_by=cast("User | None", actor if getattr(actor, "pk", None) else None),
        )
        audit.record(actor, "job.benchmark", job, after=_public(job))
        reconciler.send(
            instance.node,
            tasks.RUN_JOB,
            spec={
                "id": job.pk,
                "kind": "benchmark",
                "runtime": deployment.options["runtime"],
                "params": {
                    k: clean[k] for k in ("mode", "levels", "input_len", "output_len", "num_prompts", "seed", "served")
                }
                | {"endpoint": f"http://{instance.address}:{instance.port}"},
            },
        )
        _push(job, "created")
    return job


def cancel(actor: Actor, job: Job) -> Job:
    with transaction.atomic():
        job = Job.objects.select_for_update(no_key=True, of=("self",)).select_related("node").get(pk=job.pk)
        if job.done:
            raise ServiceError(f"This job has {job.state} already; there is nothing to cancel.")
        if job.cancel_requested:
            return job
        job.cancel_requested, was = True, job.state
        if job.state == JobState.QUEUED or job.node is None:  # nothing runs yet: it ends now
            job.set_state(JobState.CANCELLED)
            job.finished_at = timezone.now()
        job.save(update_fields=["cancel_requested", "state", "finished_at"])
        # One event for the person's action; a running job's end is the agent's event (job.cancelled).
        audit.record(actor, "job.cancel", job, before={"state": was}, after={"state": job.state})
        if job.node is not None:  # the agent kills a running job's process group, or skips a queued one
            reconciler.send(job.node, tasks.CANCEL_JOB, job_id=job.pk)
        _push(job, "finished" if job.done else "cancelling")
    return job


def _finish(job: Job, state: str, *, actor: Actor, error: str = "") -> None:
    was = job.state
    if state == JobState.FAILED and job.cancel_requested:
        # Asked to stop, it stopped: a process killed mid-write, or its node lost before the kill
        # was confirmed, ends as the person asked, with what happened kept in its error.
        state = JobState.CANCELLED
    job.set_state(state)
    job.finished_at, job.error = timezone.now(), error[:500]
    if state == JobState.SUCCEEDED:
        job.progress = 100
    job.save()
    audit.record(
        actor,
        FINISHED_ACTIONS[state],
        job,
        before={"state": was},
        after={"state": state},
        error=error or None,
        variant=job.variant.name if job.variant else None,
    )


def _register_variant(job: Job, result: dict) -> ModelArtifact:
    """Register the output; the console hashes the files itself and must find what the node wrote."""
    if job.model is None:
        raise ServiceError("its parent model was unregistered while the job ran; register the output by hand")
    recipe = {
        "job": job.pk,
        "scheme": job.params["scheme"],
        "bits": job.params["bits"],
        **{
            k: job.params[k]
            for k in ("group_size", "smoothing_strength", "num_samples", "max_seq_length", "calibration")
            if k in job.params
        },
        "tool": runtimes.DEFAULT_COMPRESSOR[0] + "==" + runtimes.DEFAULT_COMPRESSOR[1],
        "recipe_yaml": str(result.get("recipe", ""))[:20000],
        "perplexity": {k: result.get(f"perplexity_{k}") for k in ("parent", "variant", "delta", "delta_pct")},
    }
    variant = registry.register(
        job.created_by,
        path=str(result.get("output_path", "")),
        name=job.params["name"],
        parent=job.model,
        recipe=recipe,
        tags=["quantized", job.params["scheme"]],
        sensitivity=job.model.sensitivity,
        license=job.model.license,
        checksum_now=True,
    )
    theirs = {f["name"]: f["sha256"] for f in result.get("files", []) if isinstance(f, dict)}
    ours = dict(variant.files.values_list("name", "sha256"))
    if ours != theirs:
        differ = sorted(n for n in set(ours) | set(theirs) if ours.get(n) != theirs.get(n))
        raise ServiceError(f"the files the console read differ from what the node wrote: {', '.join(differ[:5])}")
    return variant


def report(*, node_id: Any, report: Any) -> Job | None:
    """What the agent running a job says: log lines, progress, and its end."""
    node = agent_node(node_id)
    if node is None or not isinstance(report, dict) or not isinstance(report.get("job"), int):
        log.warning("job report refused (node %r)", node_id)
        return None
    with transaction.atomic():
        job = (
            Job.objects.select_for_update(no_key=True, of=("self",))
            .select_related("model", "created_by")
            .filter(pk=report["job"], node=node)
            .first()
        )
        if job is None and Job.objects.filter(pk=report["job"]).exists():
            refuse(node.pk, tasks.JOB_REPORT, f"a report about job {report['job']} of another node")
            return None
        if job is None or job.done:
            return job
        lines = [str(line)[:2000] for line in report.get("lines") or [] if isinstance(line, str)][-500:]
        job.append_log(lines)
        if isinstance(report.get("progress"), (int, float)):
            job.progress = max(0.0, min(100.0, float(report["progress"])))
        if isinstance(report.get("phase"), str):
            job.phase = report["phase"][:200]
        state = report.get("state")
        actor = f"agent:{node.name}"
        try:
            if state == JobState.RUNNING and job.state == JobState.QUEUED:
                job.set_state(JobState.RUNNING)
                job.started_at = timezone.now()
                job.save(update_fields=["state", "started_at", "log", "progress", "phase"])
            elif state == JobState.SUCCEEDED:
                reported = report.get("result")
                result = reported if isinstance(reported, dict) else {}
                job.result = result
                if job.kind == JobKind.QUANTIZE:
                    job.artifacts = result.get("files", [])
                    try:
                        with transaction.atomic():
                            job.variant = _register_variant(job, result)
                    except ServiceError as exc:
                        _finish(
                            job,
                            JobState.FAILED,
                            actor=actor,
                            error=f"The variant could not be registered: {exc.message}",
                        )
                        _push(job, "finished", lines=lines, error=job.error)
                        return job
                _finish(job, JobState.SUCCEEDED, actor=actor)
            elif state in (JobState.FAILED, JobState.CANCELLED):
                _finish(job, state, actor=actor, error=str(report.get("error", ""))[:500])
            else:
                job.save(update_fields=["log", "progress", "phase"])
        except TransitionError:
            log.info("job %s: ignoring %s after %s", job.pk, state, job.state)
            return job
        _push(
            job,
            "finished" if job.done else "progress",
            lines=lines,
            error=job.error,
            variant=job.variant_id,
            variant_name=job.variant.name if job.variant else None,
        )
    return job


def fail_jobs_on(node: Node, why: str) -> int:
    """A node that went away, or whose agent restarted, takes its running jobs with it. Queued ones
    wait in the node's queue for its return (or a cancel)."""
    failed = 0
    for job in Job.objects.select_for_update(no_key=True).filter(node=node, state=JobState.RUNNING):
        _finish(job, JobState.FAILED, actor=None, error=why)
        _push(job, "finished", error=job.error)
        failed += 1
    return failed


__all__ = ["quantize", "benchmark", "cancel", "report", "fail_jobs_on", "ready_instance"]
