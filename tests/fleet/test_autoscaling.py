"""Autoscaling: the decision from vLLM's gauges as the agents report them, its windows and bounds,
the wake from zero, and the settings on the page and in the API (one validator for both)."""

from __future__ import annotations

import time

import pytest
from django.utils import timezone

from access.gateway import routes
from audit.models import AuditEvent
from fleet.catalog import demo
from fleet.catalog import services as registry
from fleet.deployments import autoscaler
from fleet.deployments import services as deploy
from fleet.deployments.autoscaler import Decision, Reading, decide
from fleet.deployments.choices import InstanceState, ScaleMetric
from fleet.deployments.models import Deployment, Instance
from fleet.nodes.choices import NodeState
from fleet.nodes.models import Node


def _policy(**kw) -> Deployment:
    values = {
        "replicas": 1,
        "autoscale": True,
        "min_replicas": 1,
        "max_replicas": 4,
        "scale_target": 4.0,
        "scale_up_after_s": 30,
        "scale_down_after_s": 300,
    } | kw
    return Deployment(name="d", **values)


def _reading(running: float = 0, waiting: float = 0, tokens: float = 0, ready: int = 1) -> Reading:
    return Reading(ready=ready, running=running, waiting=waiting, tokens=tokens)


def test_it_scales_up_only_once_the_load_has_stayed_over_target_for_the_window():
    d, state = _policy(), {}
    busy = _reading(running=4, waiting=5)  # 9 in flight at 4 per instance: 3 replicas
    assert decide(d, busy, state, 1000) is None and state["up_since"] == 1000
    assert decide(d, busy, state, 1029) is None
    assert decide(d, _reading(running=2), state, 1030) is None  # it fell back: the window starts again
    assert "up_since" not in state
    decide(d, busy, state, 1040)
    up = decide(d, busy, state, 1070)
    assert up is not None and up.replicas == 3 and "over 4 per instance for 30 s" in up.reason
    assert decide(_policy(max_replicas=2), busy, {"up_since": 0}, 100).replicas == 2  # never above max
    waiting_only = _policy(scale_metric=ScaleMetric.WAITING, scale_target=1)
    assert decide(waiting_only, busy, {"up_since": 0}, 100).replicas == 4  # 5 waiting, capped at max 4


def test_it_scales_down_after_the_cooldown_and_never_sooner_than_that_after_a_change():
    d, state = _policy(replicas=3), {"changed_at": 900.0}
    light = _reading(running=2, tokens=10)
    assert decide(d, light, state, 1000) is None and state["down_since"] == 1000
    assert decide(d, light, state, 1299) is None
    down = decide(d, light, state, 1300)
    assert down == Decision(1, "load 2 under 4 per instance for 300 s")
    recent = {"changed_at": 1200.0, "down_since": 1000.0}
    assert decide(d, light, recent, 1300) is None  # 100 s after the last change: not yet
    assert decide(_policy(replicas=3, min_replicas=2), light, {"down_since": 0}, 1000).replicas == 2  # min


def test_with_min_zero_it_stops_only_after_no_call_for_the_cooldown_and_only_a_call_wakes_it():
    d, state = _policy(min_replicas=0), {}
    assert decide(d, _reading(tokens=50), state, 1000) is None  # first look: counted as active
    assert decide(d, _reading(tokens=60), state, 1200) is None  # a call was served meanwhile
    assert state["active_at"] == 1200
    assert decide(d, _reading(tokens=60), state, 1499) is None
    zero = decide(d, _reading(tokens=60), state, 1500)
    assert zero is not None and zero.replicas == 0 and zero.reason == "no call for 300 s: scaled to zero"
    asleep = _policy(min_replicas=0, replicas=0)
    assert decide(asleep, _reading(ready=0), {"active_at": 0}, 5000) is None  # no load to read at zero


def test_it_adds_no_more_while_the_last_steps_instances_still_start():
    d, state = _policy(replicas=3, scale_up_after_s=1), {"up_since": 0}
    busy = _reading(running=30, ready=1)  # two of the three still start: their share is not yet theirs
    assert decide(d, busy, state, 100) is None and state["up_since"] == 0
    assert decide(d, _reading(running=30, ready=3), state, 101).replicas == 4


def test_it_stops_nothing_while_an_instance_still_starts():
    d, state = _policy(replicas=2, scale_down_after_s=15), {"changed_at": 0.0}
    light = Reading(ready=1, running=1, waiting=0, tokens=10, starting=1)  # the new one is on its way
    assert decide(d, light, state, 100) is None and "down_since" not in state
    assert decide(d, light, state, 200) is None
    served = Reading(ready=2, running=1, waiting=0, tokens=20)
    assert decide(d, served, state, 300) is None and state["down_since"] == 300  # the cooldown starts now
    assert decide(d, served, state, 315).replicas == 1


