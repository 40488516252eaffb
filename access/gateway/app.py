"""The /v1 ASGI app: key → model → quota → a Ready instance (least busy or by prompt prefix; the
fallback deployment's when none can answer), streamed through unbuffered."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from django.conf import settings
from django.db import DatabaseError, close_old_connections
from redis.exceptions import RedisError

from access import bus
from access.gateway import keys, ledger, routes
from access.gateway.errors import GatewayError, error_body
from access.gateway.quota import Quotas
from fleet.deployments import autoscaler
from fleet.deployments.choices import Routing

log = logging.getLogger(__name__)
MAX_BODY = 16 * 1024 * 1024
ENDPOINTS = {"/v1/chat/completions": "chat", "/v1/completions": "completions", "/v1/embeddings": "embeddings"}
STREAMABLE = {"chat", "completions"}
INPUT_FIELD = {"chat": "messages", "completions": "prompt", "embeddings": "input"}
_JSON = [(b"content-type", b"application/json")]
_DONE = b"data: [DONE]\n\n"
WAKE_ASK_S = 5.0  # while calls are held, the wake is asked again this often (an ask may be lost)
WAKE_RETRY_AFTER_S = 30  # what a refused held call is told to wait
_SSE = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


def input_sha256(body: dict[str, Any], endpoint: str) -> str:
    """SHA-256 of the request's input (messages, prompt or input) as canonical JSON: an auditor
    holding the prompt can recompute it; the text itself is never stored."""
    value = body.get(INPUT_FIELD[endpoint])
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class Call:
    """One request's facts, filled in as it goes and written to the ledger at the end."""

    __slots__ = (
        "started",
        "rid",
        "entry",
        "model",
        "route",
        "upstream",
        "endpoint",
        "stream",
        "status",
        "prompt_tokens",
        "completion_tokens",
        "ttft_ms",
        "sha",
        "source_ip",
        "recorded",
    )

    def __init__(self, scope: dict) -> None:
        self.started = time.perf_counter()
        self.rid = secrets.token_hex(8)
        self.entry: keys.KeyEntry | None = None
        self.model = ""
        self.route: routes.Route | None = None
        self.upstream: routes.Upstream | None = None
        self.endpoint = ""
        self.stream = False
        self.status = 0
        self.prompt_tokens = self.completion_tokens = 0
        self.ttft_ms: float | None = None
        self.sha = ""
        client = scope.get("client")
        self.source_ip = client[0] if client else ""
        self.recorded = False

    def usage(self) -> ledger.Usage | None:
        e = self.entry
        if e is None or not self.model:
            return None
        return ledger.Usage(
            at=time.time(),
            key_id=e.key_id,
            key_prefix=e.prefix,
            user_id=e.user_id,
            username=e.username,
            role=e.role,
            department_id=e.department_id,
            department=e.department,
            model=self.model,
            deployment_id=self.route.deployment_id if self.route else None,
            instance_id=self.upstream.instance_id if self.upstream else None,
            endpoint=self.endpoint,
            stream=self.stream,
            status=self.status,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            latency_ms=(time.perf_counter() - self.started) * 1000,
            ttft_ms=self.ttft_ms,
            input_sha256=self.sha,
            request_id=self.rid,
            source_ip=self.source_ip,
        )


