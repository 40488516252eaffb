"""Nodes: joining with a token, heartbeats and liveness, rollups, admin actions, pages, API, /metrics.
The agent's side runs for real in tests/e2e/test_agent.py; here the console's side is driven directly."""

from __future__ import annotations

import json
import secrets
import time
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit.models import AuditEvent
from console import fanout, tls, topics
from console.actions import ServiceError
from fleet.nodes import services
from fleet.nodes.choices import NodeKind, NodeState
from fleet.nodes.models import GPU, HOST, JoinToken, Node, TelemetryRollup

GPU_FACTS = {
    "host": {"hostname": "gpu-a.local", "os": "Linux 6.1", "cpu_model": "EPYC", "cpu_cores": 64, "ram_bytes": 2**40},
    "gpu": {
        "driver_version": "550.54.15",
        "cuda_version": "12.4",
        "nvml_error": "",
        "gpus": [
            {
                "index": i,
                "uuid": f"GPU-{i}",
                "name": "NVIDIA H100 80GB HBM3",
                "memory_total": 80 * 2**30,
                "compute_capability": "9.0",
                "mig_mode": False,
                "pcie_gen": 5,
                "pcie_width": 16,
                "nvlink_peers": [1 - i],
            }
            for i in range(2)
        ],
    },
    "agent_version": "0.3.0",
    "interval_s": 1.0,
}
CPU_FACTS = {"host": GPU_FACTS["host"], "gpu": {"gpus": [], "nvml_error": "NVML Shared Library Not Found"}}


def _message(node_id: int, **over) -> dict:
    message = {
        "v": 1,
        "node": node_id,
        "name": "n",
        "ts": time.time(),
        "seq": 1,
        "host": {"cpu": 10.0, "ram_used": 2**30, "ram_total": 2**32, "load1": 0.5},
        "gpus": [
            {
                "i": 0,
                "util": 50,
                "mem_used": 2**30,
                "mem_total": 2**31,
                "temp": 60,
                "power": 300.0,
                "power_limit": 700.0,
                "sm_clock": 1980,
                "ecc": 0,
                "xid": 0,
                "throttle": [],
            }
        ],
        "errors": [],
        "instances": [],
    }
    return message | over


def _join(admin, name="gpu-a", facts=GPU_FACTS) -> tuple[Node, str]:
    _token, plaintext = services.create_join_token(admin, expires_in_hours=1)
    secret = secrets.token_urlsafe(32)
    return services.register_node(name=name, secret=secret, facts=facts, join_token=plaintext), secret


def _refusal(**kwargs) -> str:
    with pytest.raises(ServiceError) as refused:
        services.register_node(**kwargs)
    return refused.value.message


# --- joining ----------------------------------------------------------------------------------
def test_it_joins_a_gpu_node_with_its_gpus(people):
    node, _ = _join(people["admin"])
    assert node.kind == NodeKind.GPU and node.state == NodeState.ONLINE
    gpus = list(node.gpus.values_list("index", "name", "compute_capability", "nvlink_peers"))
    assert gpus == [(0, "NVIDIA H100 80GB HBM3", "9.0", [1]), (1, "NVIDIA H100 80GB HBM3", "9.0", [0])]
    assert node.driver_version == "550.54.15" and node.cuda_version == "12.4" and node.cpu_cores == 64
    event = AuditEvent.objects.get(action="node.join")
    assert event.actor_name == "agent:gpu-a" and event.after["gpus"] == 2
    assert JoinToken.objects.get().status == "used"


def test_it_joins_a_cpu_node_without_nvml(people):
    node, _ = _join(people["admin"], "cpu-a", CPU_FACTS)
    assert node.kind == NodeKind.CPU and node.gpus.count() == 0 and "NVML" in node.nvml_error


