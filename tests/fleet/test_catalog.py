"""The model registry: exact facts from real files, every bad directory refused with its reason."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from audit.models import AuditEvent
from console.actions import ServiceError
from fleet.catalog import demo
from fleet.catalog import services as registry
from fleet.catalog.choices import ChecksumState
from fleet.catalog.models import ModelArtifact, ModelFile
from fleet.nodes.models import Node
from fleet.planning.estimator import ModelShape, parameters


@pytest.fixture
def root(tmp_path, settings) -> Path:
    models = tmp_path / "models"
    models.mkdir()
    settings.FLEET_MODEL_ROOTS = [str(models)]
    return models


@pytest.fixture
def demo_dir(root) -> Path:
    demo.build(root / "demo")
    return root / "demo"


def _register(people, path, name="demo", **kw) -> ModelArtifact:
    return registry.register(people["admin"], path=str(path), name=name, checksum_now=True, **kw)


def _refusal(people, path, **kw) -> str:
    with pytest.raises(ServiceError) as refused:
        _register(people, path, **kw)
    assert not ModelArtifact.objects.exists() and not ModelFile.objects.exists()
    return refused.value.message


def test_it_reads_exact_facts_from_config_and_safetensors_headers(people, demo_dir):
    artifact = _register(people, demo_dir)
    config = json.loads((demo_dir / "config.json").read_text())
    assert (
        artifact.architecture,
        artifact.num_layers,
        artifact.hidden_size,
        artifact.num_attention_heads,
        artifact.num_kv_heads,
        artifact.head_dim,
    ) == ("LlamaForCausalLM", 2, 128, 2, 1, 64)
    # The headers' element count equals the architecture's parameter formula, and bytes are 2 per bf16 element.
    assert artifact.parameter_count == parameters(ModelShape.from_config(config))
    assert artifact.dtypes == {"BF16": artifact.parameter_count}
    assert artifact.weights_bytes == 2 * artifact.parameter_count
    assert artifact.warnings == [] and artifact.architecture_known
    files = {f.name: f for f in artifact.files.all()}
    assert set(files) >= {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}
    weights = files["model.safetensors"]
    assert weights.kind == "weights" and weights.size == (demo_dir / "model.safetensors").stat().st_size
    assert weights.sha256 == hashlib.sha256((demo_dir / "model.safetensors").read_bytes()).hexdigest()
    assert artifact.checksum_state == ChecksumState.DONE and artifact.checksum_progress == 100
    assert AuditEvent.objects.filter(action="model.register", target_id=str(artifact.pk)).count() == 1


def test_a_relative_path_is_taken_from_the_first_model_root(people, demo_dir):
    assert _register(people, "demo").path == str(demo_dir)


def test_a_quantized_variant_points_at_its_parent_and_keeps_its_quantization(people, demo_dir, root):
    parent = _register(people, demo_dir)
    demo.build(root / "demo-w4")
    config = json.loads((root / "demo-w4" / "config.json").read_text())
    config["quantization_config"] = {
        "quant_method": "compressed-tensors",
        "format": "pack-quantized",
        "config_groups": {"group_0": {"weights": {"num_bits": 4, "group_size": 128, "type": "int"}}},
    }
    (root / "demo-w4" / "config.json").write_text(json.dumps(config))
    variant = _register(people, root / "demo-w4", name="demo-w4", parent=parent, recipe={"scheme": "W4A16"})
    assert variant.parent == parent and list(parent.variants.all()) == [variant]
    assert variant.quantization == {
        "method": "compressed-tensors",
        "bits": 4,
        "group_size": 128,
        "type": "int",
        "activation_bits": None,
        "format": "pack-quantized",
    }
    with pytest.raises(ServiceError, match="has variants"):
        registry.forget(people["admin"], parent)


def test_an_unknown_architecture_registers_with_a_warning(people, demo_dir):
    config = json.loads((demo_dir / "config.json").read_text())
    (demo_dir / "config.json").write_text(json.dumps(config | {"architectures": ["FancyNewForCausalLM"]}))
    artifact = _register(people, demo_dir)
    assert not artifact.architecture_known and "Unknown architecture FancyNewForCausalLM" in artifact.warnings[0]


def _corrupt_header(directory: Path, header: bytes, declared: int | None = None) -> None:
    weights = directory / "model.safetensors"
    weights.write_bytes(struct.pack("<Q", len(header) if declared is None else declared) + header + b"\0" * 64)


@pytest.mark.parametrize(
    "case,expected",
    [
        ("outside", "is outside the model roots"),
        ("dotdot", "is outside the model roots"),
        ("symlink-dir", "symlink that leads outside the model roots"),
        ("symlink-file", "symlink that leads outside the model roots"),
        ("not-a-dir", "is not a directory"),
        ("no-config", "config.json is missing"),
        ("bad-json", "config.json is not valid JSON"),
        ("config-list", "must hold a JSON object"),
        ("no-architecture", "names no architecture"),
        ("header-not-json", "corrupt safetensors header (not JSON"),
        ("header-too-long", "corrupt safetensors header (says"),
        ("header-bad-offsets", "bad dtype, shape or offsets"),
        ("header-bad-dtype", "bad dtype, shape or offsets"),
        ("too-short", "too short to be a safetensors file"),
        ("no-weights", "holds no *.safetensors weights"),
    ],
)
def test_it_refuses_a_bad_model_directory_naming_the_problem(people, demo_dir, root, tmp_path, case, expected):
    path = demo_dir
    if case == "outside":
        outside = tmp_path / "elsewhere"
        demo.build(outside)
        path = outside
    elif case == "dotdot":
        path = root / ".." / "elsewhere"
    elif case == "symlink-dir":
        outside = tmp_path / "elsewhere"
        demo.build(outside)
        os.symlink(outside, root / "sneaky")
        path = root / "sneaky"
    elif case == "symlink-file":
        (tmp_path / "secret.txt").write_text("not yours")
        os.symlink(tmp_path / "secret.txt", demo_dir / "notes.txt")
    elif case == "not-a-dir":
        path = demo_dir / "config.json"
    elif case == "no-config":
        (demo_dir / "config.json").unlink()
    elif case == "bad-json":
        (demo_dir / "config.json").write_text("{not json")
    elif case == "config-list":
        (demo_dir / "config.json").write_text("[1, 2]")
    elif case == "no-architecture":
        (demo_dir / "config.json").write_text(json.dumps({"hidden_size": 8}))
    elif case == "header-not-json":
        _corrupt_header(demo_dir, b"\xff\xfe garbage")
    elif case == "header-too-long":
        _corrupt_header(demo_dir, b"{}", declared=10**9)
    elif case == "header-bad-offsets":
        _corrupt_header(
            demo_dir, json.dumps({"w": {"dtype": "BF16", "shape": [4, 4], "data_offsets": [0, 9999]}}).encode()
        )
    elif case == "header-bad-dtype":
        _corrupt_header(demo_dir, json.dumps({"w": {"dtype": "Q3", "shape": [2], "data_offsets": [0, 2]}}).encode())
    elif case == "too-short":
        (demo_dir / "model.safetensors").write_bytes(b"\x01")
    elif case == "no-weights":
        (demo_dir / "model.safetensors").unlink()
    assert expected in _refusal(people, path)


def test_names_and_paths_are_registered_once(people, demo_dir, root):
    _register(people, demo_dir)
    with pytest.raises(ServiceError, match="already registered"):
        _register(people, demo_dir, name="other")
    demo.build(root / "second")
    with pytest.raises(ServiceError, match="already exists"):
        _register(people, root / "second", name="demo")


@pytest.mark.parametrize(
    "kw,field", [({"tags": ["ok", "<script>"]}, "tags"), ({"sensitivity": "secret"}, "sensitivity")]
)
def test_bad_metadata_is_refused(people, demo_dir, kw, field):
    with pytest.raises(ServiceError) as refused:
        _register(people, demo_dir, **kw)
    assert refused.value.field == field


def test_a_missing_file_fails_the_checksum_with_its_name(people, demo_dir):
    artifact = _register(people, demo_dir)
    (demo_dir / "tokenizer.json").unlink()
    ModelArtifact.objects.filter(pk=artifact.pk).update(checksum_state=ChecksumState.PENDING)
    registry.compute_checksums(artifact.pk)
    artifact.refresh_from_db()
    assert artifact.checksum_state == ChecksumState.FAILED and "tokenizer.json" in artifact.checksum_error


def test_make_demo_model_builds_and_registers_it(people, root):
    call_command("make_demo_model")
    artifact = ModelArtifact.objects.get(name="demo-llama")
    assert artifact.head_dim == 64 and artifact.checksum_state == ChecksumState.DONE and artifact.tags == ["demo"]
    call_command("make_demo_model")  # a second run leaves it be
    assert ModelArtifact.objects.count() == 1


# --- UI and API ---------------------------------------------------------------------------------
def test_the_api_registers_edits_and_unregisters(client_for, people, demo_dir):
    client = client_for("admin")
    created = client.post(
        "/api/models/", {"path": str(demo_dir), "name": "demo", "tags": ["demo"]}, content_type="application/json"
    )
    assert created.status_code == 201, created.json()
    pk = created.json()["id"]
    assert created.json()["num_kv_heads"] == 1 and created.json()["weights_bytes"] > 0
    edited = client.patch(
        f"/api/models/{pk}/", {"license": "MIT", "sensitivity": "restricted"}, content_type="application/json"
    )
    assert edited.status_code == 200 and edited.json()["sensitivity"] == "restricted"
    refused = client.patch(f"/api/models/{pk}/", {"name": "renamed"}, content_type="application/json")
    assert refused.status_code == 400 and ModelArtifact.objects.get(pk=pk).name == "demo"
    detail = client.get(f"/api/models/{pk}/").json()
    assert {f["name"] for f in detail["files"]} >= {"model.safetensors"} and detail["config"]["hidden_size"] == 128
    assert client.delete(f"/api/models/{pk}/").status_code == 204 and not ModelArtifact.objects.exists()
    actions = list(
        AuditEvent.objects.filter(action__startswith="model.").order_by("seq").values_list("action", flat=True)
    )
    assert actions == ["model.register", "model.update", "model.unregister"]


@pytest.mark.parametrize(
    "body,field,status",
    [  # 400: not the document's shape; 409: well formed, refused by what is on disk
        ({"path": "/etc", "name": "etc"}, "path", 409),
        ({"path": "nope", "name": "nope"}, "path", 409),
        ({"path": "demo", "name": "Bad Name"}, "name", 400),
        ({"name": "demo"}, "path", 400),
    ],
)
def test_the_api_answers_bad_registrations_with_a_4xx_and_the_reason(client_for, people, demo_dir, body, field, status):
    response = client_for("admin").post("/api/models/", body, content_type="application/json")
    assert response.status_code == status and field in response.json()["errors"]
    assert not ModelArtifact.objects.exists()


def test_the_register_form_shows_the_reason(client_for, people, demo_dir, root):
    client = client_for("admin")
    response = client.post("/models/", {"path": "/etc", "name": "etc", "sensitivity": "internal"})
    assert response.status_code == 400 and "outside the model roots" in response.content.decode()
    response = client.post("/models/", {"path": "demo", "name": "demo", "sensitivity": "internal", "tags": "demo"})
    assert response.status_code == 302
    page = client.get(response["Location"]).content.decode()
    assert "LlamaForCausalLM" in page and "model.safetensors" in page


def test_the_models_list_query_count_is_constant(client_for, people, root):
    client = client_for("admin")
    demo.build(root / "m0")
    _register(people, root / "m0", name="m0")

    def count() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert client.get("/models/").status_code == 200
        return len(ctx.captured_queries)

    few = count()
    parent = ModelArtifact.objects.get(name="m0")
    for i in range(1, 6):
        demo.build(root / f"m{i}")
        _register(people, root / f"m{i}", name=f"m{i}", parent=parent)
    assert count() == few


def test_will_it_fit_answers_on_page_and_api(client_for, people, demo_dir):
    artifact = _register(people, demo_dir)
    Node.objects.create(name="cpu-a", kind="cpu", agent_digest="x", ram_bytes=16 * 2**30)
    client = client_for("admin")
    page = client.get(
        "/models/fit/",
        {
            "model": artifact.pk,
            "max_model_len": 1024,
            "concurrency": 4,
            "quantization": "none",
            "kv_dtype": "auto",
            "tp": 1,
            "pp": 1,
            "gpu_memory_utilization": 0.9,
            "cpu_kv_space_gib": 1,
        },
    )
    assert page.status_code == 200 and "Placed 1 replica" in page.content.decode()
    assert "2,097,152" in page.content.decode()  # token capacity of 1 GiB of KV for this model
    api = client.post(
        "/api/fit/", {"model": artifact.pk, "max_model_len": 1024, "tp": 2}, content_type="application/json"
    )
    assert api.status_code == 200 and not api.json()["ok"] and "CPU node" in api.json()["rejected"]["cpu-a"]
    bad = client.post("/api/fit/", {"model": artifact.pk, "max_model_len": 999_999}, content_type="application/json")
    assert bad.status_code == 400 and "max_model_len" in bad.json()["errors"]
    assert client.get("/models/fit/", {"model": artifact.pk, "max_model_len": "lots"}).status_code == 400
    assert (
        client_for("dept_user").post("/api/fit/", {"model": artifact.pk}, content_type="application/json").status_code
        == 403
    )