class Gateway:
    def __init__(self) -> None:
        self.keys = keys.KeyCache()
        self.routes: dict[str, routes.Route] = {}
        self.ledger = ledger.Ledger()
        self._db = ThreadPoolExecutor(max_workers=2, thread_name_prefix="gateway-db")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._setup_lock: asyncio.Lock | None = None
        self._routes_at = 0.0
        self._routes_task: asyncio.Task | None = None
        self._routes_again = False
        self._tasks: set[asyncio.Task] = set()
        self._waking: dict[int, Waking] = {}  # deployment id → the calls held while it wakes from zero

    # --- per-process setup (lazily, on the server's event loop) --------------------------------

    async def _ensure_setup(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        if self._setup_lock is None or self._setup_lock._loop is not loop:  # type: ignore[attr-defined]
            self._setup_lock = asyncio.Lock()
        async with self._setup_lock:
            if self._loop is loop:
                return
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
                timeout=aiohttp.ClientTimeout(total=None, connect=5, sock_read=settings.FLEET_GATEWAY_READ_TIMEOUT_S),
                auto_decompress=False,
                skip_auto_headers=("User-Agent",),
            )
            self.redis = aioredis.Redis.from_url(settings.REDIS_URL, socket_timeout=5)
            self.quotas = Quotas(self.redis)
            self.keys.clear()
            self._waking.clear()  # their events belong to the loop before
            self.routes = await loop.run_in_executor(self._db, routes.load)
            self._routes_at = time.monotonic()
            self._spawn(self._listen())
            self._spawn(self.quotas.flush_loop())
            self._loop = loop

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _listen(self) -> None:
        """Drop cached keys / reload routes when the console says they changed."""
        while True:
            try:
                pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(bus.CHANNEL)
                self.keys.clear()  # anything may have changed while we were not listening
                self._refresh_routes()
                async for message in pubsub.listen():
                    what = message.get("data")
                    if what == b"keys":
                        self.keys.clear()
                    elif what == b"routes":
                        self._refresh_routes()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("gateway lost its change feed (%s); caches expire by themselves meanwhile", exc)
                await asyncio.sleep(1)

    def _refresh_routes(self) -> None:
        """Reload the route table in the background; coalesces a burst of changes into one or two loads."""
        if self._routes_task is not None and not self._routes_task.done():
            self._routes_again = True
            return
        self._routes_task = asyncio.get_running_loop().create_task(self._reload_routes())

    async def _reload_routes(self) -> None:
        while True:
            self._routes_again = False
            try:
                fresh = await asyncio.get_running_loop().run_in_executor(self._db, routes.load)
                self.routes = routes.merge(self.routes, fresh)
                self._routes_at = time.monotonic()
                self._release_held()
            except Exception:
                log.exception("could not reload the gateway's routes")
            if not self._routes_again:
                return

    # --- waking a deployment scaled to zero ----------------------------------------------------

    async def _woken(self, route: routes.Route) -> routes.Route:
        """Hold a call for a deployment scaled to zero until the reloaded routes show it a Ready
        instance; the autoscaler is asked to start one. Beyond FLEET_WAKE_HOLD_MAX held calls, or
        after FLEET_WAKE_TIMEOUT_S, a 503 with Retry-After. A reload, not a poll, releases them."""
        waking = self._waking.setdefault(route.deployment_id, Waking())
        if waking.held >= settings.FLEET_WAKE_HOLD_MAX:
            raise _still_waking(route, f"{waking.held} calls already wait for it")
        deadline = time.monotonic() + settings.FLEET_WAKE_TIMEOUT_S
        waking.held += 1
        try:
            while not waking.ready.is_set():
                now = time.monotonic()
                if now >= deadline:
                    raise _still_waking(route, f"it did not start within {settings.FLEET_WAKE_TIMEOUT_S} s")
                self._ask_wake(waking, route.deployment_id)
                try:
                    await asyncio.wait_for(waking.ready.wait(), min(WAKE_ASK_S, deadline - now))
                except TimeoutError:
                    pass
        finally:
            waking.held -= 1
        return self.routes.get(route.name, route)

    def _ask_wake(self, waking: Waking, deployment_id: int) -> None:
        """Ask the autoscaler to start the deployment, at most every WAKE_ASK_S (an ask may be lost)."""
        now = time.monotonic()
        if now - waking.asked < WAKE_ASK_S:
            return
        waking.asked = now
        self._refresh_routes()  # in case the message that it is Ready was lost

        async def ask() -> None:
            try:
                await asyncio.get_running_loop().run_in_executor(self._db, _wake, deployment_id)
            except Exception:
                log.exception("could not ask for deployment %s to wake", deployment_id)

        self._spawn(ask())

    def _release_held(self) -> None:
        """After a reload: calls held for a deployment that now has Ready instances, or is no longer
        on its way up (stopped, deleted, its instance failed), go on: to an answer or a clear error."""
        by_id = {r.deployment_id: r for r in self.routes.values()}
        for deployment_id, waking in list(self._waking.items()):
            route = by_id.get(deployment_id)
            if route is None or route.upstreams or not route.asleep:
                waking.ready.set()
                del self._waking[deployment_id]

    # --- the request --------------------------------------------------------------------------

    async def __call__(self, scope: dict, receive, send) -> None:
        if scope["type"] != "http":
            return
        await self._ensure_setup()
        if time.monotonic() - self._routes_at > routes.REFRESH_S:
            self._refresh_routes()
        call = Call(scope)
        try:
            await self._handle(call, scope, receive, send)
        except GatewayError as exc:
            call.status = exc.status
            try:
                await self._record(call)
            except ledger.LedgerUnavailable:
                pass  # logged; a refusal is answered even when it cannot be recorded
            headers = [(b"retry-after", str(exc.retry_after).encode())] if exc.retry_after else []
            await _respond(send, exc.status, error_body(exc), headers + [(b"x-request-id", call.rid.encode())])
        finally:
            if not call.recorded:  # the client went away, or the upstream broke mid-answer
                try:
                    await asyncio.shield(self._record(call))
                except (ledger.LedgerUnavailable, asyncio.CancelledError):
                    pass
            used = call.prompt_tokens + call.completion_tokens
            if used and call.entry is not None:
                self.quotas.owe([s for s, _, _ in _scopes(call.entry)], used)

    async def _record(self, call: Call) -> None:
        """Queue the call's ledger row; called before the answer's last byte leaves (see ledger)."""
        usage = call.usage()
        if usage is None or call.recorded:
            return
        call.recorded = True
        await self.ledger.record(self.redis, ledger.encode(usage))

    async def _authenticate(self, scope: dict) -> keys.KeyEntry:
        header = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        parsed = keys.parse_bearer(header)
        if parsed is None:
            raise GatewayError(
                401, "Missing or malformed API key: send 'Authorization: Bearer flk_…'.", "invalid_api_key"
            )
        plaintext, prefix = parsed
        known, entry = self.keys.get(prefix)
        if not known:
            try:
                entry = await asyncio.get_running_loop().run_in_executor(self._db, keys.load, prefix)
            except DatabaseError as exc:  # fail closed, and say so: no key is taken on trust
                log.error("gateway: could not look up a key: %s", exc)
                raise GatewayError(
                    503,
                    "Keys cannot be checked right now; try again shortly.",
                    "keys_unavailable",
                    kind="service_unavailable",
                ) from None
            self.keys.put(prefix, entry)
        if entry is None or hashlib.sha256(plaintext.encode()).hexdigest() != entry.digest:
            raise GatewayError(401, "Invalid API key.", "invalid_api_key")
        if entry.revoked:
            raise GatewayError(401, "This API key was revoked.", "invalid_api_key")
        if entry.key_expires_at is not None and entry.key_expires_at <= time.time():
            raise GatewayError(401, "This API key has expired; create a new one.", "invalid_api_key")
        if not entry.user_active:
            raise GatewayError(401, "The key's user is deactivated.", "invalid_api_key")
        return entry

    async def _handle(self, call: Call, scope: dict, receive, send) -> None:
        path, method = scope["path"].rstrip("/"), scope["method"]
        if path == "/v1/models":
            if method != "GET":
                raise GatewayError(405, "Use GET for /v1/models.", "method_not_allowed")
            entry = await self._authenticate(scope)
            _check_grant(entry)
            data = [
                {"id": name, "object": "model", "created": r.created, "owned_by": "fleet-console", "root": r.model_name}
                for name, r in routes.callable_names(self.routes, entry.model_ids)
            ]
            await _respond(send, 200, json.dumps({"object": "list", "data": data}).encode())
            return
        endpoint = ENDPOINTS.get(path)
        if endpoint is None:
            raise GatewayError(
                404,
                f"Unknown endpoint {path}; this gateway serves /v1/models, "
                "/v1/chat/completions, /v1/completions and /v1/embeddings.",
                "unknown_url",
            )
        if method != "POST":
            raise GatewayError(405, f"Use POST for {path}.", "method_not_allowed")
        call.endpoint = endpoint
        entry = await self._authenticate(scope)
        raw = await _read_body(receive)
        try:
            body = json.loads(raw)
        except ValueError:
            raise GatewayError(400, "The request body is not valid JSON.", "invalid_json") from None
        if not isinstance(body, dict):
            raise GatewayError(400, "The request body must be a JSON object.", "invalid_json")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise GatewayError(400, "Name the model: the request needs a 'model' string.", "missing_model", "model")
        if INPUT_FIELD[endpoint] not in body:
            raise GatewayError(
                400, f"The request needs '{INPUT_FIELD[endpoint]}'.", "missing_input", INPUT_FIELD[endpoint]
            )
        call.entry, call.model, call.sha = entry, model[:100], input_sha256(body, endpoint)
        route = routes.resolve(self.routes, model)
        if route is None:
            raise GatewayError(
                404, f"The model '{model}' does not exist; GET /v1/models lists yours.", "model_not_found", "model"
            )
        call.route = route
        _check_grant(entry)
        if route.model_id not in entry.model_ids:
            raise GatewayError(
                403, f"This key may not use the model '{model}'; request access to it.", "model_not_granted", "model"
            )
        if model != route.name:  # called by the model's name: vLLM knows the deployment's
            body["model"] = route.name
            raw = json.dumps(body).encode()
        stream = endpoint in STREAMABLE and body.get("stream") is True
        call.stream = stream
        wants_usage = False
        if stream:
            options = body.get("stream_options")
            options = options if isinstance(options, dict) else {}
            wants_usage = options.get("include_usage") is True
            if not wants_usage:  # ask vLLM for usage anyway (we meter it) and drop that chunk on the way out
                body["stream_options"] = options | {"include_usage": True}
                raw = json.dumps(body).encode()
        try:
            verdict = await self.quotas.check(_scopes(entry))
        except RedisError as exc:  # fail closed: without the counters no quota can be enforced
            log.error("gateway: quota check failed: %s", exc)
            raise GatewayError(
                503,
                "Quotas cannot be checked right now; try again shortly.",
                "quota_unavailable",
                kind="service_unavailable",
            ) from None
        if not verdict.allowed:
            raise GatewayError(
                429, verdict.message, "rate_limit_exceeded", retry_after=verdict.retry_after, kind="rate_limit_error"
            )
        key = routes.prefix_key(body) if route.routing == Routing.PREFIX else None
        await self._forward(call, path, raw, wants_usage, key, receive, send)

    async def _forward(
        self, call: Call, path: str, raw: bytes, wants_usage: bool, key: int | None, receive, send
    ) -> None:
        """Proxy to an instance; a client that disconnects cancels the upstream request."""
        proxy = asyncio.ensure_future(self._proxy(call, path, raw, wants_usage, key, send))
        watch = asyncio.ensure_future(_disconnected(receive))
        try:
            await asyncio.wait((proxy, watch), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not proxy.done():  # the client went away: closing the upstream response aborts it there
                proxy.cancel()
                call.status = 499
                try:
                    await proxy
                except asyncio.CancelledError:
                    pass
            watch.cancel()
        if not proxy.cancelled():
            proxy.result()  # re-raise a GatewayError (no instance) to be answered

    async def _proxy(self, call: Call, path: str, raw: bytes, wants_usage: bool, key: int | None, send) -> None:
        route = call.route
        assert route is not None
        headers = {"Content-Type": "application/json", "Accept-Encoding": "identity", "X-Request-Id": call.rid}
        fallback = self._fallback(route)
        if not route.upstreams and route.asleep:  # scaled to zero: its fallback answers meanwhile, if any
            if fallback is None:
                route = call.route = await self._woken(route)
            else:
                self._ask_wake(self._waking.setdefault(route.deployment_id, Waking()), route.deployment_id)
        chain = [route] if fallback is None else [route, fallback]
        for route in chain:
            if route is not call.route:  # the fallback: asked by its own served name
                raw, call.route = _renamed(raw, route.name), route  # the ledger names who answered
            tried: set[int] = set()
            while (upstream := route.pick(tried, key)) is not None:
                tried.add(upstream.instance_id)
                upstream.outstanding += 1
                try:
                    async with self.session.post(upstream.base_url + path, data=raw, headers=headers) as resp:
                        if resp.status >= 500 and route is not chain[-1]:  # failed before its first byte
                            log.warning("%s answered %s; its fallback takes the call", route.name, resp.status)
                            break
                        call.upstream = upstream
                        await self._relay(call, resp, wants_usage, send)
                        return
                except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError) as exc:
                    if call.upstream is upstream:  # failed after the response began: nothing left to retry
                        log.warning("upstream %s broke mid-response: %s", upstream.base_url, exc)
                        call.status = 502
                        return
                    upstream.down_until = time.monotonic() + routes.DOWN_FOR_S
                    log.warning("upstream %s refused (%s); trying another instance", upstream.base_url, exc)
                finally:
                    upstream.outstanding -= 1
        raise GatewayError(
            503,
            f"No ready instance of '{route.name}' right now; try again shortly.",
            "no_ready_instance",
            kind="service_unavailable",
        )

    def _fallback(self, route: routes.Route) -> routes.Route | None:
        """The deployment that answers for ``route`` when it cannot, if that one has Ready instances."""
        fallback = self.routes.get(route.fallback) if route.fallback else None
        return fallback if fallback is not None and fallback.upstreams else None

    async def _relay(self, call: Call, resp: aiohttp.ClientResponse, wants_usage: bool, send) -> None:
        call.status = resp.status
        rid = [(b"x-request-id", call.rid.encode())]
        if not call.stream or resp.status != 200:
            data = await resp.read()
            if resp.status == 200:
                _count(call, _usage_of(data))
            else:
                data = _openai_shaped(call, resp.status, data)
            try:
                await self._record(call)
            except ledger.LedgerUnavailable:
                raise GatewayError(
                    503,
                    "The call cannot be recorded right now, so it is not answered; try again shortly.",
                    "ledger_unavailable",
                    kind="service_unavailable",
                ) from None
            content_type = (
                resp.headers.get("Content-Type", "application/json") if resp.status == 200 else "application/json"
            )
            headers = [(b"content-type", content_type.encode())] + rid
            await send({"type": "http.response.start", "status": resp.status, "headers": headers})
            await send({"type": "http.response.body", "body": data})
            return
        await send({"type": "http.response.start", "status": 200, "headers": _SSE + rid})
        pending = done = b""
        async for chunk in resp.content.iter_any():
            pending += chunk
            cut = pending.rfind(b"\n\n")
            if cut < 0:
                continue
            ready, pending = pending[: cut + 2], pending[cut + 2 :]
            if b'"usage"' in ready:
                ready = _take_usage(call, ready, wants_usage)
            if ready.endswith(_DONE):  # held back until the call is recorded: [DONE] means answered
                ready, done = ready[: -len(_DONE)], _DONE
            if ready:
                if call.ttft_ms is None:
                    call.ttft_ms = (time.perf_counter() - call.started) * 1000
                await send({"type": "http.response.body", "body": ready, "more_body": True})
        try:
            await self._record(call)
        except ledger.LedgerUnavailable:
            error = GatewayError(503, "The call could not be recorded.", "ledger_unavailable")
            done = b"data: " + error_body(error) + b"\n\n"
        await send({"type": "http.response.body", "body": pending + done})


