"""Live messages to a topic's channel group, as the console and the agent both send them.

Messages go to one background event loop per process, which keeps its Redis connections open
between messages, so the caller (an audit write, a request, the agent's sampler) never waits on
Redis and no connection is opened per message. The caller gives the channel layer: the console's
from its settings (console.live), the agent's from its own Redis URL (no Django settings there).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

__all__ = ["MESSAGE_TYPE", "Publisher", "message"]

CHANNEL_PREFIX = "fleet:asgi"  # the channel layer's Redis key prefix; the console and agents share it


def channel_layer_hosts(redis_url: str) -> list[dict]:
    """channels_redis blocks on BZPOPMIN for 5 s; redis-py 8 also times reads out after 5 s by
    default, so the two race and receive() fails every few seconds. Read timeout: 15 s."""
    return [{"address": redis_url, "socket_timeout": 15}]


MESSAGE_TYPE = "live.message"  # handled by the fan-out hub (console.fanout)
log = logging.getLogger("console.live")


def message(topic: str, payload: Any) -> dict:
    return {"type": MESSAGE_TYPE, "topic": topic, "payload": payload}


class Publisher:
    def __init__(self, layer: Callable[[], Any]) -> None:
        self._layer = layer
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid: int | None = None
        self._in_order: asyncio.Lock | None = None  # FIFO: messages leave in publish() order
        self._lock = threading.Lock()
        self._gathering: dict[str, list[Any]] = {}  # publish_soon: payloads waiting per topic

    def _background_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._pid != os.getpid():  # a forked child (Celery pool) needs its own
                self._loop, self._pid, self._in_order = asyncio.new_event_loop(), os.getpid(), asyncio.Lock()
                threading.Thread(target=self._loop.run_forever, name="live-publish", daemon=True).start()
            return self._loop

    async def _send(self, topics: tuple[str, ...], payload: Any) -> None:
        # group_send awaits Redis several times; without the lock two messages could interleave
        # and arrive out of order (audit rows would then be prepended in the wrong order).
        assert self._in_order is not None
        async with self._in_order:
            layer = self._layer()
            for topic in topics:
                await layer.group_send(topic, message(topic, payload))

    def publish_many(self, topic: str, payloads: list[Any]) -> Future:
        """Several payloads for one topic in one message (browsers get them as one batch frame)."""
        return asyncio.run_coroutine_threadsafe(self._send_many(topic, payloads), self._background_loop())

    async def _send_many(self, topic: str, payloads: list[Any]) -> None:
        assert self._in_order is not None
        async with self._in_order:
            await self._layer().group_send(topic, {"type": MESSAGE_TYPE, "topic": topic, "payloads": payloads})

    def publish_soon(self, topic: str, payload: Any, window_s: float = 0.05) -> None:
        """Fire-and-forget, gathered: what arrives for ``topic`` within ``window_s`` leaves as one
        message (one Redis round trip however many events a busy trail writes)."""
        loop = self._background_loop()
        with self._lock:
            waiting = self._gathering.setdefault(topic, [])
            waiting.append(payload)
            first = len(waiting) == 1
        if first:
            loop.call_soon_threadsafe(loop.call_later, window_s, self._flush_gathered, topic)

    def _flush_gathered(self, topic: str) -> None:
        with self._lock:
            payloads = self._gathering.pop(topic, [])
        if payloads:
            assert self._loop is not None  # this runs on it
            task = self._loop.create_task(
                self._send((topic,), payloads[0]) if len(payloads) == 1 else self._send_many(topic, payloads)
            )

            def failed(t: asyncio.Task) -> None:
                if not t.cancelled() and t.exception() is not None:
                    log.error("live publish failed: %s", t.exception())

            task.add_done_callback(failed)

    def publish(self, topics: str | tuple[str, ...], payload: Any) -> Future:
        """Queue ``payload`` for one topic or several; returns a future for callers that want to wait."""
        loop = self._background_loop()
        topics = (topics,) if isinstance(topics, str) else tuple(topics)
        future = asyncio.run_coroutine_threadsafe(self._send(topics, payload), loop)
        future.add_done_callback(_report)
        return future


def _report(future: Future) -> None:
    if future.exception() is not None:
        log.error("live publish failed: %s", future.exception())
