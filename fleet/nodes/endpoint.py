"""The agent endpoint: the only door a node has into the console (fleet.protocol.wire).

HTTPS: ``GET /agent/ca.pem``, ``POST /agent/join`` (a join token admits a node once and gets it a
credential) and ``POST /agent/register`` (a restarted agent, with its credential). WebSocket
``/agent/link``: opened with the credential, it carries the node's commands out and its reports,
telemetry and log lines in. Each is attributed to the node the credential names and checked
against what a node may say; the rest is refused, counted and audited (services.refuse).

Plain ASGI, not Django views: nodes are authenticated by their credential, not by a session, and
reach the console by addresses that ALLOWED_HOSTS (the browsers' names) need not list. Plain
HTTP and ws are accepted from loopback only (`make run`'s own agent); everyone else uses TLS.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import secrets
import time
from typing import Any

import redis.asyncio as aioredis
from asgiref.sync import sync_to_async
from celery import current_app
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.routing import ProtocolTypeRouter
from django.conf import settings

from console import tls
from console.actions import ServiceError
from console.live import publish, publish_soon
from fleet.deployments.models import Instance
from fleet.nodes import commands, services
from fleet.protocol import tasks, telemetry, wire

log = logging.getLogger(__name__)
LINK_TTL_S = 60  # the "connected" mark outlives a dead web process by at most this (heartbeats renew it)
MAX_SAMPLES_PER_S = 20  # an agent samples at most every 0.1 s; more is a flood, refused
REFUSED = "refused"  # console → agent: what was refused and why
_redis: Any = None  # redis.asyncio.Redis (its stubs type every reply as bytes | str | None)


def _aredis() -> Any:
    global _redis
    if _redis is None:
        # Blocking pool: a thousand links opening or closing at once wait for a connection in turn
        # instead of failing (redis-py's default pool refuses the 101st).
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.REDIS_URL, max_connections=64, timeout=30, socket_timeout=10, decode_responses=True
        )
        _redis = aioredis.Redis(connection_pool=pool)
    return _redis


def secure(scope: dict) -> bool:
    """TLS, or a peer on this machine."""
    if scope.get("scheme") in ("https", "wss"):
        return True
    client = scope.get("client") or ("", 0)
    try:
        return ipaddress.ip_address(client[0]).is_loopback
    except ValueError:
        return False


def bearer(scope: dict) -> str | None:
    for name, value in scope.get("headers") or []:
        if name == b"authorization":
            kind, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if kind.lower() == "bearer" else None
    return None


# --- HTTPS: the CA, joining and re-registering ---------------------------------------------------
async def _respond(send: Any, status: int, body: dict | bytes, content_type: str = "application/json") -> None:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


async def _json_body(receive: Any) -> Any:
    body = b""
    while True:
        event = await receive()
        body += event.get("body", b"")
        if len(body) > wire.MAX_MESSAGE_BYTES:
            raise ValueError("the request body is too large")
        if not event.get("more_body"):
            break
    return json.loads(body or b"null")


def _join(data: dict) -> dict:
    secret = secrets.token_urlsafe(32)
    node = services.register_node(
        name=data.get("name"), secret=secret, facts=data.get("facts"), join_token=data["token"]
    )
    return {"node_id": node.pk, "name": node.name, "kind": node.kind, "credential": wire.credential(node.pk, secret)}


def _register(credential: str | None, data: dict) -> dict:
    parsed = wire.parse_credential(credential)
    if parsed is None:
        raise ServiceError("give this node's credential (Authorization: Bearer fnc_…)")
    node = services.register_node(name=data.get("name"), secret=parsed[1], facts=data.get("facts"), node_id=parsed[0])
    return {"node_id": node.pk, "name": node.name, "kind": node.kind}


async def http(scope: dict, receive: Any, send: Any) -> None:
    path, method = scope["path"], scope["method"]
    if not secure(scope):
        await _respond(send, 403, {"error": "agents reach the console over TLS (its agent port)"})
        return
    if path == wire.CA_PATH and method == "GET":
        await _respond(send, 200, tls.material().ca.read_bytes(), "application/x-pem-file")
        return
    if path not in (wire.JOIN_PATH, wire.REGISTER_PATH):
        await _respond(send, 404, {"error": "not found"})
        return
    if method != "POST":
        await _respond(send, 405, {"error": "use POST"})
        return
    try:
        data = await _json_body(receive)
        if not isinstance(data, dict) or (path == wire.JOIN_PATH and not isinstance(data.get("token"), str)):
            raise ValueError("send a JSON object with name, facts" + (" and token" if path == wire.JOIN_PATH else ""))
    except ValueError as exc:
        await _respond(send, 400, {"error": str(exc)})
        return
    try:
        if path == wire.JOIN_PATH:
            answer = await database_sync_to_async(_join)(data)
        else:
            answer = await database_sync_to_async(_register)(bearer(scope), data)
    except ServiceError as exc:
        await _respond(send, 403, {"error": exc.message})
        return
    await _respond(send, 200, answer)


# --- the link ----------------------------------------------------------------------------------
_links: dict[int, set[NodeLink]] = {}  # this process's open links, by node
_listener: asyncio.Task | None = None


def _listen_for_events() -> None:
    """One Redis subscription per process carries every node's events to the link holding it
    (channel-layer groups would cost every link two Redis calls to open and close)."""
    global _listener
    if _listener is None or _listener.done():
        _listener = asyncio.create_task(_events())


async def _events() -> None:
    try:
        async with _aredis().pubsub() as pubsub:
            await pubsub.subscribe(commands.EVENTS)
            async for note in pubsub.listen():
                if note.get("type") != "message":
                    continue
                event = json.loads(note["data"])
                for link in tuple(_links.get(event.get("node"), ())):
                    asyncio.create_task(link.handle(str(event.get("event"))))
    except Exception as exc:  # Redis went away: the next link opened starts listening again
        log.error("agent endpoint: stopped hearing node events (%s); closing links so agents reconnect", exc)
        for links in list(_links.values()):
            for link in tuple(links):
                await link.close(code=1012)


class NodeLink(AsyncWebsocketConsumer):
    channel_layer_alias = "hub-only"  # names no layer: links hear their events through _events
    node_id: int | None = None

    async def connect(self) -> None:
        self.done = True  # nothing is handled until the credential is checked
        if not secure(self.scope):
            await self.close(code=wire.CLOSE_REVOKED)
            return
        node = await database_sync_to_async(services.authenticate)(bearer(self.scope))
        if node is None:
            await self.close(code=wire.CLOSE_REVOKED)  # before accept: the handshake answers 403
            return
        self.node_id, self.name = node.pk, node.name
        self.sent_upto, self.instances, self.done = "-", set[int](), False
        self.awaiting: set[str] = set()  # commands sent that asked for an answer
        self.second, self.samples = 0, 0
        self.link_id = secrets.token_hex(8)
        _listen_for_events()
        _links.setdefault(node.pk, set()).add(self)
        await self.accept()
        await _aredis().set(services.link_key(node.pk), self.link_id, ex=LINK_TTL_S)
        await self._send_commands()

    async def disconnect(self, code: int) -> None:
        self.done = True
        if self.node_id is None:
            return
        _links.get(self.node_id, set()).discard(self)
        if not _links.get(self.node_id):
            _links.pop(self.node_id, None)
        key = services.link_key(self.node_id)
        if await _aredis().get(key) == self.link_id:
            await _aredis().delete(key)

    async def handle(self, event: str) -> None:
        """What the console tells this link: commands wait, it was revoked, or rotate."""
        if self.done:
            return
        if event == "wake":
            await self._send_commands()
        elif event == "revoke":
            self.done = True
            await self.close(code=wire.CLOSE_REVOKED)
        elif event == "rotate":
            await self._rotate()

    async def _rotate(self) -> None:
        assert self.node_id is not None  # connected
        self.done = True  # the credential this link was opened with stops working now
        fresh = await database_sync_to_async(services.new_credential)(self.node_id)
        if fresh is not None:
            await self.send(json.dumps({"kind": wire.CREDENTIAL, "credential": fresh}))
        await self.close(code=wire.CLOSE_ROTATED if fresh else wire.CLOSE_REVOKED)

    async def _send_commands(self) -> None:
        assert self.node_id is not None
        start = self.sent_upto if self.sent_upto == "-" else f"({self.sent_upto}"
        while True:
            batch = await _aredis().xrange(commands.stream(self.node_id), start, "+", 100)
            for command_id, fields in batch:
                body = json.loads(fields["m"])
                if body.get("reply"):
                    self.awaiting.add(command_id)
                await self.send(json.dumps({"kind": wire.COMMAND, "id": command_id, **body}))
                self.sent_upto, start = command_id, f"({command_id}"
            if len(batch) < 100:
                return

    # what the node says
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.done:
            return
        assert self.node_id is not None
        try:
            if text_data is None or len(text_data) > wire.MAX_MESSAGE_BYTES:
                raise ValueError("send JSON text of at most 256 KiB")
            said = json.loads(text_data)
            if not isinstance(said, dict):
                raise ValueError("send a JSON object")
        except ValueError as exc:
            await self._refuse("malformed", str(exc))
            return
        kind = said.get("kind")
        if kind not in wire.SAYS:
            await self._refuse(str(kind)[:80], "not something a node may say")
            return
        if kind in wire.REPORTS:
            await self._relay(kind, {k: said[k] for k in wire.REPORTS[kind] if k in said})
        elif kind == wire.TELEMETRY:
            await self._telemetry(said.get("sample"))
        elif kind == wire.INSTANCE_LOG:
            await self._instance_log(said.get("instance"), said.get("lines"))
        elif kind == wire.RUNTIME_LOG:
            line = {"runtime": str(said.get("runtime"))[:80], "line": str(said.get("line"))[:2000]}
            publish(f"node.{self.node_id}.runtime", line)
        elif kind == wire.ACK and isinstance(said.get("id"), str):
            await _aredis().xdel(commands.stream(self.node_id), said["id"])
        elif kind == wire.RESULT:
            if said.get("id") not in self.awaiting:
                await self._refuse(kind, "an answer to no question this link asked")
                return
            self.awaiting.discard(said["id"])
            key = commands.reply_key(self.node_id, said["id"])
            await (
                _aredis()
                .pipeline()
                .rpush(key, json.dumps(said.get("value")))
                .expire(key, commands.REPLY_TTL_S)
                .execute()
            )

    async def _refuse(self, kind: str, why: str) -> None:
        assert self.node_id is not None
        await database_sync_to_async(services.refuse)(self.node_id, kind, why)
        await self.send(json.dumps({"kind": REFUSED, "what": kind, "why": why}))

    async def _relay(self, kind: str, fields: dict) -> None:
        assert self.node_id is not None
        if kind == tasks.HEARTBEAT:
            sample = fields.get("sample")
            if isinstance(sample, dict) and sample.get("node", self.node_id) != self.node_id:
                await self._refuse(kind, "a heartbeat carrying another node's sample")
                return
            pipe = _aredis().pipeline(transaction=False)
            pipe.set(services.link_key(self.node_id), self.link_id, ex=LINK_TTL_S)
            pipe.set(services.heard_key(self.node_id), time.time(), ex=LINK_TTL_S)
            await pipe.execute()
        send_task = sync_to_async(current_app.send_task, thread_sensitive=False)
        await send_task(kind, kwargs={"node_id": self.node_id, **fields}, queue=tasks.CONSOLE_QUEUE)

    async def _telemetry(self, sample: Any) -> None:
        if not isinstance(sample, dict):
            await self._refuse(wire.TELEMETRY, "a sample is an object")
            return
        if sample.get("node", self.node_id) != self.node_id:
            await self._refuse(wire.TELEMETRY, f"a sample for node {str(sample.get('node'))[:20]}, not this one")
            return
        second = int(time.monotonic())
        self.second, self.samples = second, (self.samples + 1 if second == self.second else 1)
        if self.samples > MAX_SAMPLES_PER_S:
            await self._refuse(wire.TELEMETRY, f"more than {MAX_SAMPLES_PER_S} samples a second")
            return
        sample |= {"node": self.node_id, "name": self.name}
        try:
            telemetry.check(sample)  # here, once, rather than in every web process
        except telemetry.MalformedTelemetry as exc:
            await self._refuse(wire.TELEMETRY, str(exc)[:200])
            return
        # Once, on the fleet topic (a node's own topic rides on it: console.topics), through the
        # process's one publisher, gathered for 20 ms: a thousand links sending at once make fifty
        # Redis calls a second, not two thousand. (The web hub batches again for browsers.)
        publish_soon("telemetry.fleet", sample, window_s=0.02)

    async def _instance_log(self, instance: Any, lines: Any) -> None:
        if not isinstance(instance, int) or not isinstance(lines, list):
            await self._refuse(wire.INSTANCE_LOG, "give an instance id and a list of lines")
            return
        if instance not in self.instances:
            ours = Instance.objects.filter(pk=instance, node_id=self.node_id or 0)
            if not await database_sync_to_async(ours.exists)():
                await self._refuse(wire.INSTANCE_LOG, f"instance {instance} is not on this node")
                return
            self.instances.add(instance)
        kept = [str(x)[:2000] for x in lines[-commands.LOG_TAIL_LINES :]]
        if not kept:
            return
        # kept first, pushed second: a page that fetches the tail on joining never misses a line
        key = commands.log_tail_key(instance)
        tail = _aredis().pipeline(transaction=False).rpush(key, *kept).ltrim(key, -commands.LOG_TAIL_LINES, -1)
        await tail.expire(key, commands.LOG_TAIL_TTL_S).execute()
        publish(f"instance.{instance}.log", {"lines": kept})


def application() -> ProtocolTypeRouter:
    return ProtocolTypeRouter({"http": http, "websocket": NodeLink.as_asgi()})
