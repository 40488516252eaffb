"""Tasks on the "console" queue that agents send (they hold no database credentials), and the
periodic ones. Names are spelled out: the agent sends them by name without importing this module."""
from __future__ import annotations

from typing import Any

from celery import shared_task

from fleet import services


@shared_task(name="fleet.register_node", ignore_result=False)
def register_node_task(*, name: Any, secret: Any, facts: Any, join_token: str | None = None,
                       node_id: int | None = None) -> dict:
    """The agent waits for this answer: the node id, or the reason it was refused."""
    try:
        node = services.register_node(name=name, secret=secret, facts=facts, join_token=join_token, node_id=node_id)
    except services.ServiceError as exc:
        return {"ok": False, "error": exc.message}
    return {"ok": True, "node_id": node.pk, "name": node.name, "kind": node.kind}


@shared_task(name="fleet.heartbeat")
def heartbeat_task(*, node_id: Any, secret: Any, sample: Any = None) -> None:
    services.heartbeat(node_id=node_id, secret=secret, sample=sample)


@shared_task(name="fleet.rollups")
def rollups_task(*, node_id: Any, secret: Any, minute: Any, rows: Any) -> int:
    return services.ingest_rollups(node_id=node_id, secret=secret, minute=minute, rows=rows)


@shared_task(name="fleet.check_liveness")
def check_liveness_task() -> int:
    return len(services.mark_offline())


@shared_task(name="fleet.prune_rollups")
def prune_rollups_task() -> int:
    return services.prune_rollups()


@shared_task(name="fleet.checksum_model")
def checksum_model_task(artifact_id: int) -> None:
    from fleet import registry

    registry.compute_checksums(artifact_id)


@shared_task(name="fleet.reconcile")
def reconcile_task(deployment_ids: list[int] | None = None) -> dict:
    from fleet import reconciler

    result = reconciler.reconcile(deployment_ids)
    return {"started": result.started, "stopped": result.stopped, "lost": result.lost}


@shared_task(name="fleet.instance_report")
def instance_report_task(*, node_id: Any, secret: Any, report: Any) -> None:
    from fleet import deploy

    deploy.instance_report(node_id=node_id, secret=secret, report=report)


@shared_task(name="fleet.runtime_report")
def runtime_report_task(*, node_id: Any, secret: Any, runtime: Any, state: Any, detail: Any = "") -> None:
    services.runtime_report(node_id=node_id, secret=secret, runtime=runtime, state=state, detail=detail)


@shared_task(name="fleet.job_report")
def job_report_task(*, node_id: Any, secret: Any, report: Any) -> None:
    from fleet import jobs

    jobs.report(node_id=node_id, secret=secret, report=report)