def test_out_of_bounds_replicas_move_to_the_bounds_at_once():
    assert decide(_policy(replicas=0, min_replicas=2), _reading(), {}, 0) == Decision(2, "below its minimum of 2")
    assert decide(_policy(replicas=9), _reading(), {}, 0) == Decision(4, "above its maximum of 4")


@pytest.fixture
def deployed(people, tmp_path, settings):
    settings.FLEET_MODEL_ROOTS = [str(tmp_path)]
    demo.build(tmp_path / "demo")
    model = registry.register(people["admin"], path=str(tmp_path / "demo"), name="demo", checksum_now=True)
    node = Node.objects.create(name="cpu-a", kind="cpu", agent_digest="x", state=NodeState.ONLINE)
    d = deploy.create(people["admin"], name="demo-chat", model=model, replicas=0, options={"max_model_len": 1024})
    instances = [
        Instance.objects.create(deployment=d, replica=r, node=node, port=20000 + r, state=InstanceState.READY)
        for r in range(2)
    ]
    return {"admin": people["admin"], "deployment": d, "node": node, "instances": instances}


def _report(node: Node, figures: dict[int, dict]) -> None:
    """The node's latest sample as its heartbeat stores it: each Ready instance's vLLM gauges."""
    sample = {"instances": [{"instance": pk, **f} for pk, f in figures.items()], "ts": timezone.now().timestamp()}
    Node.objects.filter(pk=node.pk).update(last_sample=sample)


def test_a_pass_reads_the_reported_gauges_and_audits_each_decision_once(deployed, django_capture_on_commit_callbacks):
    d, node, (a, b) = deployed["deployment"], deployed["node"], deployed["instances"]
    deploy.set_autoscale(
        deployed["admin"], d, {"autoscale": True, "min_replicas": 1, "max_replicas": 4, "scale_up_after_s": 10}
    )
    Deployment.objects.filter(pk=d.pk).update(replicas=2)
    _report(node, {a.pk: {"running": 4, "waiting": 3, "prompt_tokens": 10}, b.pk: {"running": 4, "waiting": 2}})
    with django_capture_on_commit_callbacks() as reconciles:
        assert autoscaler.autoscale_pass(now=1000) == []
        assert autoscaler.autoscale_pass(now=1005) == []
        assert autoscaler.autoscale_pass(now=1010) == [("demo-chat", 2, 4)]  # 13 in flight / 4: 4 replicas
    assert Deployment.objects.get(pk=d.pk).replicas == 4 and reconciles  # and the reconciler is asked
    (event,) = AuditEvent.objects.filter(action="deployment.autoscale")
    assert event.actor_name == "autoscaler" and event.before == {"replicas": 2} and event.after == {"replicas": 4}
    assert (event.context["reason"], event.context["load"]) == ("load 13 over 4 per instance for 10 s", 13.0)
    # an admin's scale between the reading and the write wins: the decision is dropped, not applied
    state = dict(Deployment.objects.get(pk=d.pk).scale_state)
    assert not autoscaler.apply(d.pk, Decision(1, "test"), state, 2000, load=0, expect=2)
    # a deployment without autoscaling is never touched
    deploy.set_autoscale(deployed["admin"], d, {"autoscale": False})
    _report(node, {a.pk: {"running": 40}})
    assert autoscaler.autoscale_pass(now=3000) == [] and autoscaler.autoscale_pass(now=4000) == []
    assert AuditEvent.objects.filter(action="deployment.autoscale").count() == 1


def test_a_wake_starts_one_replica_of_a_deployment_asleep_once(deployed, django_capture_on_commit_callbacks):
    d = deployed["deployment"]
    assert not autoscaler.wake(d.pk)  # not autoscaled: a call for it is not a reason to start it
    deploy.set_autoscale(deployed["admin"], d, {"autoscale": True, "min_replicas": 0, "max_replicas": 2})
    assert Deployment.objects.get(pk=d.pk).wakes_on_call
    assert autoscaler.wake(d.pk) and not autoscaler.wake(d.pk)  # the second held call finds it waking
    d.refresh_from_db()
    assert d.replicas == 1 and d.scale_state["active_at"] > 0
    (event,) = AuditEvent.objects.filter(action="deployment.autoscale")
    assert event.context["reason"] == "a call arrived while it was scaled to zero"


