"""Desired states of a deployment, states of an instance, and the transitions they allow."""

from __future__ import annotations

from typing import ClassVar

from django.db import models


class DesiredState(models.TextChoices):
    RUNNING = "running", "Running"
    STOPPED = "stopped", "Stopped"


# A desire may be repeated (start a running deployment: it is reconciled again) or reversed.
DESIRED_TRANSITIONS: dict[str, set[str]] = {
    DesiredState.RUNNING: {DesiredState.RUNNING, DesiredState.STOPPED},
    DesiredState.STOPPED: {DesiredState.STOPPED, DesiredState.RUNNING},
}


class Routing(models.TextChoices):
    """How the gateway picks one of a deployment's Ready instances for a call (access.gateway.routes)."""

    LEAST_BUSY = "least-busy", "Least busy"
    PREFIX = "prefix", "By prompt prefix (prefix cache affinity)"


class ScaleMetric(models.TextChoices):
    """What the autoscaler holds at its target per instance, from vLLM's own gauges as the agent
    scrapes them (fleet.deployments.autoscaler)."""

    IN_FLIGHT = "in-flight", "Calls in flight (running + waiting)"
    WAITING = "waiting", "vLLM's waiting queue"


class Rollout(models.TextChoices):
    """Where a rolling update stands (fleet.deployments.reconciler): none, or one replica at a time."""

    NONE = "", "None"
    ROLLING = "rolling", "Rolling"
    PAUSED = "paused", "Paused"


class RevisionOutcome(models.TextChoices):
    ROLLING = "rolling", "Rolling out"
    DONE = "done", "Rolled out"
    ROLLED_BACK = "rolled-back", "Rolled back"  # its instance failed, or an admin aborted it
    SUPERSEDED = "superseded", "Superseded"  # another update came before it was out


class InstanceState(models.TextChoices):
    PENDING = "pending", "Pending"  # placed; the agent has been told to start it
    STARTING = "starting", "Starting"  # the process runs; not answering yet
    READY = "ready", "Ready"  # /health is 200 and /v1/models lists the served name
    CRASHED = "crashed", "Restarting"  # exited unexpectedly; the agent restarts it after a backoff
    STOPPING = "stopping", "Stopping"
    STOPPED = "stopped", "Stopped"
    FAILED = "failed", "Failed"  # will not run as specified: see cause and remedy
    LOST = "lost", "Lost"  # its node went away; replaced elsewhere

    LIVE: ClassVar[set[InstanceState]]  # the running states; set below (an annotation, not a member)


InstanceState.LIVE = {InstanceState.PENDING, InstanceState.STARTING, InstanceState.READY, InstanceState.CRASHED}


INSTANCE_TRANSITIONS: dict[str, set[str]] = {
    InstanceState.PENDING: {
        InstanceState.STARTING,
        InstanceState.READY,
        InstanceState.FAILED,
        InstanceState.STOPPING,
        InstanceState.STOPPED,
        InstanceState.CRASHED,
        InstanceState.LOST,
    },
    InstanceState.STARTING: {
        InstanceState.READY,
        InstanceState.CRASHED,
        InstanceState.FAILED,
        InstanceState.STOPPING,
        InstanceState.STOPPED,
        InstanceState.LOST,
    },
    InstanceState.READY: {
        InstanceState.CRASHED,
        InstanceState.FAILED,
        InstanceState.STOPPING,
        InstanceState.STOPPED,
        InstanceState.LOST,
        InstanceState.STARTING,
    },
    InstanceState.CRASHED: {
        InstanceState.STARTING,
        InstanceState.READY,
        InstanceState.FAILED,
        InstanceState.STOPPING,
        InstanceState.STOPPED,
        InstanceState.LOST,
    },
    InstanceState.STOPPING: {InstanceState.STOPPED, InstanceState.FAILED, InstanceState.LOST},
    InstanceState.STOPPED: set(),
    InstanceState.FAILED: {InstanceState.STOPPING, InstanceState.STOPPED},
    InstanceState.LOST: {InstanceState.STOPPED},
}
