"""ASGI entry point: /v1/ goes to the gateway, other HTTP to Django, /ws/ to Channels (session-authenticated).

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

gateway = Gateway()
console = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)


async def application(scope, receive, send):
    if scope["type"] == "http" and (scope["path"] == "/v1" or scope["path"].startswith("/v1/")):
        return await gateway(scope, receive, send)
    return await console(scope, receive, send)
