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


class DesiredState(models.TextChoices):
    RUNNING = "running", "Running"
    STOPPED = "stopped", "Stopped"


class InstanceState(models.TextChoices):
    PENDING = "pending", "Pending"      # placed; the agent has been told to start it
    STARTING = "starting", "Starting"   # the process runs; not answering yet
    READY = "ready", "Ready"            # /health is 200 and /v1/models lists the served name
    CRASHED = "crashed", "Restarting"   # exited unexpectedly; the agent restarts it after a backoff
    STOPPING = "stopping", "Stopping"
    STOPPED = "stopped", "Stopped"
    FAILED = "failed", "Failed"         # will not run as specified: see cause and remedy
    LOST = "lost", "Lost"               # its node went away; replaced elsewhere


InstanceState.LIVE = {InstanceState.PENDING, InstanceState.STARTING, InstanceState.READY, InstanceState.CRASHED}
INSTANCE_TRANSITIONS: dict[str, set[str]] = {
    InstanceState.PENDING: {InstanceState.STARTING, InstanceState.READY, InstanceState.FAILED, InstanceState.STOPPING,
                            InstanceState.STOPPED, InstanceState.CRASHED, InstanceState.LOST},
    InstanceState.STARTING: {InstanceState.READY, InstanceState.CRASHED, InstanceState.FAILED, InstanceState.STOPPING,
                             InstanceState.STOPPED, InstanceState.LOST},
    InstanceState.READY: {InstanceState.CRASHED, InstanceState.FAILED, InstanceState.STOPPING, InstanceState.STOPPED,
                          InstanceState.LOST, InstanceState.STARTING},
    InstanceState.CRASHED: {InstanceState.STARTING, InstanceState.READY, InstanceState.FAILED, InstanceState.STOPPING,
                            InstanceState.STOPPED, InstanceState.LOST},
    InstanceState.STOPPING: {InstanceState.STOPPED, InstanceState.FAILED, InstanceState.LOST},
    InstanceState.STOPPED: set(),
    InstanceState.FAILED: {InstanceState.STOPPING, InstanceState.STOPPED},
    InstanceState.LOST: {InstanceState.STOPPED},
}


class TransitionError(ValueError):
    pass


def check_transition(table: dict[str, set[str]], current: str, new: str) -> None:
    if new not in table.get(current, set()):
        raise TransitionError(f"cannot go from {current} to {new}")


class JobKind(models.TextChoices):
    QUANTIZE = "quantize", "Quantization"
    BENCHMARK = "benchmark", "Benchmark"


class JobState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


JobState.DONE = {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}
JOB_TRANSITIONS: dict[str, set[str]] = {
    JobState.QUEUED: {JobState.RUNNING, JobState.FAILED, JobState.CANCELLED, JobState.SUCCEEDED},
    JobState.RUNNING: {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED},
    JobState.SUCCEEDED: set(),
    JobState.FAILED: set(),
    JobState.CANCELLED: set(),
}
