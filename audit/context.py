"""Who is acting, from where: bound once per request/connection/task, read by ``audit.record``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class AuditContext:
    user: Any = None  # access.User or None (system)
    source_ip: str | None = None
    request_id: str = ""
    channel: str = "system"  # web, api, ws, task, cli, system


_current: ContextVar[AuditContext] = ContextVar("audit_context", default=AuditContext())  # noqa: B039 (frozen)


def current() -> AuditContext:
    return _current.get()


@contextmanager
def bound(**changes: Any) -> Iterator[AuditContext]:
    ctx = replace(_current.get(), **changes)
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)


def push(**changes: Any) -> Token:
    """Like ``bound`` for callers that enter and leave in different functions (Celery signals)."""
    return _current.set(replace(_current.get(), **changes))


def pop(token: Token) -> None:
    _current.reset(token)