class Waking:
    """The calls one gateway process holds for a deployment waking from zero."""

    __slots__ = ("ready", "held", "asked")

    def __init__(self) -> None:
        self.ready = asyncio.Event()
        self.held = 0
        self.asked = float("-inf")


def _wake(deployment_id: int) -> None:
    close_old_connections()
    autoscaler.wake(deployment_id)


def _still_waking(route: routes.Route, why: str) -> GatewayError:
    return GatewayError(
        503,
        f"The model '{route.name}' is waking up and cannot take this call yet ({why}); try again shortly.",
        "model_waking",
        retry_after=WAKE_RETRY_AFTER_S,
        kind="service_unavailable",
    )


def _renamed(raw: bytes, name: str) -> bytes:
    """The request as the fallback's vLLM expects it: called by that deployment's served name."""
    body = json.loads(raw)
    body["model"] = name
    return json.dumps(body).encode()


def _openai_shaped(call: Call, status: int, data: bytes) -> bytes:
    """An instance's refusal as OpenAI clients expect it: vLLM answers an endpoint its model does
    not serve (embeddings from a chat model) with a bare {"detail": "Not Found"}."""
    try:
        body = json.loads(data)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return data
    said = str(body.get("detail") or body.get("message") or "") if isinstance(body, dict) else ""
    if status == 404:
        where = next((path for path, name in ENDPOINTS.items() if name == call.endpoint), call.endpoint)
        error = GatewayError(404, f"The model '{call.model}' does not serve {where}.", "unsupported_endpoint")
    else:
        error = GatewayError(status, f"The model's server refused the call: {said or status}.", "upstream_error")
    return error_body(error)


