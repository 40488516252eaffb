"""Receivers of the lower domains' signals (connected in FleetConfig.ready)."""

from __future__ import annotations

from typing import Any

from django.dispatch import receiver

from fleet.jobs import services
from fleet.nodes.models import Node
from fleet.nodes.signals import work_lost


@receiver(work_lost)
def fail_running_jobs(sender: Any, *, node: Node, reason: str, **kwargs: Any) -> None:
    services.fail_jobs_on(node, reason)
