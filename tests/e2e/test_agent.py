"""A real agent process joins over the TLS agent endpoint, streams telemetry through it to a
websocket subscriber, goes Offline when stopped and Online when it returns."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator

from access.people.choices import Role
from audit.models import AuditEvent
from console import tls
from console.consumers import LiveConsumer
from fleet.agent.runtime import Agent
from fleet.nodes import commands, services
from fleet.nodes.choices import NodeKind, NodeState
from fleet.nodes.models import Node, TelemetryRollup
from fleet.protocol import runtimes
from tests.conftest import make_user
from tests.e2e.conftest import agent_output_when_exited, start_agent, stop_agent
from tests.nvml_test_double import NvmlTestDouble

pytestmark = pytest.mark.e2e


def _wait(condition: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _first_telemetry(admin, node_id: int) -> tuple[dict, float]:
    """Subscribe as the admin and return the first telemetry message and its age on arrival."""

    async def go():
        comm = WebsocketCommunicator(LiveConsumer.as_asgi(), "/ws/")
        comm.scope["user"] = admin
        assert (await comm.connect())[0]
        await comm.send_json_to({"action": "subscribe", "topic": f"telemetry.node.{node_id}"})
        assert (await comm.receive_json_from(timeout=5))["type"] == "subscribed"
        subscribed = time.time()
        frame = await comm.receive_json_from(timeout=2)  # the agent ticks every 0.5 s
        age = time.time() - frame["data"]["ts"]
        await comm.disconnect()
        return frame, age, time.time() - subscribed

    frame, age, waited = async_to_sync(go)()
    return frame, age


def test_an_agent_joins_streams_goes_offline_and_comes_back(
    transactional_db, celery_worker_process, agent_env, tmp_path
):
    admin = make_user("admin", Role.ADMIN)
    _token, plaintext = services.create_join_token(admin, label="e2e", expires_in_hours=1)
    agent = start_agent(agent_env, "e2e-node", tmp_path / "state", plaintext)
    try:
        node = _wait(lambda: Node.objects.filter(name="e2e-node").first(), 60, "the node to register")
        assert node.kind == NodeKind.CPU and node.state == NodeState.ONLINE  # no NVML here: a CPU node
        assert node.cpu_cores > 0 and node.ram_bytes > 0 and node.nvml_error
        assert set(node.runtimes) == set(runtimes.installed())  # reported at join

        frame, age = _first_telemetry(admin, node.pk)
        assert frame["type"] == "event" and frame["topic"] == f"telemetry.node.{node.pk}"
        assert frame["data"]["node"] == node.pk and frame["data"]["gpus"] == []
        assert {"cpu", "ram_used", "ram_total", "load1"} <= frame["data"]["host"].keys()
        assert age < 2.0, f"telemetry took {age:.3f}s to reach the subscriber"

        _wait(lambda: Node.objects.get(pk=node.pk).last_sample.get("host"), 10, "a heartbeat with a sample")

        # Commands reach it over its link, and it answers.
        pong = commands.ask(node, "agent.ping", timeout=30)
        assert pong["name"] == "e2e-node" and pong["node_id"] == node.pk
    finally:
        out = stop_agent(agent)
    assert "joined the fleet as node e2e-node" in out

    stopped = time.monotonic()
    _wait(lambda: Node.objects.get(pk=node.pk).state == NodeState.OFFLINE, 10, "the node to go Offline")
    assert time.monotonic() - stopped < 3 + 1 + 2  # window 3 s, sweep every 1 s, slack
    assert AuditEvent.objects.filter(action="node.offline", target_id=str(node.pk)).count() == 1

    # It comes back with the identity it saved (no token needed), and goes Online again.
    again = start_agent(agent_env, "e2e-node", tmp_path / "state")
    try:
        _wait(lambda: Node.objects.get(pk=node.pk).state == NodeState.ONLINE, 60, "the node to return")
        assert AuditEvent.objects.filter(action="node.rejoin", target_id=str(node.pk)).exists()
    finally:
        stop_agent(again)

    # The join token was used once; a second node presenting it is refused, and that is audited.
    replay = start_agent(agent_env, "e2e-other", tmp_path / "other", plaintext)
    out = agent_output_when_exited(replay)
    assert replay.returncode == 2 and "already used" in out
    refused = AuditEvent.objects.filter(action="node.join.refused").latest("seq")
    assert refused.target_repr == "e2e-other" and "already used" in refused.context["reason"]
    assert not Node.objects.filter(name="e2e-other").exists()


def test_an_unknown_token_is_refused_with_a_clear_message(transactional_db, agent_env, tmp_path):
    pin = tls.material().ca_fingerprint
    proc = start_agent(agent_env, "stranger", tmp_path, f"fjt_000000000000_not-a-real-token.{pin}")
    out = agent_output_when_exited(proc)
    assert proc.returncode == 2 and "unknown join token" in out
    assert AuditEvent.objects.filter(action="node.join.refused", target_repr="stranger").count() == 1


def test_an_agent_with_two_gpus_sends_minute_rollups_that_the_console_stores(
    transactional_db, celery_worker_process, agent_endpoint, tmp_path
):
    """The agent's GPU path in-process (NVML test double, two GPUs) against the real worker."""

    admin = make_user("admin", Role.ADMIN)
    _token, plaintext = services.create_join_token(admin, expires_in_hours=1)
    now = [float(int(time.time()) // 60 * 60 - 600)]  # a whole minute, ten minutes ago
    nvml = NvmlTestDouble(gpus=2)
    agent = Agent(name="gpu-sim", console_url=agent_endpoint, state_dir=tmp_path, nvml=nvml, clock=lambda: now[0])
    agent.join(plaintext)
    agent.connect()
    assert agent.link.connected.wait(10)
    node = Node.objects.get(name="gpu-sim")
    assert node.kind == NodeKind.GPU and node.gpus.count() == 2

    for util in (20, 40, 90):  # one a second
        now[0] += 1
        nvml.gpus[0].util = util
        agent.tick()
    now[0] += 60  # the next minute: the finished one is sent
    agent.tick()

    rows = _wait(lambda: list(TelemetryRollup.objects.filter(node=node).order_by("gpu_index")), 30, "rollups")
    assert [r.gpu_index for r in rows] == [-1, 0, 1] and {r.samples for r in rows} == {3}
    assert rows[1].stats["util"] == [20.0, 50.0, 90.0]
    assert int(rows[1].minute.timestamp()) == int(now[0] - 60) // 60 * 60
    agent.stop.set()
    agent.link.close()
