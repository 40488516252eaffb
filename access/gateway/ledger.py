"""The usage ledger: every call the gateway answers becomes exactly one row and one audit event.

The path of a row, and why nothing on it can lose or double one:

1. The gateway appends the call's ``Usage`` to a Redis stream *before* the client receives the
   last byte of its answer (``Ledger.record``; calls arriving together share one round trip). An
   answered call is therefore a queued row. If Redis cannot take it, the row goes to a spool file
   in the data dir (fsync'd) and is replayed into the stream once Redis is back; if even that
   fails, the call is refused with a 503 instead of being answered unrecorded (we fail closed, as
   the quota check does).
2. The worker reads the stream as a consumer group (``drain``): an entry it takes stays pending
   until it is acknowledged, which happens only after the rows' transaction has committed. A worker
   killed in between leaves its entries pending; the next drain claims them once they have been
   idle for ``RECLAIM_IDLE_MS``.
3. Writes are idempotent, keyed by the call's request id (unique in the table, checked under the
   audit chain's lock): a batch written twice — claimed again after a crash, or replayed from a
   spool — adds nothing the second time.

The worker is asked to drain when rows arrive (at most every ``TELL_EVERY_S``) and by beat every
few seconds, so rows left by a failed drain are written without waiting for the next call.
Nothing is trimmed: a backlog past ``FLEET_LEDGER_BACKLOG_ALARM`` raises an alarm (a banner for
admins and auditors, a metric, an audit event), it is never dropped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import psutil
import redis
import redis.asyncio as aioredis
from django.conf import settings
from django.db import close_old_connections, transaction
from django.db.models import Q

from access.grants.models import ApiKey
from access.people.models import Department, User
from access.usage.models import UsageRecord
from audit import chain
from console.celery import app
from fleet.deployments.models import Deployment

log = logging.getLogger(__name__)
STREAM = "fleet:ledger"
GROUP = "writers"
DEAD = "fleet:ledger:dead"  # entries that cannot be read as a Usage: kept for a person, never dropped
FIELD = b"u"
TELL_EVERY_S = 0.5  # how often, at most, the worker is asked to drain (a Celery message costs ~1 ms)
DRAIN_BATCH = 500
RECLAIM_IDLE_MS = 15_000  # pending this long unacknowledged: its consumer died; another takes it
SPOOL_CHECK_S = 1.0


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


class LedgerUnavailable(Exception):
    """Neither Redis nor the spool file took the row: the call must not be answered."""


def encode(usage: Usage) -> str:
    return json.dumps(usage)


# --- the gateway's side: queue before answering -------------------------------------------------


class Ledger:
    """One per gateway process, used on its event loop. Rows that arrive while a push is in flight
    wait for the next one (group commit): one round trip per burst, not per call."""

    def __init__(self, spool_dir: Path | None = None) -> None:
        self.spool_dir = spool_dir or Path(settings.DATA_DIR) / "ledger-spool"
        self._rows: list[str] = []
        self._done: asyncio.Future[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._told_at = 0.0
        self._tell_later: asyncio.TimerHandle | None = None
        self._spool_checked = 0.0
        self.queued = self.spooled = 0

    async def record(self, client: aioredis.Redis, row: str) -> None:
        """Return once the row is in Redis or in the spool file; raise LedgerUnavailable if neither."""
        loop = asyncio.get_running_loop()
        if self._done is None:
            self._done = loop.create_future()
        done = self._done
        self._rows.append(row)
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush(client))
        await asyncio.shield(done)  # a cancelled caller's row is queued all the same

    async def settled(self) -> None:
        """Wait for the push, and the spool replay after it, that are under way."""
        if self._flusher is not None:
            await self._flusher

    async def _flush(self, client: aioredis.Redis) -> None:
        loop = asyncio.get_running_loop()
        while self._rows:
            rows, done = self._rows, self._done
            self._rows, self._done = [], None
            assert done is not None
            try:
                await push(client, rows)
                self.queued += len(rows)
            except Exception as exc:  # Redis is away: the disk holds them until it is back
                log.error("could not queue %d usage rows in Redis (%s); spooling them to disk", len(rows), exc)
                try:
                    await loop.run_in_executor(None, spool, self.spool_file, rows)
                    self.spooled += len(rows)
                except OSError as disk:
                    log.critical("could not spool %d usage rows either (%s); refusing the calls", len(rows), disk)
                    done.set_exception(LedgerUnavailable(str(disk)))
                    continue
                done.set_result(None)
                continue
            done.set_result(None)
            self._tell()
            if time.monotonic() - self._spool_checked >= SPOOL_CHECK_S:
                self._spool_checked = time.monotonic()
                try:
                    replayed = await replay(client, self.spool_dir)
                    self.queued += replayed
                except Exception as exc:
                    log.error("could not replay the usage spool (%s); will try again", exc)

    @property
    def spool_file(self) -> Path:
        return self.spool_dir / f"{os.getpid()}.jsonl"

    def _tell(self) -> None:
        """Ask the worker to drain now, or as soon as TELL_EVERY_S has passed since the last ask."""
        if self._tell_later is not None:
            return
        wait = self._told_at + TELL_EVERY_S - time.monotonic()
        loop = asyncio.get_running_loop()
        if wait > 0:
            self._tell_later = loop.call_later(wait, self._tell_now)
        else:
            self._tell_now()

    def _tell_now(self) -> None:
        self._tell_later, self._told_at = None, time.monotonic()
        asyncio.get_running_loop().run_in_executor(None, tell)


def tell() -> None:
    try:
        app.send_task("access.write_usage", queue="console")
    except Exception as exc:  # beat asks every few seconds anyway
        log.warning("could not ask the worker to write the ledger: %s", exc)


async def push(client: aioredis.Redis, rows: list[str]) -> None:
    pipe = client.pipeline(transaction=False)
    for row in rows:
        pipe.xadd(STREAM, {FIELD: row})
    await pipe.execute()


def spool(path: Path, rows: list[str]) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(row + "\n" for row in rows))
        f.flush()
        os.fsync(f.fileno())


async def replay(client: aioredis.Redis, spool_dir: Path) -> int:
    """Push spooled rows of this process and of processes that died; a row pushed twice (a crash
    between push and unlink) is written once, as writes are keyed by request id."""
    if not spool_dir.is_dir():
        return 0
    replayed = 0
    for path in sorted(spool_dir.glob("*.jsonl")):
        if path.stem.isdigit() and int(path.stem) != os.getpid() and psutil.pid_exists(int(path.stem)):
            continue  # another live gateway's: it replays its own
        rows = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if rows:
            await push(client, rows)
        path.unlink()
        replayed += len(rows)
        log.warning("replayed %d spooled usage rows from %s", len(rows), path.name)
    return replayed


# --- the worker's side: take, write, then acknowledge -------------------------------------------


@lru_cache(maxsize=1)
def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=10)


def ensure_group(client: redis.Redis) -> None:
    try:
        client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def backlog(client: redis.Redis | None = None) -> int:
    """Rows queued and not yet written (acknowledged entries are deleted)."""
    return (client or _redis()).xlen(STREAM)


def backlog_alarm(client: redis.Redis | None = None) -> int | None:
    """The backlog when it is past FLEET_LEDGER_BACKLOG_ALARM, else None."""
    waiting = backlog(client)
    return waiting if waiting > settings.FLEET_LEDGER_BACKLOG_ALARM else None


def take(client: redis.Redis, consumer: str, reclaim_idle_ms: int = RECLAIM_IDLE_MS) -> list[tuple[bytes, Any]]:
    """Entries this consumer took and has not acknowledged (a failed write), then those a dead
    consumer left pending, then new ones; each stays pending until acknowledged."""
    own = _entries(client.xreadgroup(GROUP, consumer, {STREAM: "0"}, count=DRAIN_BATCH))
    if own:
        gone = [i for i, f in own if not f]  # deleted while pending: nothing left to write
        if gone:
            client.xack(STREAM, GROUP, *gone)
        if len(gone) < len(own):
            return [(i, f) for i, f in own if f]
    _cursor, claimed, *_ = client.xautoclaim(STREAM, GROUP, consumer, min_idle_time=reclaim_idle_ms, count=DRAIN_BATCH)
    entries = [(i, f) for i, f in claimed if f]
    if entries:
        return entries
    return [(i, f) for i, f in _entries(client.xreadgroup(GROUP, consumer, {STREAM: ">"}, count=DRAIN_BATCH)) if f]


def _entries(reply: Any) -> list[tuple[bytes, Any]]:
    """XREADGROUP's reply for our one stream as (id, fields) pairs."""
    return list(reply[0][1]) if reply else []


