"""Kinds and states of a node, and the transitions a node's state allows."""

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
