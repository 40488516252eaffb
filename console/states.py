"""State machines: every status field changes through a method that checks its domain's table."""
from __future__ import annotations


class TransitionError(ValueError):
    pass


def check_transition(table: dict[str, set[str]], current: str, new: str) -> None:
    if new not in table.get(current, set()):
        raise TransitionError(f"cannot go from {current} to {new}")