def drain(consumer: str | None = None, reclaim_idle_ms: int = RECLAIM_IDLE_MS) -> int:
    """Write every queued row (the worker's task); returns how many rows were new."""
    client, written = _redis(), 0
    consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
    ensure_group(client)
    while True:
        entries = take(client, consumer, reclaim_idle_ms)
        if not entries:
            return written
        batch, unreadable = [], []
        for entry_id, fields in entries:
            try:
                batch.append(Usage(*json.loads(fields[FIELD])))
            except (KeyError, TypeError, ValueError):
                unreadable.append((entry_id, fields))
        written += write(batch)  # raises: the entries stay pending and are claimed again later
        ids = [entry_id for entry_id, _ in entries]
        pipe = client.pipeline(transaction=True)
        for entry_id, fields in unreadable:
            log.error("a usage entry %s could not be read; kept in %s", entry_id, DEAD)
            pipe.xadd(DEAD, fields)
        pipe.xack(STREAM, GROUP, *ids)
        pipe.xdel(STREAM, *ids)
        pipe.execute()


def _existing(model, ids: set) -> set:
    ids.discard(None)
    return set(model.objects.filter(pk__in=ids).values_list("pk", flat=True)) if ids else set()


def write(batch: list[Usage]) -> int:
    """Insert the rows not yet in the table, with their audit events; returns how many."""
    close_old_connections()
    # A key, user, department or deployment deleted since the request keeps its row, without the link.
    keys = _existing(ApiKey, {u.key_id for u in batch})
    users = _existing(User, {u.user_id for u in batch})
    departments = _existing(Department, {u.department_id for u in batch})
    deployments = _existing(Deployment, {u.deployment_id for u in batch})
    with transaction.atomic():
        chain.lock()  # one writer at a time decides what is new: a batch taken twice is written once
        seen = set(
            UsageRecord.objects.filter(request_id__in={u.request_id for u in batch}).values_list(
                "request_id", flat=True
            )
        )
        rows: list[UsageRecord] = []
        events: list[dict[str, Any]] = []
        last_used: dict[int, datetime] = {}
        for u in batch:
            if u.request_id in seen:
                continue
            seen.add(u.request_id)
            at = datetime.fromtimestamp(u.at, tz=UTC)
            rows.append(_row(u, at, keys, users, departments, deployments))
            events.append(_event(u, at))
            if u.key_id in keys:
                last_used[u.key_id] = max(at, last_used.get(u.key_id, at))
        UsageRecord.objects.bulk_create(rows)
        chain.record_many(events)
    # After the chain's lock is let go: a revocation holds the key's row, then takes that lock for
    # its audit event; updating the row under the lock deadlocked the two (bench/gateway.py --web 2).
    # Two writers may finish out of order: the latest time wins.
    for key_id, at in last_used.items():
        later = Q(last_used_at__lt=at) | Q(last_used_at__isnull=True)
        ApiKey.objects.filter(later, pk=key_id).update(last_used_at=at)
    return len(rows)


def _row(u: Usage, at: datetime, keys: set, users: set, departments: set, deployments: set) -> UsageRecord:
    return UsageRecord(
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


def _event(u: Usage, at: datetime) -> dict[str, Any]:
    return {
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