def test_it_stores_only_hashes_of_tokens_and_secrets(people):
    token, plaintext = services.create_join_token(people["admin"])
    secret = secrets.token_urlsafe(32)
    node = services.register_node(name="n1", secret=secret, facts=CPU_FACTS, join_token=plaintext)
    token_part, _dot, pin = plaintext.rpartition(".")  # the rest is the CA fingerprint
    assert pin == tls.material().ca_fingerprint
    assert token_part not in token.digest and token.digest == services.digest(token_part)
    assert node.agent_digest == services.digest(secret)
    trail = " ".join(str(e.after) + str(e.context) for e in AuditEvent.objects.all())
    assert plaintext not in trail and secret not in trail


@pytest.mark.parametrize(
    "case,expected",
    [
        ("unknown", "unknown join token"),
        ("replayed", "already used"),
        ("expired", "expired"),
        ("revoked", "revoked"),
        ("bad-name", "not valid"),
        ("short-secret", "malformed registration"),
    ],
)
def test_it_refuses_a_bad_join_and_audits_it(people, case, expected):
    admin = people["admin"]
    token, plaintext = services.create_join_token(admin, expires_in_hours=1)
    kwargs = {"name": "n1", "secret": secrets.token_urlsafe(32), "facts": CPU_FACTS, "join_token": plaintext}
    if case == "unknown":
        kwargs["join_token"] = "fjt_0123456789ab_nope"
    elif case == "replayed":
        services.register_node(**kwargs | {"name": "first"})
    elif case == "expired":
        JoinToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    elif case == "revoked":
        services.revoke_join_token(admin, token)
    elif case == "bad-name":
        kwargs["name"] = "Bad Name!"
    elif case == "short-secret":
        kwargs["secret"] = "x"
    assert expected in _refusal(**kwargs)
    assert not Node.objects.filter(name="n1").exists()
    refused = AuditEvent.objects.get(action="node.join.refused")
    assert expected in refused.context["reason"]
    if case != "replayed":
        assert JoinToken.objects.get(pk=token.pk).used_at is None  # a refusal does not spend the token


def _facts(**changes) -> dict:
    facts = {
        "host": dict(GPU_FACTS["host"]),
        "gpu": {**GPU_FACTS["gpu"], "gpus": [dict(g) for g in GPU_FACTS["gpu"]["gpus"]]},
    }
    for path, value in changes.items():
        target, *keys = path.split("__")
        box = facts[target]
        for key in keys[:-1]:
            box = box[int(key)] if key.isdigit() else box[key]
        box[keys[-1]] = value
    return facts


@pytest.mark.parametrize(
    "facts,expected",
    [
        ("a list", "facts must be an object"),
        ({"host": ["x"], "gpu": {}}, "must be objects"),
        (_facts(host__cpu_cores=-4), "expected a count"),
        (_facts(host__cpu_cores="many"), "expected a count"),
        (_facts(gpu__gpus__1__index=0), "reported twice"),
        (_facts(gpu__gpus__0__index=None), "expected a count"),
        (_facts(gpu__gpus__0__mig_mode="x"), "mig_mode"),
        (_facts(gpu__gpus__0__nvlink_peers="all"), "nvlink_peers"),
        (_facts(gpu__gpus=[1, 2]), "each GPU is an object"),
    ],
)
def test_it_refuses_malformed_facts_with_the_reason_and_writes_nothing(people, facts, expected):
    _t, plaintext = services.create_join_token(people["admin"])
    message = _refusal(name="n1", secret="s" * 40, facts=facts, join_token=plaintext)
    assert message.startswith("malformed facts") and expected in message
    assert not Node.objects.exists() and not GPU.objects.exists()
    assert JoinToken.objects.get().used_at is None


def test_a_rejoin_without_a_usable_node_id_is_refused(people):
    assert "node id" in _refusal(name="n1", secret="s" * 40, facts=CPU_FACTS, node_id="abc")
    assert "node id" in _refusal(name="n1", secret="s" * 40, facts=CPU_FACTS, node_id=True)


