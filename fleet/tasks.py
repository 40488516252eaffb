"""Tasks on the "console" queue: the reports the agent endpoint relays for a node (named by the
credential its link was opened with), and the periodic ones.

Reports survive a worker's crash (SURVIVES_A_CRASH): each is applied under a row lock through the
state machine, so one delivered twice changes nothing the second time (a repeated job report can
repeat its log lines, nothing else)."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from console.celery import SURVIVES_A_CRASH
from fleet.catalog import services as registry
from fleet.deployments import autoscaler, reconciler
from fleet.deployments import services as deploy
from fleet.jobs import services as jobs
from fleet.nodes import services
from fleet.protocol import tasks as names


@shared_task(name=names.HEARTBEAT)
def heartbeat_task(*, node_id: Any, sample: Any = None) -> None:
    services.heartbeat(node_id=node_id, sample=sample)


@shared_task(name=names.ROLLUPS)
def rollups_task(*, node_id: Any, minute: Any, rows: Any) -> int:
    return services.ingest_rollups(node_id=node_id, minute=minute, rows=rows)


@shared_task(name=names.CHECK_LIVENESS)
def check_liveness_task() -> int:
    return len(services.mark_offline())


@shared_task(name=names.PRUNE_ROLLUPS)
def prune_rollups_task() -> int:
    return services.prune_rollups()


@shared_task(name=names.CHECKSUM_MODEL, bind=True, **SURVIVES_A_CRASH)
def checksum_model_task(self: Any, artifact_id: int) -> None:
    registry.compute_checksums(artifact_id, claim=self.request.id or "")


@shared_task(name=names.RECONCILE)
def reconcile_task(deployment_ids: list[int] | None = None) -> dict:
    result = reconciler.reconcile(deployment_ids)
    return {"started": result.started, "stopped": result.stopped, "lost": result.lost}


@shared_task(name=names.AUTOSCALE)
def autoscale_task() -> list:
    return autoscaler.autoscale_pass()


@shared_task(name=names.INSTANCE_REPORT, **SURVIVES_A_CRASH)
def instance_report_task(*, node_id: Any, report: Any) -> None:
    deploy.instance_report(node_id=node_id, report=report)


@shared_task(name=names.RUNTIME_REPORT, **SURVIVES_A_CRASH)
def runtime_report_task(*, node_id: Any, runtime: Any, state: Any, detail: Any = "") -> None:
    services.runtime_report(node_id=node_id, runtime=runtime, state=state, detail=detail)


@shared_task(name=names.JOB_REPORT, **SURVIVES_A_CRASH)
def job_report_task(*, node_id: Any, report: Any) -> None:
    jobs.report(node_id=node_id, report=report)
