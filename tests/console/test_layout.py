"""The layout holds: every domain module sits in a layer of the import contracts (none escapes them),
and no import hides inside a function without a comment saying why."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

from console.config import BASE_DIR

PACKAGES = ("console", "fleet", "access", "audit")
DOMAINS = ("fleet/nodes", "fleet/catalog", "fleet/deployments", "fleet/jobs")


def _contracts() -> list[dict]:
    return tomllib.loads((BASE_DIR / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def _sources() -> list[Path]:
    return [
        path
        for package in PACKAGES
        for path in sorted((BASE_DIR / package).rglob("*.py"))
        if "migrations" not in path.parts and "runners" not in path.parts
    ]


@pytest.mark.parametrize("domain", DOMAINS)
def test_every_module_of_a_domain_is_in_the_one_way_layers(domain):
    fleet_layers = next(c for c in _contracts() if c["name"].startswith("fleet: imports go one way"))
    listed = {name.strip() for layer in fleet_layers["layers"] for name in layer.replace("|", ":").split(":")}
    package = domain.replace("/", ".")
    modules = {f"{package}.{path.stem}" for path in (BASE_DIR / domain).glob("*.py") if path.stem != "__init__"}
    assert modules - listed == set(), "add these modules to a layer in pyproject.toml"


def test_no_import_inside_a_function_without_a_reason():
    hidden = []
    for path in _sources():
        source = path.read_text()
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import | ast.ImportFrom) and "#" not in lines[inner.lineno - 1]:
                    hidden.append(f"{path.relative_to(BASE_DIR)}:{inner.lineno}")
    assert hidden == [], "move these imports to the top, or say on the line why they must stay"