def test_it_refuses_a_second_node_with_an_online_nodes_name(people):
    _join(people["admin"], "gpu-a")
    _t, plaintext = services.create_join_token(people["admin"])
    assert "is online" in _refusal(name="gpu-a", secret="s" * 40, facts=GPU_FACTS, join_token=plaintext)


def test_a_restarted_agent_rejoins_with_its_secret_not_someone_elses(people):
    node, secret = _join(people["admin"])
    Node.objects.filter(pk=node.pk).update(state=NodeState.OFFLINE)
    again = services.register_node(name="gpu-a", secret=secret, facts=GPU_FACTS, node_id=node.pk)
    assert again.state == NodeState.ONLINE
    assert "wrong agent secret" in _refusal(name="gpu-a", secret="w" * 40, facts=GPU_FACTS, node_id=node.pk)
    assert "wrong agent secret" in _refusal(name="other", secret=secret, facts=GPU_FACTS, node_id=node.pk)


# --- heartbeats, liveness, rollups -------------------------------------------------------------
def test_heartbeats_keep_a_node_online_and_silence_takes_it_offline(people, settings):
    settings.FLEET_NODE_OFFLINE_AFTER_S = 15
    node, secret = _join(people["admin"])
    sample = _message(node.pk)
    services.heartbeat(node_id=node.pk, sample=sample)
    node.refresh_from_db()
    assert node.last_sample == sample

    assert services.mark_offline(now=timezone.now() + timedelta(seconds=10)) == []
    assert [n.pk for n in services.mark_offline(now=timezone.now() + timedelta(seconds=16))] == [node.pk]
    assert Node.objects.get(pk=node.pk).state == NodeState.OFFLINE
    assert services.mark_offline(now=timezone.now() + timedelta(seconds=30)) == []  # once only

    services.heartbeat(node_id=node.pk, sample=sample)
    assert Node.objects.get(pk=node.pk).state == NodeState.ONLINE
    events = AuditEvent.objects.filter(target_type="fleet.node", target_id=str(node.pk))
    actions = list(events.order_by("seq").values_list("action", flat=True))
    assert actions == ["node.join", "node.offline", "node.online"]


def test_a_heartbeat_for_an_unknown_node_is_ignored(people):
    node, _secret = _join(people["admin"])
    assert services.heartbeat(node_id=99999, sample=None) is None
    assert services.heartbeat(node_id="1; drop", sample=None) is None
    assert Node.objects.get(pk=node.pk).last_sample == {}


@pytest.mark.parametrize(
    "bad",
    [
        "not a dict",
        {"v": 2},
        {"v": 1, "node": "x"},
        _message(1, ts=float("nan")),
        _message(1, gpus="all"),
        _message(1, gpus=[{"util": 3}]),
        _message(1, host=None),
        _message(1, host={"ram_total": "lots"}),
        _message(1, seq=float("inf")),
        _message(1, errors=[{"i": 0, "error": float("nan")}]),
        _message(1, gpus=[{"i": True}]),
    ],
)
def test_a_malformed_heartbeat_sample_is_dropped_and_counted(people, bad):
    node, secret = _join(people["admin"])
    before = services.malformed_count()
    assert services.heartbeat(node_id=node.pk, sample=bad) is not None  # alive all the same
    assert services.malformed_count() == before + 1
    assert Node.objects.get(pk=node.pk).last_sample == {}


