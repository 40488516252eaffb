"""The audit trail. ``audit.record(...)`` is the one way to write to it."""

from __future__ import annotations

from typing import Any

from console.actions import Actor

__all__ = ["record"]


def record(actor: Actor, action: str, target: Any = None, before: Any = None, after: Any = None, **context: Any):
    """Append one event to the hash chain; see ``audit.chain.record``."""
    from audit.chain import record as _record  # here: the package loads before its models are ready

    return _record(actor, action, target, before=before, after=after, **context)
