"""Live topics: who may join each, how its messages are checked, and whether they are batched.

The websocket consumer asks ``check`` before joining a topic; the fan-out hub asks ``spec_for``
how to treat each message. Unlisted topics are refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from access.people.choices import Role
from fleet.protocol import telemetry

_Rule = Callable[[Any, re.Match], bool]


def _roles(*roles: str) -> _Rule:
    return lambda user, _match: user.has_role(*roles)


def _self_only(user: Any, match: re.Match) -> bool:
    return user.role != Role.NONE and str(user.pk) == match["id"]


@dataclass(frozen=True)
class Topic:
    pattern: re.Pattern
    allowed: _Rule
    validate: Callable[[Any], Any] | None = None  # raises ValueError: the message is dropped and counted
    batch_s: float = 0.0  # > 0: messages within this window reach a browser as one "batch" frame
    # Carried inside another topic's messages (one Redis group for a thousand nodes): ``via`` names
    # that topic, and its ``part_of`` says which of this kind of topic each payload belongs to.
    via: str | None = None
    part_of: Callable[[Any], str] | None = None


TOPICS: list[Topic] = [
    Topic(re.compile(r"^audit$"), _roles(Role.ADMIN, Role.AUDITOR)),
    Topic(re.compile(r"^fleet$"), _roles(Role.ADMIN)),
    # 100 nodes at 1 Hz: one frame per 50 ms per browser instead of one per message. A node's own
    # topic rides on the fleet's: producers publish each sample once, the hub picks a node's out.
    Topic(
        re.compile(r"^telemetry\.fleet$"),
        _roles(Role.ADMIN),
        telemetry.check,
        batch_s=0.05,
        part_of=lambda sample: f"telemetry.node.{sample.get('node')}",
    ),
    Topic(re.compile(r"^telemetry\.node\.(?P<id>\d+)$"), _roles(Role.ADMIN), telemetry.check, via="telemetry.fleet"),
    Topic(re.compile(r"^model\.(?P<id>\d+)$"), _roles(Role.ADMIN)),
    Topic(re.compile(r"^deployment\.(?P<id>\d+)$"), _roles(Role.ADMIN)),
    Topic(re.compile(r"^node\.(?P<id>\d+)\.runtime$"), _roles(Role.ADMIN)),
    Topic(re.compile(r"^instance\.(?P<id>\d+)\.log$"), _roles(Role.ADMIN), batch_s=0.1),
    Topic(re.compile(r"^jobs$"), _roles(Role.ADMIN)),
    Topic(re.compile(r"^job\.(?P<id>\d+)$"), _roles(Role.ADMIN)),
    Topic(re.compile(r"^access$"), _roles(Role.ADMIN)),  # the access-request queue
    Topic(re.compile(r"^user\.(?P<id>\d+)$"), _self_only),
]


def spec_for(topic: str) -> tuple[Topic, re.Match] | None:
    for spec in TOPICS:
        match = spec.pattern.match(topic)
        if match:
            return spec, match
    return None


def group_of(topic: str) -> str:
    """The channel-layer group that carries ``topic``'s messages."""
    found = spec_for(topic)
    return (found[0].via or topic) if found else topic


def check(user: Any, topic: str) -> str | None:
    """None when ``user`` may join ``topic``, else the reason it may not."""
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return "sign in first"
    found = spec_for(topic)
    if found is None:
        return f"unknown topic '{topic}'"
    spec, match = found
    return None if spec.allowed(user, match) else f"your role may not watch '{topic}'"
