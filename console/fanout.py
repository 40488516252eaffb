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
        self._tasks: list[asyncio.Task] = []
        self._ready = asyncio.Lock()

    async def _start(self) -> str:
        async with self._ready:
            if self.channel is None:
                self.channel = await self.layer.new_channel()  # default prefix: shares the process receive loop
                self._tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._refresh())]
        return self.channel

    async def join(self, topic: str, sink: Sink) -> None:
        channel = await self._start()
        if topic not in self.subscribers:
            self.subscribers[topic] = set()
            await self.layer.group_add(topic, channel)
        self.subscribers[topic].add(sink)

    async def leave(self, topic: str, sink: Sink) -> None:
        sinks = self.subscribers.get(topic)
        if sinks is None:
            return
        sinks.discard(sink)
        if not sinks:
            del self.subscribers[topic]
            self.pending.pop(topic, None)
            await self.layer.group_discard(topic, self.channel)

    async def _read(self) -> None:
        while True:
            try:
                message = await self.layer.receive(self.channel)
                self.deliver(message)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bad message or a Redis hiccup must not end the hub
                log.exception("live fan-out: receive failed")
                await asyncio.sleep(0.5)

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
        except ValueError as exc:
            self.dropped += 1
            log.warning("live fan-out: dropped a malformed message (%s); %d so far", exc, self.dropped)
            return
        if topic not in self.subscribers:
            return  # the last browser left after the message was sent
        if spec.batch_s <= 0:
            self._send(topic, json.dumps({"type": "event", "topic": topic, "data": payload}))
            return
        waiting = self.pending.setdefault(topic, [])
        waiting.append(payload)
        if len(waiting) == 1:
            asyncio.get_running_loop().call_later(spec.batch_s, self._flush, topic)

    def _flush(self, topic: str) -> None:
        batch = self.pending.pop(topic, None)
        if batch:
            self._send(topic, json.dumps({"type": "batch", "topic": topic, "data": batch}))

    def _send(self, topic: str, frame: str) -> None:
        for sink in tuple(self.subscribers.get(topic, ())):
            sink.push(frame)
        self.delivered += 1


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


def hub() -> Hub:
    """The hub of the running event loop (one per web process; tests may run several loops)."""
    loop = asyncio.get_running_loop()
    if loop not in _hubs:
        _hubs[loop] = Hub()
    return _hubs[loop]