def test_the_settings_are_checked_by_one_validator_on_the_page_and_in_the_api(client_for, deployed):
    client, d = client_for("admin"), deployed["deployment"]
    url = f"/api/deployments/{d.pk}/autoscale/"
    good = {"autoscale": True, "min_replicas": 0, "max_replicas": 3, "scale_metric": "waiting", "scale_target": 2}
    for body, code, field, text in [
        (good | {"min_replicas": 4}, 409, "min_replicas", "0–3"),
        (good | {"max_replicas": 65}, 400, "max_replicas", "less than or equal to 64"),
        (good | {"max_replicas": 2**70}, 400, "max_replicas", "less than or equal to 64"),
        (good | {"scale_metric": "gpu"}, 400, "scale_metric", "not a valid choice"),
        (good | {"scale_target": 0}, 400, "scale_target", "greater than or equal to 0.1"),
        (good | {"scale_target": True}, 400, "scale_target", "A valid number is required"),
        (good | {"scale_target": "5"}, 400, "scale_target", "A valid number is required"),
        ({"min_replicas": 1}, 400, "autoscale", "required"),
    ]:
        refused = client.post(url, body, content_type="application/json")
        assert refused.status_code == code and text in str(refused.json()["errors"][field]), refused.json()
    form = {"autoscale": "on", "min_replicas": "0", "max_replicas": "3", "scale_metric": "in-flight"}
    for bad, text in [({"max_replicas": "99"}, "Max replicas"), ({"min_replicas": "x"}, "A valid integer")]:
        shown = client.post(f"/deployments/{d.pk}/autoscale/", form | bad, follow=True).content.decode()
        assert text in shown, bad
    assert not AuditEvent.objects.filter(action="deployment.autoscale_settings").exists()
    done = client.post(url, good, content_type="application/json")
    assert done.status_code == 200 and done.json()["autoscaling"] == {
        "autoscale": True,
        "min_replicas": 0,
        "max_replicas": 3,
        "scale_metric": "waiting",
        "scale_target": 2.0,
        "scale_up_after_s": 30,
        "scale_down_after_s": 300,
    }
    client.post(f"/deployments/{d.pk}/autoscale/", form | {"scale_target": "6", "scale_down_after_s": "60"})
    d.refresh_from_db()
    assert (d.scale_metric, d.scale_target, d.scale_down_after_s) == ("in-flight", 6.0, 60)
    assert AuditEvent.objects.filter(action="deployment.autoscale_settings").count() == 2
    page = client.get(f"/deployments/{d.pk}/").content.decode()
    assert "autoscaled 0–3 at 6 in flight per instance" in page and "asleep: the next call wakes it" in page
    assert 'data-testid="replica-chart"' in page and '"label": "replicas"' in page


def test_new_settings_start_the_clocks_again(deployed):
    """Idle time counted while autoscaling was off is not a reason to stop it on the first pass."""
    d = deployed["deployment"]
    stale = {"active_at": 0.0, "changed_at": 0.0, "tokens": 0.0}
    Deployment.objects.filter(pk=d.pk).update(replicas=2, scale_state=stale)
    deploy.set_autoscale(
        deployed["admin"], d, {"autoscale": True, "min_replicas": 0, "max_replicas": 2, "scale_down_after_s": 60}
    )
    now = time.time()
    assert autoscaler.autoscale_pass(now=now + 1) == []  # the old clocks would have said: idle for hours
    assert autoscaler.autoscale_pass(now=now + 61) == [("demo-chat", 2, 0)]  # a full cooldown after the change


def test_the_gateway_holds_calls_only_while_a_deployment_is_at_zero_or_on_its_way_up(transactional_db, deployed):
    d, (a, b) = deployed["deployment"], deployed["instances"]
    deploy.set_autoscale(deployed["admin"], d, {"autoscale": True, "min_replicas": 0, "max_replicas": 2})
    Instance.objects.filter(pk__in=[a.pk, b.pk]).update(state=InstanceState.STOPPED)

    def asleep(replicas: int) -> bool:
        Deployment.objects.filter(pk=d.pk).update(replicas=replicas)
        route = routes.load()["demo-chat"]
        assert route.wakes and not route.upstreams
        return route.asleep

    assert asleep(0)  # at zero
    assert asleep(1)  # woken, its instance not placed yet
    Instance.objects.filter(pk=a.pk).update(state=InstanceState.STARTING)
    assert asleep(1)
    Instance.objects.filter(pk=a.pk).update(state=InstanceState.FAILED)
    assert not asleep(1)  # it will not come up: a call is answered at once, not after the wake timeout
    assert routes.resolve(routes.load(), "demo") is not None