def test_rollups_are_stored_once_and_malformed_ones_counted(people, settings):
    node, secret = _join(people["admin"])
    minute = int(time.time() // 60 * 60)
    rows = [
        {"gpu": HOST, "samples": 60, "stats": {"cpu": [1, 2, 3]}},
        {"gpu": 0, "samples": 60, "stats": {"util": [10, 50, 90], "mem_used": [1, 2, 3]}},
    ]
    assert services.ingest_rollups(node_id=node.pk, minute=minute, rows=rows) == 2
    services.ingest_rollups(node_id=node.pk, minute=minute, rows=rows)  # a retried task
    assert TelemetryRollup.objects.filter(node=node).count() == 2
    before = services.malformed_count()
    assert services.ingest_rollups(node_id=node.pk, minute="soon", rows=rows) == 0
    bad_rows = [
        [{"gpu": 0}],
        [{"gpu": 0, "samples": 60, "stats": {"util": [1, float("nan"), 3]}}],
        [{"gpu": 0, "samples": 60, "stats": {"util": [1, 2]}}],
        [{"gpu": 0, "samples": -1, "stats": {"util": [1, 2, 3]}}],
        [{"gpu": 0, "samples": 1, "stats": {"cpu": [1, 2, 3]}}],  # a host metric on a GPU row
        [{"gpu": 0, "samples": 1, "stats": {}}, {"gpu": 0, "samples": 1, "stats": {}}],
        "rows",
    ]
    for rows_ in bad_rows:
        assert services.ingest_rollups(node_id=node.pk, minute=minute + 60, rows=rows_) == 0
    assert services.ingest_rollups(node_id=node.pk, minute=minute + 7, rows=rows) == 0
    assert services.malformed_count() == before + 1 + len(bad_rows) + 1
    assert TelemetryRollup.objects.filter(node=node).count() == 2

    settings.FLEET_ROLLUP_RETENTION_DAYS = 1
    assert services.prune_rollups(now=timezone.now() + timedelta(days=2)) == 2


# --- admin actions, pages, API ---------------------------------------------------------------
def test_cordon_uncordon_and_remove_are_audited(client_for, people):
    node, _ = _join(people["admin"])
    client = client_for("admin")
    assert client.post(f"/nodes/{node.pk}/cordon/").status_code == 302
    assert Node.objects.get(pk=node.pk).cordoned
    assert client.post(f"/api/nodes/{node.pk}/cordon/").status_code == 409  # already cordoned
    assert client.post(f"/api/nodes/{node.pk}/uncordon/").json()["cordoned"] is False
    assert client.get(f"/nodes/{node.pk}/remove/").status_code == 200  # asks first
    response = client.post(f"/nodes/{node.pk}/remove/", {"confirm_name": "wrong"})
    assert response.status_code == 400 and Node.objects.filter(pk=node.pk).exists()
    assert client.post(f"/nodes/{node.pk}/remove/", {"confirm_name": "gpu-a"}).status_code == 302
    assert not Node.objects.filter(pk=node.pk).exists() and not GPU.objects.exists()
    actions = list(
        AuditEvent.objects.filter(action__startswith="node.").order_by("seq").values_list("action", flat=True)
    )
    assert actions == ["node.join_token.create", "node.join", "node.cordon", "node.uncordon", "node.remove"]


def test_only_admins_change_nodes(client_for, people):
    node, _ = _join(people["admin"])
    for persona in ("dept_user", "auditor", "outsider"):
        client = client_for(persona)
        assert client.post(f"/nodes/{node.pk}/cordon/").status_code == 403
        assert client.post(f"/api/nodes/{node.pk}/cordon/").status_code == 403
        assert client.delete(f"/api/nodes/{node.pk}/").status_code == 403
        assert client.post("/api/join-tokens/", {"expires_in_hours": 1}).status_code == 403
    assert not Node.objects.get(pk=node.pk).cordoned


def test_the_api_creates_a_join_token_once_and_refuses_bad_expiry(client_for, people):
    client = client_for("admin")
    created = client.post(
        "/api/join-tokens/", {"label": "rack 4", "expires_in_hours": 2}, content_type="application/json"
    )
    assert created.status_code == 201 and created.json()["token"].startswith("fjt_")
    listed = client.get("/api/join-tokens/").json()["results"]
    assert "token" not in listed[0] and listed[0]["status"] == "usable"
    bad = client.post("/api/join-tokens/", {"expires_in_hours": 0}, content_type="application/json")
    assert bad.status_code == 400 and "expires_in_hours" in bad.json()["errors"]
    assert JoinToken.objects.count() == 1


def test_the_join_page_shows_the_token_once_and_the_command(client_for):
    client = client_for("admin")
    response = client.post("/nodes/join/", {"label": "rack 4", "expires_in_hours": 24})
    assert response.status_code == 201
    plaintext = response.context["created"]["plaintext"]
    assert plaintext in response.content.decode() and "python -m fleet.agent --name" in response.content.decode()
    assert plaintext not in client.get("/nodes/join/").content.decode()
    bad = client.post("/nodes/join/", {"expires_in_hours": 99999})
    assert bad.status_code == 400 and JoinToken.objects.count() == 1


def test_the_api_lists_filters_and_details_nodes(client_for, people):
    _join(people["admin"], "gpu-a")
    _join(people["admin"], "cpu-b", CPU_FACTS)
    client = client_for("admin")
    assert [n["name"] for n in client.get("/api/nodes/?kind=gpu").json()["results"]] == ["gpu-a"]
    assert [n["name"] for n in client.get("/api/nodes/?q=cpu").json()["results"]] == ["cpu-b"]
    bad = client.get("/api/nodes/?state=sleeping")
    assert bad.status_code == 400 and "state" in bad.json()["errors"]
    detail = client.get(f"/api/nodes/{Node.objects.get(name='gpu-a').pk}/").json()
    assert detail["gpu_count"] == 2 and detail["gpus"][0]["compute_capability"] == "9.0"
    assert client.get(f"/api/nodes/{Node.objects.get(name='gpu-a').pk}/rollups/?range=year").status_code == 400


def test_the_nodes_page_query_count_is_constant(client_for, people):
    client = client_for("admin")
    _join(people["admin"], "n0")

    def count() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert client.get("/nodes/").status_code == 200
        return len(ctx.captured_queries)

    few = count()
    for i in range(1, 25):
        _join(people["admin"], f"n{i}")
    assert count() == few


def test_the_node_pages_render_live_hooks_and_history(client_for, people):
    node, secret = _join(people["admin"])
    services.heartbeat(node_id=node.pk, sample=_message(node.pk))
    minute = int(time.time() // 60 * 60) - 60
    services.ingest_rollups(
        node_id=node.pk, minute=minute, rows=[{"gpu": 0, "samples": 60, "stats": {"util": [10, 50, 90]}}]
    )
    client = client_for("admin")
    listing = client.get("/nodes/").content.decode()
    assert f'data-node="{node.pk}"' in listing and 'aria-valuenow="50' in listing
    page = client.get(f"/nodes/{node.pk}/")
    assert page.status_code == 200 and page.context["history"]["series"]["GPU 0 util %"] == [50.0]
    assert f'data-live-node="{node.pk}"' in page.content.decode()
    assert client.get("/nodes/?state=bogus").status_code == 400
    assert client.get("/nodes/999999/").status_code == 404


# --- /metrics ----------------------------------------------------------------------------------
def test_metrics_needs_the_token_or_an_admin(client_for, people, settings):
    node, secret = _join(people["admin"])
    services.heartbeat(node_id=node.pk, sample=_message(node.pk))
    settings.FLEET_METRICS_TOKEN = "scrape-secret"
    anonymous = client_for(None)
    assert anonymous.get("/metrics").status_code == 401
    assert anonymous.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client_for("auditor").get("/metrics").status_code == 401
    body = anonymous.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret").content.decode()
    assert 'fleet_nodes{state="online"} 1' in body
    assert 'fleet_gpu_utilization_percent{node="gpu-a",gpu="0"} 50' in body
    assert 'fleet_gpu_temperature_celsius{node="gpu-a",gpu="0"} 60' in body
    assert client_for("admin").get("/metrics").status_code == 200
    settings.FLEET_METRICS_PUBLIC = True
    assert anonymous.get("/metrics").status_code == 200


# --- the live hub ------------------------------------------------------------------------------
class _Sink:
    def __init__(self) -> None:
        self.frames: list[str] = []

    def push(self, frame: str) -> None:
        self.frames.append(frame)

    def lost(self) -> None:
        self.frames.append("lost")


@pytest.mark.parametrize(
    "bad",
    [
        "text",
        {"type": "other"},
        {"type": "live.message", "topic": 5},
        {"type": "live.message", "topic": "telemetry.node.1", "payload": {"v": 1, "node": "one"}},
        {"type": "live.message", "topic": "telemetry.node.1", "payload": None},
    ],
)
def test_the_hub_drops_and_counts_malformed_telemetry_and_keeps_going(db, bad):
    # deliver() is the hub's whole handling of a message; Redis is not needed to exercise it.
    async def go():
        hub, sink = fanout.Hub(), _Sink()
        hub.subscribers["telemetry.node.1"] = {sink}
        hub.deliver(bad)
        assert hub.dropped == 1 and sink.frames == []
        hub.deliver({"type": "live.message", "topic": "telemetry.node.1", "payload": _message(1)})
        assert len(sink.frames) == 1 and '"node": 1' in sink.frames[0]

    async_to_sync(go)()


def test_a_nodes_topic_rides_on_the_fleet_topic_and_gets_only_its_own_samples(db):
    async def go():
        hub, node_one, fleet_wide = fanout.Hub(), _Sink(), _Sink()
        hub.subscribers["telemetry.node.1"] = {node_one}
        batch = [_message(1), _message(2), _message(1)]
        hub.deliver({"type": "live.message", "topic": "telemetry.fleet", "payloads": batch})
        assert [json.loads(f)["data"]["node"] for f in node_one.frames] == [1, 1]
        assert {json.loads(f)["topic"] for f in node_one.frames} == {"telemetry.node.1"}
        hub.subscribers["telemetry.fleet"] = {fleet_wide}  # both at once: one Redis group serves them
        hub.deliver({"type": "live.message", "topic": "telemetry.fleet", "payload": _message(2)})
        assert len(node_one.frames) == 2 and "telemetry.fleet" in hub.pending

    async_to_sync(go)()
    assert topics.group_of("telemetry.node.7") == "telemetry.fleet" and topics.group_of("audit") == "audit"


def test_when_redis_fails_under_the_hub_its_sockets_are_told_to_reconnect(db):
    async def go():
        hub, sink = fanout.Hub(), _Sink()
        hub.subscribers["telemetry.fleet"] = {sink}
        failed = type(
            "Failed", (), {"cancelled": lambda self: False, "exception": lambda self: ConnectionError("gone")}
        )()
        hub._reader_ended(failed)
        assert sink.frames == ["lost"] and hub.subscribers == {}  # browsers reconnect, joining again

    async_to_sync(go)()


def test_a_heartbeat_that_reached_the_console_keeps_a_node_online_while_the_worker_is_behind(people, settings):
    """The agent endpoint notes each heartbeat's arrival in Redis; a sweep that finds the database's
    last heartbeat old (the worker's queue backed up) but the arrival recent leaves the node Online."""
    from fleet.nodes import commands

    settings.FLEET_NODE_OFFLINE_AFTER_S = 15
    node, _secret = _join(people["admin"])
    services.heartbeat(node_id=node.pk, sample=_message(node.pk))
    later = timezone.now() + timedelta(seconds=20)
    commands.client().set(services.heard_key(node.pk), (later - timedelta(seconds=2)).timestamp(), ex=60)
    try:
        assert services.mark_offline(now=later) == []
        assert Node.objects.get(pk=node.pk).state == NodeState.ONLINE
        # Arrivals stopped too: offline.
        assert [n.pk for n in services.mark_offline(now=later + timedelta(seconds=16))] == [node.pk]
    finally:
        commands.client().delete(services.heard_key(node.pk))
