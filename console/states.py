"""State machines: every status field changes through a method that checks its domain's table
(in that domain's choices.py); none is assigned directly."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import Model


class TransitionError(ValueError):
    pass


def check_transition(table: dict[str, set[str]], current: str, new: str) -> None:
    if new not in table.get(current, set()):
        raise TransitionError(f"cannot go from {current} to {new}")


def move(
    instance: Model,
    table: dict[str, set[str]],
    current: str,
    new: str,
    *,
    field: str = "state",
    where: dict[str, Any] | None = None,
) -> bool:
    """The transition as one conditional UPDATE of the row (``where``: more conditions): True when
    this caller made it, False when a concurrent one got there first or a condition no longer
    holds, so two workers never make the same change twice. ``instance`` follows on success."""
    check_transition(table, current, new)
    rows = type(instance)._default_manager.filter(pk=instance.pk, **{field: current}, **(where or {}))
    if not rows.update(**{field: new}):
        return False
    setattr(instance, field, new)
    return True


class Revocable:
    """A token, key or grant: usable until revoked, and revoked once (the row stays, for the record)."""

    revoked_at: datetime | None

    def mark_revoked(self, at: datetime) -> None:
        if self.revoked_at is not None:
            raise TransitionError("already revoked")
        self.revoked_at = at