def _check_grant(entry: keys.KeyEntry) -> None:
    if entry.grant_revoked:
        raise GatewayError(403, "The grant behind this key was revoked; request access again.", "grant_revoked")
    if entry.grant_expires_at <= time.time():
        expired = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(entry.grant_expires_at))
        raise GatewayError(
            403, f"The grant behind this key expired on {expired}; request access again.", "grant_expired"
        )


def _scopes(entry: keys.KeyEntry) -> list[tuple[str, str, dict[str, int]]]:
    scopes = [(f"k:{entry.prefix}", f"key {entry.prefix}", entry.key_limits)]
    if entry.department_id is not None:
        scopes.append((f"d:{entry.department_id}", f"department {entry.department}", entry.department_limits))
    return scopes


def _count(call: Call, usage: dict | None) -> None:
    if usage:
        call.prompt_tokens = int(usage.get("prompt_tokens") or 0)
        call.completion_tokens = int(usage.get("completion_tokens") or 0)


def _usage_of(data: bytes) -> dict | None:
    try:
        usage = json.loads(data).get("usage")
    except (ValueError, AttributeError):
        return None
    return usage if isinstance(usage, dict) else None


def _take_usage(call: Call, events: bytes, keep: bool) -> bytes:
    """Read token usage from the stream's usage chunk; drop that chunk unless the client asked for it."""
    out = []
    for event in events.split(b"\n\n"):
        if not event:
            continue
        if b'"usage"' in event and event.startswith(b"data: {"):
            try:
                chunk = json.loads(event[6:])
            except ValueError:
                chunk = {}
            if isinstance(chunk.get("usage"), dict):
                _count(call, chunk["usage"])
                if not keep and not chunk.get("choices"):
                    continue
        out.append(event + b"\n\n")
    return b"".join(out)


async def _read_body(receive) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise asyncio.CancelledError
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise GatewayError(413, f"The request body is over {MAX_BODY // (1024 * 1024)} MiB.", "body_too_large")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def _disconnected(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _respond(send, status: int, body: bytes, headers: list | None = None) -> None:
    await send({"type": "http.response.start", "status": status, "headers": _JSON + (headers or [])})
    await send({"type": "http.response.body", "body": body})
