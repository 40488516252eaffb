"""Celery task names, both ways, and the queues they travel on. The agent sends and serves tasks by
these names without importing the console's task modules (it has no Django)."""

from __future__ import annotations

CONSOLE_QUEUE = "console"


def node_queue(name: str) -> str:
    """The queue an agent serves: one per node."""
    return f"node.{name}"


# agent → console (fleet/tasks.py serves them; the node is named by its credential)
REGISTER_NODE = "fleet.register_node"
HEARTBEAT = "fleet.heartbeat"
ROLLUPS = "fleet.rollups"
INSTANCE_REPORT = "fleet.instance_report"
RUNTIME_REPORT = "fleet.runtime_report"
JOB_REPORT = "fleet.job_report"

# console → console (the worker and beat)
CHECK_LIVENESS = "fleet.check_liveness"
PRUNE_ROLLUPS = "fleet.prune_rollups"
CHECKSUM_MODEL = "fleet.checksum_model"
RECONCILE = "fleet.reconcile"

# console → agent (fleet/agent/runtime.py serves them on the node's queue)
PING = "agent.ping"
START_INSTANCE = "agent.start_instance"
STOP_INSTANCE = "agent.stop_instance"
INSTANCES = "agent.instances"
ENSURE_RUNTIME = "agent.ensure_runtime"
RUN_JOB = "agent.run_job"
CANCEL_JOB = "agent.cancel_job"
