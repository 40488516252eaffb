"""The shipped Prometheus rules and Grafana dashboards: promtool accepts the rules and their unit
tests pass (each alert fires and stays quiet), and every query names only series the console serves."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fleet.metrics import SERIES

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
GRAFANA = ROOT / "deploy" / "grafana"
PROMTOOL = shutil.which("promtool")
# CI installs Debian's prometheus (.ci/run); a developer without it skips, CI fails.
needs_promtool = pytest.mark.skipif(PROMTOOL is None and not os.environ.get("CI"), reason="promtool not installed")

# PromQL words that are not series: functions are followed by "(" and dropped separately.
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}


def _rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def series_named(expr: str) -> set[str]:
    """The series an expression reads: strings, label matchers, ranges, grouping clauses and
    Grafana variables taken out first, then every identifier that is not a function or keyword."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\$\w+", "", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    found = re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text)
    return {m[0] for m in found if m[0] not in KEYWORDS and not text[m.end() :].lstrip().startswith("(")}


def _served(name: str) -> bool:
    base = re.sub(r"_(bucket|sum|count)$", "", name)
    return name in SERIES or base in SERIES or name == "up"


def test_the_series_parser_reads_what_it_should():
    assert series_named('sum by (deployment, le) (rate(a_bucket{code=~"5.."}[5m])) / b') == {"a_bucket", "b"}
    assert series_named("time() - c > 2 * 3600") == {"c"}
    assert series_named("x or y * 0 and on (node) z") == {"x", "y", "z"}


def test_every_rule_and_dashboard_query_names_a_served_series():
    recorded = {rule["record"] for rule in _rules() if "record" in rule}
    queries = [(rule.get("alert") or rule["record"], rule["expr"]) for rule in _rules()]
    for path in sorted(GRAFANA.glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            queries += [(f"{path.name}: {panel['title']}", t["expr"]) for t in panel["targets"]]
    assert len(queries) > 40
    unknown = {
        (where, name)
        for where, expr in queries
        for name in series_named(expr)
        if name not in recorded and not _served(name)
    }
    assert not unknown, unknown


def test_the_dashboards_are_what_the_build_script_writes():
    sys.path.insert(0, str(GRAFANA))
    try:
        import build  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(GRAFANA))
    files = build.rendered()
    assert set(files) == {"fleet.json", "gpus.json", "gateway.json", "deployments.json", "audit.json"}
    for name, text in files.items():
        assert (GRAFANA / name).read_text() == text, f"run python deploy/grafana/build.py ({name} is stale)"


@needs_promtool
def test_promtool_accepts_the_rules_and_their_unit_tests_pass():
    assert PROMTOOL, "promtool is installed by .ci/run (Debian's prometheus)"
    checked = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in checked.stdout
    tested = subprocess.run(
        [PROMTOOL, "test", "rules", "rules_test.yml"], cwd=RULES.parent, capture_output=True, text=True, timeout=60
    )
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr
    alerts = {rule["alert"] for rule in _rules() if "alert" in rule}
    tested_alerts = set(re.findall(r"alertname: (\w+)", (RULES.parent / "rules_test.yml").read_text()))
    assert alerts == tested_alerts, alerts ^ tested_alerts
