"""/ws/: one websocket per browser tab; it subscribes to topics after a role check."""
from __future__ import annotations

from typing import Any

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from console import topics

CLOSE_UNAUTHENTICATED = 4401


class LiveConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        self.user = self.scope.get("user")
        self.joined: set[str] = set()
        if self.user is None or not self.user.is_authenticated or not self.user.is_active:
            await self.close(code=CLOSE_UNAUTHENTICATED)  # before accept: the handshake is refused
            return
        await self.accept()

    async def disconnect(self, code: int) -> None:
        for topic in getattr(self, "joined", set()):
            await self.channel_layer.group_discard(topic, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if not isinstance(content, dict):
            await self.send_json({"type": "error", "error": "bad_request", "message": "send a JSON object"})
            return
        action, topic = content.get("action"), content.get("topic")
        if action not in {"subscribe", "unsubscribe"} or not isinstance(topic, str) or len(topic) > 90:
            await self.send_json({
                "type": "error", "error": "bad_request",
                "message": 'send {"action": "subscribe" or "unsubscribe", "topic": "<name>"}',
            })
            return
        if action == "unsubscribe":
            if topic in self.joined:
                self.joined.discard(topic)
                await self.channel_layer.group_discard(topic, self.channel_name)
            await self.send_json({"type": "unsubscribed", "topic": topic})
            return
        reason = topics.check(self.user, topic)
        if reason:
            await self.send_json({"type": "error", "error": "forbidden", "topic": topic, "message": reason})
            return
        await self.channel_layer.group_add(topic, self.channel_name)
        self.joined.add(topic)
        await self.send_json({"type": "subscribed", "topic": topic})

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        try:
            await super().receive(text_data=text_data, bytes_data=bytes_data, **kwargs)
        except ValueError:  # not JSON
            await self.send_json({"type": "error", "error": "bad_request", "message": "messages must be JSON"})

    async def live_message(self, message: dict) -> None:
        if message["topic"] in self.joined:
            await self.send_json({"type": "event", "topic": message["topic"], "data": message["payload"]})
