"""/ws/: one websocket per browser tab; it subscribes to topics after a role check.

Messages reach the socket through the process's fan-out hub (console.fanout), which hands this
consumer ready-encoded frames; a writer task sends them so a slow browser never holds up others.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from access.people import twofactor
from console import fanout, topics

CLOSE_UNAUTHENTICATED = 4401
CLOSE_TRY_AGAIN = 1012  # "service restart": the browser reconnects after its backoff
OUTBOX_FRAMES = 256  # a browser this far behind loses frames (counted) rather than stalling the hub
log = logging.getLogger(__name__)


class LiveConsumer(AsyncJsonWebsocketConsumer):
    # An alias that names no layer: get_channel_layer() then gives None and the socket gets no
    # channel of its own to listen on (messages come through the hub, one channel per process).
    channel_layer_alias = "hub-only"

    async def connect(self) -> None:
        self.user = self.scope.get("user")
        self.joined: set[str] = set()
        if self.user is None or not self.user.is_authenticated or not self.user.is_active:
            await self.close(code=CLOSE_UNAUTHENTICATED)  # before accept: the handshake is refused
            return
        if await database_sync_to_async(twofactor.pending)(self.user, self.scope.get("session")):
            await self.close(code=CLOSE_UNAUTHENTICATED)  # the second factor is still owed
            return
        self.outbox: asyncio.Queue[str] = asyncio.Queue(OUTBOX_FRAMES)
        self.lost_frames = 0  # not `lost`: that is the method the hub calls
        self.writer = asyncio.create_task(self._write())
        await self.accept()

    async def disconnect(self, code: int) -> None:
        try:
            hub = fanout.hub()
            for topic in getattr(self, "joined", set()):
                await hub.leave(topic, self)
        finally:
            if getattr(self, "writer", None) is not None:
                self.writer.cancel()

    def push(self, frame: str) -> None:
        try:
            self.outbox.put_nowait(frame)
        except asyncio.QueueFull:
            self.lost_frames += 1
            if self.lost_frames in (1, 100, 10000):
                log.warning("live: a slow browser of %s has lost %d frames", self.user, self.lost_frames)

    def lost(self) -> None:
        self.joined.clear()
        self.writer.cancel()
        asyncio.ensure_future(self.close(code=CLOSE_TRY_AGAIN))  # live.js reconnects and subscribes again

    async def _write(self) -> None:
        while True:
            frame = await self.outbox.get()
            await self.send(text_data=frame)

    async def _reply(self, **fields: Any) -> None:
        await self.send_json(fields)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if not isinstance(content, dict):
            await self._reply(type="error", error="bad_request", message="send a JSON object")
            return
        action, topic = content.get("action"), content.get("topic")
        if action not in {"subscribe", "unsubscribe"} or not isinstance(topic, str) or len(topic) > 90:
            await self._reply(
                type="error",
                error="bad_request",
                message='send {"action": "subscribe" or "unsubscribe", "topic": "<name>"}',
            )
            return
        if action == "unsubscribe":
            if topic in self.joined:
                self.joined.discard(topic)
                await fanout.hub().leave(topic, self)
            await self._reply(type="unsubscribed", topic=topic)
            return
        reason = topics.check(self.user, topic)
        if reason:
            await self._reply(type="error", error="forbidden", topic=topic, message=reason)
            return
        await fanout.hub().join(topic, self)
        self.joined.add(topic)
        await self._reply(type="subscribed", topic=topic)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        try:
            await super().receive(text_data=text_data, bytes_data=bytes_data, **kwargs)
        except ValueError:  # not JSON
            await self._reply(type="error", error="bad_request", message="messages must be JSON")
