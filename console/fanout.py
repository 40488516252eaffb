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

from channels import DEFAULT_CHANNEL_LAYER
from channels.layers import channel_layers

from console import topics
from fleet.protocol.live import MESSAGE_TYPE

log = logging.getLogger(__name__)
GROUP_REFRESH_S = 3600  # channels_redis forgets group members after a day (group_expiry)


class Sink(Protocol):
    def push(self, frame: str) -> None: ...

    def lost(self) -> None: ...  # the hub can no longer feed this socket


class Hub:
    def __init__(self) -> None:
        # A layer instance of its own: channels_redis keeps receive() state (lock, counters) per
        # instance and per event loop, and a hub lives in one loop (tests run one loop per test).
        self.layer = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)
        self.channel: str | None = None
        self.subscribers: dict[str, set[Sink]] = {}
        self.groups: dict[str, int] = {}  # channel-layer group → topics joined through it
        self.pending: dict[str, list[Any]] = {}
        self.dropped = 0  # malformed messages
        self._ready = asyncio.Lock()
        self._locks: dict[str, asyncio.Lock] = {}
        self._reader: asyncio.Task | None = None
        self._refresher: asyncio.Task | None = None

    async def _start(self) -> str:
        async with self._ready:
            if self.channel is None:
                self.channel = await self.layer.new_channel()  # default prefix: shares the process receive loop
            if self._reader is None or self._reader.done():
                self._reader = asyncio.create_task(self._read())
                self._reader.add_done_callback(self._reader_ended)
            if self._refresher is None or self._refresher.done():
                self._refresher = asyncio.create_task(self._refresh())
        return self.channel

    def _reader_ended(self, task: asyncio.Task) -> None:
        """Redis failed under the reader: hand every socket back to its browser, which reconnects
        (live.js backs off) and so starts a new reader. No timers: nothing is started while the
        event loop shuts down, and a loop never waits on a reader it cannot cancel."""
        if self._refresher is not None:
            self._refresher.cancel()
        if task.cancelled():
            return
        log.error(
            "live fan-out: receiving failed (%s); asking %d browsers to reconnect",
            task.exception(),
            sum(len(s) for s in self.subscribers.values()),
        )
        sinks = {sink for group in self.subscribers.values() for sink in group}
        self.subscribers.clear()
        self.groups.clear()
        self.pending.clear()
        for sink in sinks:
            sink.lost()

    def _lock(self, topic: str) -> asyncio.Lock:
        # group_add and group_discard of one topic must not overtake each other in Redis.
        return self._locks.setdefault(topic, asyncio.Lock())

    async def join(self, topic: str, sink: Sink) -> None:
        channel = await self._start()
        group = topics.group_of(topic)
        async with self._lock(group):
            if topic not in self.subscribers:
                if not self.groups.get(group):
                    await self.layer.group_add(group, channel)  # recorded only once Redis has it
                self.groups[group] = self.groups.get(group, 0) + 1
                self.subscribers[topic] = set()
            self.subscribers[topic].add(sink)

    async def leave(self, topic: str, sink: Sink) -> None:
        group = topics.group_of(topic)
        async with self._lock(group):
            sinks = self.subscribers.get(topic)
            if sinks is None:
                return
            sinks.discard(sink)
            if not sinks:
                del self.subscribers[topic]
                self.pending.pop(topic, None)
                self.groups[group] -= 1
                if not self.groups[group]:
                    del self.groups[group]
                    await self.layer.group_discard(group, self.channel)

    async def _read(self) -> None:
        while True:
            self.deliver(await self.layer.receive(self.channel))

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(GROUP_REFRESH_S)
            try:
                for group in list(self.groups):
                    await self.layer.group_add(group, self.channel)
            except Exception as exc:  # ends here; the next join starts another (never loop on errors)
                log.error("live fan-out: could not renew topics (%s)", exc)
                return

    def deliver(self, message: Any) -> None:
        """One payload (``payload``) or several in order (``payloads``, sent on as one batch frame)."""
        try:
            if not isinstance(message, dict) or message.get("type") != MESSAGE_TYPE:
                raise ValueError("not a live message")
            topic = message.get("topic")
            found = topics.spec_for(topic) if isinstance(topic, str) else None
            if found is None:
                raise ValueError(f"unknown topic {topic!r}")
            spec, _match = found
            several = "payloads" in message
            payloads = message["payloads"] if several else [message.get("payload")]
            if not isinstance(payloads, list):
                raise ValueError("payloads must be a list")
            if spec.validate is not None:
                for payload in payloads:
                    spec.validate(payload)
            if spec.part_of is not None:
                for payload in payloads:  # the topics that ride on this one (a node's telemetry)
                    part = spec.part_of(payload)
                    if part in self.subscribers:
                        self._send(part, _encode({"type": "event", "topic": part, "data": payload}))
            if topic not in self.subscribers:
                return  # the last browser left after the message was sent
            if spec.batch_s <= 0:
                self._send(
                    topic,
                    _encode(
                        {"type": "batch", "topic": topic, "data": payloads}
                        if several
                        else {"type": "event", "topic": topic, "data": payloads[0]}
                    ),
                )
                return
            _encode(payloads)  # refuse what cannot be sent now, not when its batch is flushed
        except (ValueError, TypeError) as exc:
            self.dropped += 1
            log.warning("live fan-out: dropped a malformed message (%s); %d so far", exc, self.dropped)
            return
        waiting = self.pending.setdefault(topic, [])
        waiting.extend(payloads)
        if len(waiting) == len(payloads):
            asyncio.get_running_loop().call_later(spec.batch_s, self._flush, topic)

    def _flush(self, topic: str) -> None:
        batch = self.pending.pop(topic, None)
        if batch:
            self._send(topic, _encode({"type": "batch", "topic": topic, "data": batch}))

    def _send(self, topic: str, frame: str) -> None:
        for sink in tuple(self.subscribers.get(topic, ())):
            sink.push(frame)


def _encode(value: Any) -> str:
    return json.dumps(value, allow_nan=False)  # browsers' JSON.parse refuses NaN


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


def hub() -> Hub:
    """The hub of the running event loop (one per web process; tests may run several loops)."""
    loop = asyncio.get_running_loop()
    if loop not in _hubs:
        _hubs[loop] = Hub()
    return _hubs[loop]
