"""Reads for the deployment pages."""

from __future__ import annotations

import time

from audit.models import AuditEvent
from fleet.deployments.models import Deployment

# the events that set a deployment's replica count, each with "replicas" in its after
SETS_REPLICAS = ("deployment.create", "deployment.scale", "deployment.autoscale")
HISTORY_POINTS = 200


def replica_history(deployment: Deployment) -> dict:
    """Replicas wanted over time, for the page's chart: each change the trail holds (the newest
    ``HISTORY_POINTS``: by hand or by the autoscaler), then now."""
    events = AuditEvent.objects.filter(
        target_type="fleet.deployment", target_id=str(deployment.pk), action__in=SETS_REPLICAS
    ).order_by("-seq")[:HISTORY_POINTS]
    points = [
        (e.created_at.timestamp(), e.after["replicas"])
        for e in reversed(events)
        if isinstance(e.after, dict) and isinstance(e.after.get("replicas"), int)
    ]
    points.append((time.time(), deployment.replicas))
    return {"x": [x for x, _ in points], "series": [{"label": "replicas", "values": [v for _, v in points]}]}
