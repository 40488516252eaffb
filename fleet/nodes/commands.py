"""Commands for one node: a Redis stream per node that only the console writes, relayed to the
node's agent over its link (fleet.nodes.endpoint) and forgotten when the agent acknowledges them.

A command sent while the node is away waits in its stream (the last 1,000) and goes out when the
agent connects again; a node reads only its own stream because the console reads it on its behalf.
"""

from __future__ import annotations

import json
import time
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import redis
from django.conf import settings
from django.db import transaction

if TYPE_CHECKING:
    from fleet.nodes.models import Node

KEEP = 1000
REPLY_TTL_S = 60


def stream(node_id: int) -> str:
    return f"fleet:node:{node_id}:commands"


def reply_key(node_id: int, command_id: str) -> str:
    return f"fleet:node:{node_id}:reply:{command_id}"


EVENTS = "fleet:agents:events"  # Redis pub/sub: every agent-endpoint process hears every event


def notify(node_id: int, event: str) -> None:
    """Tell the process holding the node's link: "wake" (commands wait), "revoke" or "rotate"."""
    client().publish(EVENTS, json.dumps({"node": node_id, "event": event}))


@lru_cache(maxsize=1)
def client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=10, decode_responses=True)


# The last lines of each instance's log, as its node sent them (fleet.nodes.endpoint appends): what
# a deployment's page shows when it (re)joins the log topic, so lines pushed before then are not lost.
LOG_TAIL_LINES = 500
LOG_TAIL_TTL_S = 24 * 3600


def log_tail_key(instance_id: int) -> str:
    return f"fleet:instance:{instance_id}:log"


def log_tail(instance_id: int) -> list[str]:
    return list(client().lrange(log_tail_key(instance_id), 0, -1))  # type: ignore[arg-type]


def push(node_id: int, task: str, kwargs: dict[str, Any], *, reply: bool = False) -> str:
    body = json.dumps({"task": task, "kwargs": kwargs, "reply": reply})
    command_id = str(client().xadd(stream(node_id), {"m": body}, maxlen=KEEP, approximate=True))
    notify(node_id, "wake")
    return command_id


def send(node: Node, task: str, **kwargs: Any) -> None:
    """Queue a command once the current transaction commits (never for a change rolled back)."""
    node_id = node.pk
    transaction.on_commit(lambda: push(node_id, task, kwargs))


def ask(node: Node, task: str, timeout: float = 10.0, **kwargs: Any) -> Any:
    """Send a command and wait for the agent's answer; TimeoutError when none comes."""
    command_id = push(node.pk, task, kwargs, reply=True)
    answer = client().blpop([reply_key(node.pk, command_id)], timeout=timeout)
    if answer is None:
        raise TimeoutError(f"{node.name} did not answer {task} within {timeout:.0f} s")
    return json.loads(answer[1])


def forget(node_id: int) -> None:
    """A removed node's waiting commands go with it."""
    client().delete(stream(node_id))


def wait_until_sent(node_id: int, timeout: float = 10.0) -> bool:
    """True once the node has acknowledged everything queued for it (tests and drills)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not client().xlen(stream(node_id)):
            return True
        time.sleep(0.05)
    return False
