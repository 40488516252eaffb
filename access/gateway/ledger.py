"""The usage ledger, written off the hot path and out of the web process.

A request appends its ``Usage`` to a list in memory; every ``FLUSH_EVERY_S`` a thread pushes the
batch onto a Redis list with one command, and at most every ``TELL_EVERY_S`` asks the Celery worker
to drain it (``access.write_usage``),
which writes the rows, their audit events and the keys' last-used times, one transaction per
batch. The web process so spends no time on SQL or hashing; if the worker is down the rows wait in
Redis (up to ``MAX_QUEUED``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, NamedTuple, cast

import redis
from django.conf import settings
from django.db import close_old_connections, transaction

from access.grants.models import ApiKey
from access.people.models import Department, User
from access.usage.models import UsageRecord
from audit.chain import record_many
from console.celery import app
from fleet.deployments.models import Deployment

log = logging.getLogger(__name__)
QUEUE = "fleet:usage"
FLUSH_EVERY_S = 0.05
TELL_EVERY_S = 0.5  # how often, at most, the worker is asked to drain (a Celery message costs ~1 ms)
DRAIN_BATCH = 1000
MAX_QUEUED = 1_000_000  # rows waiting in Redis for the worker; beyond this the oldest are dropped
MAX_BACKLOG = 200_000  # rows waiting in memory while Redis is away


class Usage(NamedTuple):  # a tuple: it encodes as a JSON array, fast
    at: float  # epoch seconds
    key_id: int
    key_prefix: str
    user_id: int
    username: str
    role: str
    department_id: int | None
    department: str
    model: str
    deployment_id: int | None
    instance_id: int | None
    endpoint: str
    stream: bool
    status: int
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    ttft_ms: float | None
    input_sha256: str
    request_id: str
    source_ip: str


class Ledger:
    """Rows arrive already encoded (a JSON array in ``Usage`` field order, made on the event loop a
    request at a time); the thread only ships them, so it never holds the GIL for long."""

    def __init__(self) -> None:
        self._pending: list[str] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._untold = 0  # rows queued since the worker was last asked to drain
        self._told_at = 0.0
        self.queued = 0

    def add(self, row: str) -> None:
        self._pending.append(row)  # list.append is atomic under the GIL
        if self._thread is None:
            self._start()

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="usage-ledger", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(FLUSH_EVERY_S)
            try:
                self.flush()
            except Exception as exc:  # Redis is away: keep the rows and try again
                log.error("could not queue the usage ledger (%s); will retry", exc)
                time.sleep(1)

    def flush(self) -> int:
        batch, self._pending = self._pending, []
        if batch:
            try:
                push(batch)
            except Exception:
                self._pending[:0] = batch[-MAX_BACKLOG:]
                raise
            self.queued += len(batch)
            self._untold += len(batch)
        if self._untold and time.monotonic() - self._told_at >= TELL_EVERY_S:
            app.send_task("access.write_usage", queue="console")
            self._untold, self._told_at = 0, time.monotonic()
        return len(batch)


@lru_cache(maxsize=1)
def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5)


def encode(usage: Usage) -> str:
    return json.dumps(usage)


def push(rows: list[str]) -> None:
    pipe = _redis().pipeline(transaction=False)
    pipe.rpush(QUEUE, *rows)
    pipe.ltrim(QUEUE, -MAX_QUEUED, -1)
    pipe.execute()


def drain() -> int:
    """Write every queued row (the worker's task); returns how many."""
    client, written = _redis(), 0
    while True:
        raw = cast("list[bytes] | None", client.lpop(QUEUE, DRAIN_BATCH))  # with a count: a list, or None
        if not raw:
            return written
        batch = [Usage(*json.loads(item)) for item in raw]
        try:
            write(batch)
        except Exception:
            client.lpush(QUEUE, *reversed(raw))  # back at the front, in order, for the next try
            raise
        written += len(batch)


def _existing(model, ids: set) -> set:
    ids.discard(None)
    return set(model.objects.filter(pk__in=ids).values_list("pk", flat=True)) if ids else set()


def write(batch: list[Usage]) -> None:
    close_old_connections()
    # A key, user, department or deployment deleted since the request keeps its row, without the link.
    keys = _existing(ApiKey, {u.key_id for u in batch})
    users = _existing(User, {u.user_id for u in batch})
    departments = _existing(Department, {u.department_id for u in batch})
    deployments = _existing(Deployment, {u.deployment_id for u in batch})
    rows: list[UsageRecord] = []
    events: list[dict[str, Any]] = []
    last_used: dict[int, datetime] = {}
    for u in batch:
        at = datetime.fromtimestamp(u.at, tz=UTC)
        rows.append(
            UsageRecord(
                created_at=at,
                key_id=u.key_id if u.key_id in keys else None,
                user_id=u.user_id if u.user_id in users else None,
                department_id=u.department_id if u.department_id in departments else None,
                model=u.model,
                deployment_id=u.deployment_id if u.deployment_id in deployments else None,
                instance_id=u.instance_id,
                endpoint=u.endpoint,
                stream=u.stream,
                status=u.status,
                prompt_tokens=u.prompt_tokens,
                completion_tokens=u.completion_tokens,
                latency_ms=round(u.latency_ms, 3),
                ttft_ms=None if u.ttft_ms is None else round(u.ttft_ms, 3),
                input_sha256=u.input_sha256,
                request_id=u.request_id,
            )
        )
        events.append(
            {
                "actor": (u.user_id, u.username, u.role, u.department),
                "action": "gateway.request",
                "target": ("access.apikey", u.key_id, f"key {u.key_prefix}…"),
                "created_at": at,
                "source_ip": u.source_ip,
                "request_id": u.request_id,
                "channel": "gateway",
                "context": {
                    "model": u.model,
                    "endpoint": u.endpoint,
                    "deployment": u.deployment_id,
                    "instance": u.instance_id,
                    "status": u.status,
                    "stream": u.stream,
                    "prompt_tokens": u.prompt_tokens,
                    "completion_tokens": u.completion_tokens,
                    "latency_ms": round(u.latency_ms, 1),
                    "input_sha256": u.input_sha256,
                },
            }
        )
        if u.key_id in keys:
            last_used[u.key_id] = max(at, last_used.get(u.key_id, at))
    with transaction.atomic():
        UsageRecord.objects.bulk_create(rows)
        record_many(events)
        for key_id, at in last_used.items():
            ApiKey.objects.filter(pk=key_id).update(last_used_at=at)
