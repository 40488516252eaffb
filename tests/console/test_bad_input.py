"""Every class of bad input, for every field of its kind: an oversized integer, a NUL character, a
body of the wrong type, and a delete that others depend on. Through the API the fields are read off
the OpenAPI document itself, so a new field is covered the day it is added; through the UI, every
numeric field of every form. Each answer is a 4xx naming the field, and nothing is written."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django import forms
from django.apps import apps
from django.contrib.messages import get_messages
from django.core.validators import MaxValueValidator, MinValueValidator
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator

from access.grants import forms as grant_forms
from access.grants.models import AccessRequest, Grant
from access.people import forms as people_forms
from fleet.catalog import forms as catalog_forms
from fleet.catalog.models import ModelArtifact
from fleet.deployments import forms as deployment_forms
from fleet.deployments.models import Deployment
from fleet.jobs import forms as job_forms
from fleet.nodes import forms as node_forms
from fleet.nodes.models import Node

HUGE = 10**20  # wider than any column (a bigint holds 9.2e18)
NUL = "a\x00b"
WRITE_METHODS = ("post", "put", "patch")


@pytest.fixture
def world(people, department) -> dict[str, Any]:
    """One object of each kind a path names, so a detail operation reaches its validation."""
    model = ModelArtifact.objects.create(name="llama-a", path="/models/llama-a")
    deployment = Deployment.objects.create(name="chat", model=model, replicas=0)
    request = AccessRequest.objects.create(
        requester=people["dept_user"], department=department, justification="For the reading room.", duration_days=30
    )
    request.models.add(model)
    grant = Grant.objects.create(user=people["dept_user"], expires_at=timezone.now() + timedelta(days=30))
    grant.models.add(model)
    node = Node.objects.create(name="node-a")
    return {
        "/api/access-requests/": request.pk,
        "/api/departments/{slug}": department.slug,
        "/api/departments/": department.pk,
        "/api/deployments/": deployment.pk,
        "/api/grants/": grant.pk,
        "/api/models/": model.pk,
        "/api/nodes/": node.pk,
        "/api/users/": people["dept_user"].pk,
    }


def _snapshot() -> dict[str, int]:
    return {m._meta.label: m._default_manager.count() for m in apps.get_models() if m._meta.app_label != "sessions"}


def _document() -> dict[str, Any]:
    return SchemaGenerator().get_schema(request=None, public=True)


def _resolve(document: dict, schema: dict) -> dict:
    if "$ref" in schema:
        return document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _types(schema: dict) -> set[str]:
    return {schema.get("type", "")} | {s.get("type", "") for s in schema.get("anyOf", []) + schema.get("oneOf", [])}


def _fill(path: str, world: dict[str, Any]) -> str | None:
    """The path with its placeholder filled from ``world``; None when no object of its kind exists."""
    if "{" not in path:
        return path
    for prefix, value in world.items():
        if path.startswith(prefix.split("{")[0]) and ("{slug}" in path) == ("{slug}" in prefix):
            return path.replace("{id}", str(value)).replace("{slug}", str(value))
    return None


def _min_length(schema: dict) -> int:
    return max([schema.get("minLength", 0)] + [s.get("minLength", 0) for s in schema.get("anyOf", [])])


def _fields(kinds: set[str], nonempty: bool = False) -> list[tuple[str, str, str]]:
    """(method, path, field) for every writable body field of one of ``kinds`` in the document;
    with ``nonempty``, only the strings it says hold at least one character."""
    document, found = _document(), []
    for path, item in document["paths"].items():
        for method in WRITE_METHODS:
            body = item.get(method, {}).get("requestBody", {}).get("content", {}).get("application/json")
            if body is None:
                continue
            for name, prop in _resolve(document, body["schema"]).get("properties", {}).items():
                prop = _resolve(document, prop)
                if not prop.get("readOnly") and _types(prop) & kinds and (not nonempty or _min_length(prop)):
                    found.append((method, path, name))
    return found


def _bodies() -> list[tuple[str, str]]:
    document = _document()
    return [
        (method, path)
        for path, item in document["paths"].items()
        for method in WRITE_METHODS
        if "application/json" in item.get(method, {}).get("requestBody", {}).get("content", {})
    ]


@pytest.fixture
def signed_in(client_for) -> dict[str, Any]:
    """Signed in before any snapshot: a sign-in writes its own rows."""
    return {persona: client_for(persona) for persona in ("admin", "dept_user")}


def _call(clients: dict[str, Any], method: str, url: str, body: Any):
    """As the admin; as the department user where only they may (their requests and keys)."""
    for persona in ("admin", "dept_user"):
        response = getattr(clients[persona], method)(url, json.dumps(body), content_type="application/json")
        if response.status_code != 403:
            return response
    return response


def _names(response, field: str) -> bool:
    data = response.json()
    return field in (data.get("errors") or {}) or field in data.get("detail", "")


def _sent_alone(clients: dict[str, Any], world: dict[str, Any], method: str, path: str, body: Any):
    """The answer to ``body`` at ``path`` (filled from ``world``), having checked it wrote nothing."""
    url = _fill(path, world)
    assert url is not None, f"no object for {path}: add one to the world fixture"
    before = _snapshot()
    response = _call(clients, method, url, body)
    assert _snapshot() == before
    return response


@pytest.mark.parametrize(("method", "path", "field"), _fields({"integer"}))
def test_an_oversized_integer_is_a_4xx_naming_the_field(signed_in, world, method, path, field):
    response = _sent_alone(signed_in, world, method, path, {field: HUGE})
    assert 400 <= response.status_code < 500 and _names(response, field), response.content


@pytest.mark.parametrize(("method", "path", "field"), _fields({"string"}))
def test_a_nul_character_in_a_string_is_a_400_naming_the_field(signed_in, world, method, path, field):
    response = _sent_alone(signed_in, world, method, path, {field: NUL})
    assert response.status_code == 400 and _names(response, field), response.content


@pytest.mark.parametrize(("method", "path", "field"), _fields({"string"}, nonempty=True))
def test_an_empty_string_where_the_document_wants_a_character_is_a_400_naming_the_field(
    signed_in, world, method, path, field
):
    """Not taken as null: DRF reads "" as no object for a relation (a user's department was cleared)."""
    response = _sent_alone(signed_in, world, method, path, {field: ""})
    assert response.status_code == 400 and _names(response, field), response.content


@pytest.mark.parametrize(("method", "path", "field"), _fields({"integer"}))
def test_an_integer_given_as_text_is_a_400_naming_the_field(signed_in, world, method, path, field):
    """ "1" is not 1: DRF takes a relation's id as text too."""
    response = _sent_alone(signed_in, world, method, path, {field: "1"})
    assert response.status_code == 400 and _names(response, field), response.content


def _query_parameters(world: dict[str, Any]) -> list[tuple[str, str]]:
    """(url, name) for every documented query parameter of a GET whose path ``world`` can fill."""
    return [
        (url, parameter["name"])
        for path, item in _document()["paths"].items()
        if (url := _fill(path, world)) is not None
        for parameter in item.get("get", {}).get("parameters", [])
        if parameter["in"] == "query"
    ]


def test_a_nul_character_in_a_query_is_a_400_naming_it(client_for, world):
    parameters = _query_parameters(world)
    for url, name in parameters:
        response = client_for("admin").get(url, {name: NUL})
        assert response.status_code == 400 and name in response.json()["detail"], (url, name)
    assert len(parameters) > 30  # every list's filters, search and page
    assert client_for("admin").get("/nodes/", {"q": NUL}).status_code == 400  # a page too


@pytest.mark.parametrize(("method", "path"), _bodies())
def test_a_field_the_document_does_not_name_is_a_400_naming_it(signed_in, world, method, path):
    """A misspelt field is refused, not dropped; the document says so (additionalProperties: false)."""
    url = _fill(path, world)
    assert url is not None, f"no object for {path}: add one to the world fixture"
    document = _document()
    schema = _resolve(document, document["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"])
    before = _snapshot()
    response = _call(signed_in, method, url, {"expires_in_day": 1})
    assert response.status_code == 400 and _names(response, "expires_in_day"), response.content
    assert "Unknown field" in json.dumps(response.json()) and _snapshot() == before
    assert schema.get("additionalProperties") is False or "properties" not in schema, schema


def test_a_query_parameter_given_twice_is_a_400_naming_it(client_for, world):
    """Every documented query parameter holds one value; the API does not quietly read the last."""
    parameters = _query_parameters(world)
    for url, name in parameters:
        response = client_for("admin").get(url, {name: ["1", "2"]})
        assert response.status_code == 400 and name in response.json()["detail"], (url, name)
    assert len(parameters) > 30
    assert client_for("admin").get("/api/audit/events/", {"before": "2"}).status_code == 200  # once is fine


def test_an_id_in_a_query_must_be_a_whole_number(client_for, world):
    for value in ("0.5", "1e3", "two"):
        for url in ("/api/instances/", "/instances/"):
            response = client_for("admin").get(url, {"deployment": value})
            assert response.status_code == 400, (url, value)
    assert client_for("admin").get("/api/instances/", {"deployment": "0"}).json()["count"] == 0
    assert client_for("admin").get("/api/instances/", {"deployment": ""}).status_code == 200  # blank: any


@pytest.mark.parametrize(("method", "path"), _bodies())
def test_a_body_of_the_wrong_type_is_a_400(signed_in, world, method, path):
    url = _fill(path, world)
    assert url is not None
    before = _snapshot()
    for body in ([], [{"name": "x"}], "text", 5, None):
        response = _call(signed_in, method, url, body)
        assert response.status_code == 400, (body, response.content)
    assert _snapshot() == before


def test_deleting_what_others_depend_on_is_a_409_naming_them(client_for, world, people, department):
    admin = client_for("admin")
    before = _snapshot()
    refused = admin.delete(f"/api/departments/{department.pk}/")
    assert refused.status_code == 409
    assert "member" in refused.json()["detail"] and "grant" not in refused.json()["detail"]
    model = ModelArtifact.objects.get()
    refused = admin.delete(f"/api/models/{model.pk}/")
    assert refused.status_code == 409
    assert "1 deployment" in refused.json()["detail"] and "1 active grant" in refused.json()["detail"]
    assert _snapshot() == before
    # The same refusal through the UI: the message, and the model still there.
    page = admin.post(f"/models/{model.pk}/unregister/", follow=True)
    assert any("1 deployment" in str(m) for m in get_messages(page.wsgi_request))
    assert ModelArtifact.objects.filter(pk=model.pk).exists()


# --- the UI's forms ------------------------------------------------------------------------------

# Each form, the page that posts it (with what else that page needs), and who may post it.
FORMS: list[tuple[type[forms.Form], str, str, dict[str, str]]] = [
    (grant_forms.AccessRequestForm, "dept_user", "/access/?form=request", {}),
    (grant_forms.ApiKeyForm, "dept_user", "/access/?form=key", {}),
    (grant_forms.DecisionForm, "admin", "/access/queue/{request}/approve/", {}),
    (grant_forms.GrantForm, "admin", "/access/grants/", {}),
    (people_forms.TokenForm, "admin", "/account/tokens/", {}),
    (catalog_forms.FitForm, "admin", "/models/fit/?{field}={value}", {}),
    (deployment_forms.DeploymentForm, "admin", "/deployments/", {}),
    (job_forms.QuantizeForm, "admin", "/models/{model}/quantize/", {}),
    (job_forms.BenchmarkForm, "admin", "/deployments/{deployment}/benchmark/", {}),
    (node_forms.JoinTokenForm, "admin", "/nodes/join/", {}),
]
NUMERIC = (forms.IntegerField, forms.FloatField, forms.DecimalField)


def _numeric_fields() -> list[tuple[type[forms.Form], str, str, str]]:
    return [
        (form, persona, url, name)
        for form, persona, url, _ in FORMS
        for name, field in form.base_fields.items()
        if isinstance(field, NUMERIC)
    ]


TEXT_FORMS = FORMS + [
    (people_forms.DepartmentForm, "admin", "/people/", {}),
    (catalog_forms.ModelRegisterForm, "admin", "/models/", {}),
    (catalog_forms.ModelEditForm, "admin", "/models/{model}/", {}),
]


def _text_fields() -> list[tuple[type[forms.Form], str, str, str]]:
    return [
        (form, persona, url, name)
        for form, persona, url, _ in TEXT_FORMS
        for name, field in form.base_fields.items()
        if isinstance(field, forms.CharField) and form is not catalog_forms.FitForm  # a GET form: see the query test
    ]


@pytest.mark.parametrize(("form", "persona", "url", "field"), _text_fields())
def test_a_nul_character_in_a_form_is_a_400_naming_the_field(client_for, world, form, persona, url, field):
    deployment = Deployment.objects.get()
    url = url.format(request=world["/api/access-requests/"], model=deployment.model_id, deployment=deployment.pk)
    client = client_for(persona)
    before = _snapshot()
    response = client.post(url, {field: NUL})  # multipart, as a browser posts a form with a file
    assert response.status_code == 400 and field in response.content.decode(), (url, field)
    assert _snapshot() == before


def test_every_numeric_form_field_has_both_bounds():
    for form, *_ in FORMS:
        for name, field in form.base_fields.items():
            if isinstance(field, NUMERIC):
                kinds = {type(v) for v in field.validators}
                assert {MinValueValidator, MaxValueValidator} <= kinds, f"{form.__name__}.{name}"


def _shown(response, field: str, label: str) -> bool:
    """The field's error is on the re-shown form, or (a POST-and-redirect view) in the message."""
    context = response.context
    for key in context.keys() if context is not None else []:
        if isinstance(context[key], forms.BaseForm) and field in context[key].errors:
            return True
    return any(field in str(m) or label in str(m) for m in get_messages(response.wsgi_request))


@pytest.mark.parametrize(("form", "persona", "url", "field"), _numeric_fields())
def test_an_oversized_number_in_a_form_is_shown_beside_its_field(client_for, world, form, persona, url, field):
    deployment = Deployment.objects.get()
    url = url.format(
        request=world["/api/access-requests/"],
        model=deployment.model_id,
        deployment=deployment.pk,
        field=field,
        value=HUGE,
    )
    client = client_for(persona)
    before = _snapshot()
    response = client.get(url) if "?" in url and "form=" not in url else client.post(url, {field: str(HUGE)})
    assert response.status_code in (200, 302, 400), response.status_code
    assert _shown(response, field, str(form.base_fields[field].label or field)), (url, field)
    assert _snapshot() == before
