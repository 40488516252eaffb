"""The one line format runners use to talk to the agent: ``@fleet {"progress": 40, "phase": "..."}``
or ``@fleet {"result": {...}}``. Imported by the runners (next to them on sys.path) and the agent."""

from __future__ import annotations

import json
import sys
from typing import Any

MARK = "@fleet "


def emit(**event: Any) -> None:
    sys.stdout.write(MARK + json.dumps(event, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def parse(line: str) -> dict | None:
    """The event a line carries, or None for a plain log line."""
    if not line.startswith(MARK):
        return None
    try:
        event = json.loads(line[len(MARK) :])
    except ValueError:
        return None
    return event if isinstance(event, dict) else None
