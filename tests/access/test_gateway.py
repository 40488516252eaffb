"""The gateway's ASGI app in process (real Postgres): with Redis unreachable it refuses with an
OpenAI-shaped 503 rather than serving calls it cannot meter."""

from __future__ import annotations

import json

import pytest

from access.gateway import routes
from access.grants import services as grants
from bench import mock_openai
from console.embedded import free_port
from fleet.catalog.models import ModelArtifact
from tests.helpers import call_gateway


@pytest.mark.django_db(transaction=True)
def test_unreachable_redis_is_a_503_not_a_free_pass(people, settings):
    deployment, _ = mock_openai.register("chat-x", free_port())
    grant = grants.create_grant(people["admin"], user=people["dept_user"], models=[deployment.model], duration_days=1)
    _key, plaintext = grants.create_key(people["dept_user"], grant=grant, name="k")
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    body = json.dumps({"model": "chat-x", "messages": [{"role": "user", "content": "hi"}]}).encode()
    sent = call_gateway("POST", "/v1/chat/completions", plaintext, body)
    assert sent[0]["status"] == 503
    error = json.loads(sent[1]["body"])["error"]
    assert error["code"] == "quota_unavailable" and error["type"] == "service_unavailable"
    assert ModelArtifact.objects.filter(name="mock-chat-x").exists()


def _route(pk: int, name: str, model: str, ready: int) -> routes.Route:
    upstreams = [routes.Upstream(pk * 10 + i, f"http://127.0.0.1:{9000 + i}") for i in range(ready)]
    return routes.Route(pk, name, pk, 0, model, upstreams)


def test_a_name_is_a_deployment_first_then_a_model_served_where_instances_are_ready():
    table = {r.name: r for r in [_route(1, "chat-old", "llama", 0), _route(2, "chat-new", "llama", 2)]}
    table["qwen"] = _route(3, "qwen", "llama-b", 1)  # a deployment named like another model
    assert routes.resolve(table, "chat-old").name == "chat-old"  # admins' scripts: the deployment asked for
    assert routes.resolve(table, "llama").name == "chat-new"  # the grant's name: where instances are Ready
    assert routes.resolve(table, "qwen").name == "qwen"  # a deployment's own name wins
    assert routes.resolve(table, "nope") is None
    names = [name for name, _ in routes.callable_names(table, frozenset({1, 2}))]
    assert names == ["llama", "chat-old", "chat-new"]  # the granted model, then what serves it; nothing else
