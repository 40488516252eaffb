"""Status values of fleet objects and the transitions they allow (DESIGN.md rule 2)."""
from __future__ import annotations

from django.db import models


class NodeKind(models.TextChoices):
    GPU = "gpu", "GPU node"
    CPU = "cpu", "CPU node"  # no NVML: host metrics only, a supported kind


class NodeState(models.TextChoices):
    ONLINE = "online", "Online"
    OFFLINE = "offline", "Offline"


NODE_TRANSITIONS: dict[str, set[str]] = {
    NodeState.ONLINE: {NodeState.OFFLINE},
    NodeState.OFFLINE: {NodeState.ONLINE},
}


class TransitionError(ValueError):
    pass


def check_transition(table: dict[str, set[str]], current: str, new: str) -> None:
    if new not in table.get(current, set()):
        raise TransitionError(f"cannot go from {current} to {new}")
