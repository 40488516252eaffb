"""Which roles may join which live topic. The websocket consumer asks here before group_add."""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from access.choices import Role

# Each rule: a pattern for the topic name and who may listen. Unlisted topics are refused.
_Rule = Callable[[Any, re.Match], bool]


def _roles(*roles: str) -> _Rule:
    return lambda user, _match: user.has_role(*roles)


def _self_only(user: Any, match: re.Match) -> bool:
    return user.role != Role.NONE and str(user.pk) == match["id"]


TOPIC_RULES: list[tuple[re.Pattern, _Rule]] = [
    (re.compile(r"^audit$"), _roles(Role.ADMIN, Role.AUDITOR)),
    (re.compile(r"^fleet$"), _roles(Role.ADMIN)),
    (re.compile(r"^telemetry\.fleet$"), _roles(Role.ADMIN)),
    (re.compile(r"^telemetry\.node\.(?P<id>\d+)$"), _roles(Role.ADMIN)),
    (re.compile(r"^user\.(?P<id>\d+)$"), _self_only),
]


def check(user: Any, topic: str) -> str | None:
    """None when ``user`` may join ``topic``, else the reason it may not."""
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return "sign in first"
    for pattern, allowed in TOPIC_RULES:
        match = pattern.match(topic)
        if match:
            return None if allowed(user, match) else f"your role may not watch '{topic}'"
    return f"unknown topic '{topic}'"
