"""ASGI entry point: /v1/ goes to the gateway, /agent/ to the agent endpoint (nodes, by their
credential), other HTTP to Django, /ws/ to Channels (session-authenticated). ``agents`` serves
/agent/ alone: the TLS listener nodes reach (``make run`` starts it on FLEET_AGENT_PORT).

The gateway is a plain ASGI app, not a Django view: the inference hot path skips Django's
middleware and ORM (see access.gateway)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402  (needs Django set up first)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from access.gateway.app import Gateway  # noqa: E402
from console.routing import websocket_urlpatterns  # noqa: E402
from fleet.nodes import endpoint  # noqa: E402

gateway = Gateway()
console = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)


node_endpoint = endpoint.application()


def _for_agents(scope) -> bool:
    return scope["type"] in ("http", "websocket") and scope["path"].startswith("/agent/")


async def application(scope, receive, send):
    if scope["type"] == "http" and (scope["path"] == "/v1" or scope["path"].startswith("/v1/")):
        return await gateway(scope, receive, send)
    if _for_agents(scope):
        return await node_endpoint(scope, receive, send)
    return await console(scope, receive, send)


async def agents(scope, receive, send):
    if _for_agents(scope):
        return await node_endpoint(scope, receive, send)
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 404, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"this port serves nodes only (/agent/)"})
    elif scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 4404})
