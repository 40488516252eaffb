"""Per-process fan-out of live topics to websockets.

Each web process joins a topic's channel group once, whatever the number of browsers watching it,
and copies each message to its local sockets: one Redis delivery and one JSON encoding per
message, not one per browser. High-rate topics (fleet telemetry) are batched into one frame per
window. A malformed message is dropped and counted; nothing a producer sends can stop the hub.
"""
from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from channels.layers import get_channel_layer

from console import topics
from console.live import MESSAGE_TYPE

log = logging.getLogger(__name__)
GROUP_REFRESH_S = 3600  # channels_redis forgets group members after a day (group_expiry)


class Sink(Protocol):
    def push(self, frame: str) -> None: ...


class Hub:
    def __init__(self) -> None:
        self.layer = get_channel_layer()
        self.channel: str | None = None
        self.subscribers: dict[str, set[Sink]] = {}
        self.pending: dict[str, list[Any]] = {}
        self.dropped = 0  # malformed messages
        self.delivered = 0
        self._ready = asyncio.Lock()
        self._locks: dict[str, asyncio.Lock] = {}

    async def _start(self) -> str:
        async with self._ready:
            if self.channel is None:
                self.channel = await self.layer.new_channel()  # default prefix: shares the process receive loop
                self._keep_running(self._read)
                self._keep_running(self._refresh)
        return self.channel

    def _lock(self, topic: str) -> asyncio.Lock:
        # group_add and group_discard of one topic must not overtake each other in Redis.
        return self._locks.setdefault(topic, asyncio.Lock())

    async def join(self, topic: str, sink: Sink) -> None:
        channel = await self._start()
        async with self._lock(topic):
            if topic not in self.subscribers:
                await self.layer.group_add(topic, channel)  # recorded only once Redis has it
                self.subscribers[topic] = set()
            self.subscribers[topic].add(sink)

    async def leave(self, topic: str, sink: Sink) -> None:
        async with self._lock(topic):
            sinks = self.subscribers.get(topic)
            if sinks is None:
                return
            sinks.discard(sink)
            if not sinks:
                del self.subscribers[topic]
                self.pending.pop(topic, None)
                await self.layer.group_discard(topic, self.channel)

    def _keep_running(self, work: Callable[[], Awaitable[None]]) -> asyncio.Task:
        """Run ``work`` as a task; if it fails (Redis away), start it again in half a second.

        Errors are not caught inside the loops: the Redis client can turn a cancellation into an
        error, and a loop that swallowed it would keep its event loop from ever shutting down."""
        task = asyncio.create_task(work())

        def restart(done: asyncio.Task) -> None:
            if done.cancelled():
                return
            log.error("live fan-out: %s failed (%s); restarting", work.__name__, done.exception())
            done.get_loop().call_later(0.5, self._keep_running, work)

        task.add_done_callback(restart)
        return task

    async def _read(self) -> None:
        while True:
            self.deliver(await self.layer.receive(self.channel))

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(GROUP_REFRESH_S)
            for topic in list(self.subscribers):
                await self.layer.group_add(topic, self.channel)

    def deliver(self, message: Any) -> None:
        try:
            if not isinstance(message, dict) or message.get("type") != MESSAGE_TYPE:
                raise ValueError("not a live message")
            topic = message.get("topic")
            found = topics.spec_for(topic) if isinstance(topic, str) else None
            if found is None:
                raise ValueError(f"unknown topic {topic!r}")
            spec, _match = found
            payload = message.get("payload")
            if spec.validate is not None:
                spec.validate(payload)
            if topic not in self.subscribers:
                return  # the last browser left after the message was sent
            if spec.batch_s <= 0:
                self._send(topic, _encode({"type": "event", "topic": topic, "data": payload}))
                return
            _encode(payload)  # refuse what cannot be sent now, not when its batch is flushed
        except (ValueError, TypeError) as exc:
            self.dropped += 1
            log.warning("live fan-out: dropped a malformed message (%s); %d so far", exc, self.dropped)
            return
        waiting = self.pending.setdefault(topic, [])
        waiting.append(payload)
        if len(waiting) == 1:
            asyncio.get_running_loop().call_later(spec.batch_s, self._flush, topic)

    def _flush(self, topic: str) -> None:
        batch = self.pending.pop(topic, None)
        if batch:
            self._send(topic, _encode({"type": "batch", "topic": topic, "data": batch}))

    def _send(self, topic: str, frame: str) -> None:
        for sink in tuple(self.subscribers.get(topic, ())):
            sink.push(frame)
        self.delivered += 1


def _encode(value: Any) -> str:
    return json.dumps(value, allow_nan=False)  # browsers' JSON.parse refuses NaN


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


def hub() -> Hub:
    """The hub of the running event loop (one per web process; tests may run several loops)."""
    loop = asyncio.get_running_loop()
    if loop not in _hubs:
        _hubs[loop] = Hub()
    return _hubs[loop]
