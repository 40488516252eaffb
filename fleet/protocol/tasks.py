"""Task names, both ways. The console's Celery tasks (fleet/tasks.py) carry the reports that the
agent endpoint relays for a node; the agent's commands travel on the node's link (fleet.protocol.wire)."""

from __future__ import annotations

CONSOLE_QUEUE = "console"


# agent → console (fleet/tasks.py serves them; the node is named by its credential)
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
AUTOSCALE = "fleet.autoscale"

# console → agent (fleet/agent/runtime.py serves them from the node's command stream)
PING = "agent.ping"
START_INSTANCE = "agent.start_instance"
STOP_INSTANCE = "agent.stop_instance"
INSTANCES = "agent.instances"
ENSURE_RUNTIME = "agent.ensure_runtime"
RUN_JOB = "agent.run_job"
CANCEL_JOB = "agent.cancel_job"
