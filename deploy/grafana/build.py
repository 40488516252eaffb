"""Writes the Grafana dashboards (one JSON file each) beside this script: python deploy/grafana/build.py.

The panels are data, one tuple each; every dashboard has the same layout code, a Prometheus
data-source variable and refreshes every 30 s. tests/fleet/test_monitoring.py checks the files are
what this writes and that every query names a series the console serves.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
RATE = "$__rate_interval"
# (title, unit, [(expr, legend)], kind): kind is "timeseries" or "stat"; two panels to a row.
Panel = tuple[str, str, list[tuple[str, str]], str]

DASHBOARDS: dict[str, tuple[str, list[Panel]]] = {
    "fleet": (
        "Fleet Console: fleet",
        [
            ("Nodes online", "none", [('fleet_nodes{state="online"}', "online")], "stat"),
            ("Nodes offline", "none", [('fleet_nodes{state="offline"}', "offline")], "stat"),
            ("Nodes cordoned", "none", [("fleet_nodes_cordoned", "cordoned")], "stat"),
            (
                "Malformed agent messages",
                "none",
                [(f"increase(fleet_telemetry_malformed_total[{RATE}])", "dropped")],
                "timeseries",
            ),
            ("Host CPU by node", "percent", [("fleet_host_cpu_percent", "{{node}}")], "timeseries"),
            ("Jobs by state", "none", [("sum by (state) (fleet_jobs)", "{{state}}")], "timeseries"),
            ("Celery queue length", "none", [("fleet_celery_queue_length", "{{queue}}")], "timeseries"),
            ("Console scrape up", "none", [('up{job="fleet-console"}', "{{instance}}")], "timeseries"),
        ],
    ),
    "gpus": (
        "Fleet Console: GPUs",
        [
            ("GPU utilization", "percent", [("fleet_gpu_utilization_percent", "{{node}} GPU {{gpu}}")], "timeseries"),
            (
                "GPU memory used",
                "percentunit",
                [("fleet_gpu_memory_used_bytes / fleet_gpu_memory_total_bytes", "{{node}} GPU {{gpu}}")],
                "timeseries",
            ),
            ("GPU temperature", "celsius", [("fleet_gpu_temperature_celsius", "{{node}} GPU {{gpu}}")], "timeseries"),
            ("GPU power", "watt", [("fleet_gpu_power_watts", "{{node}} GPU {{gpu}}")], "timeseries"),
            (
                "Uncorrected ECC errors",
                "none",
                [("fleet_gpu_ecc_uncorrected_errors > 0", "{{node}} GPU {{gpu}}")],
                "stat",
            ),
            ("Xid errors", "none", [("fleet_gpu_xid_errors > 0", "{{node}} GPU {{gpu}}")], "stat"),
        ],
    ),
    "gateway": (
        "Fleet Console: gateway",
        [
            (
                "Calls per second by deployment",
                "reqps",
                [("fleet:gateway_requests:rate5m", "{{deployment}}")],
                "timeseries",
            ),
            (
                "Calls per second by status",
                "reqps",
                [(f"sum by (code) (rate(fleet_gateway_requests_total[{RATE}]))", "{{code}}")],
                "timeseries",
            ),
            ("5xx ratio", "percentunit", [("fleet:gateway_error_ratio:rate5m", "{{deployment}}")], "timeseries"),
            (
                "Calls per second by department",
                "reqps",
                [(f"sum by (department) (rate(fleet_gateway_requests_total[{RATE}]))", "{{department}}")],
                "timeseries",
            ),
            (
                "Latency p95 (last byte)",
                "s",
                [("fleet:gateway_request_duration_seconds:p95_5m", "{{deployment}}")],
                "timeseries",
            ),
            ("Time to first token p95", "s", [("fleet:gateway_ttft_seconds:p95_5m", "{{deployment}}")], "timeseries"),
            (
                "Tokens per second",
                "none",
                [
                    (f"sum by (deployment) (rate(fleet_gateway_prompt_tokens_total[{RATE}]))", "{{deployment}} prompt"),
                    (
                        f"sum by (deployment) (rate(fleet_gateway_completion_tokens_total[{RATE}]))",
                        "{{deployment}} completion",
                    ),
                ],
                "timeseries",
            ),
            (
                "Ledger backlog",
                "none",
                [("fleet_ledger_backlog", "queued"), ("fleet_ledger_oldest_age_seconds", "oldest (s)")],
                "timeseries",
            ),
        ],
    ),
    "deployments": (
        "Fleet Console: deployments",
        [
            (
                "Ready and wanted replicas",
                "none",
                [
                    ("fleet_deployment_replicas_ready", "{{deployment}} ready"),
                    ("fleet_deployment_replicas_wanted", "{{deployment}} wanted"),
                ],
                "timeseries",
            ),
            (
                "Below wanted",
                "none",
                [("fleet_deployment_replicas_wanted - fleet_deployment_replicas_ready > 0", "{{deployment}}")],
                "stat",
            ),
            ("Instances by state", "none", [("sum by (state) (fleet_instances)", "{{state}}")], "timeseries"),
            ("Restarts (1 h)", "none", [("increase(fleet_instance_restarts[1h])", "{{deployment}}")], "timeseries"),
        ],
    ),
    "audit": (
        "Fleet Console: audit",
        [
            ("Chain broken", "none", [("fleet_audit_chain_broken", "broken")], "stat"),
            ("Events", "none", [("fleet_audit_events", "last event")], "stat"),
            (
                "Unverified events",
                "none",
                [("fleet_audit_events - fleet_audit_verified_event", "since the last verification")],
                "timeseries",
            ),
            ("Since the last verification", "s", [("time() - fleet_audit_verified_timestamp_seconds", "age")], "stat"),
            ("Events per minute", "none", [(f"rate(fleet_audit_events[{RATE}]) * 60", "events")], "timeseries"),
        ],
    ),
}


def dashboard(slug: str, title: str, panels: list[Panel]) -> dict:
    datasource = {"type": "prometheus", "uid": "${datasource}"}
    body = []
    for n, (panel_title, unit, queries, kind) in enumerate(panels):
        body.append(
            {
                "id": n + 1,
                "type": kind,
                "title": panel_title,
                "datasource": datasource,
                "gridPos": {"x": 12 * (n % 2), "y": 8 * (n // 2), "w": 12, "h": 8},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "options": {"legend": {"displayMode": "list", "placement": "bottom"}} if kind == "timeseries" else {},
                "targets": [
                    {"refId": chr(65 + i), "datasource": datasource, "expr": expr, "legendFormat": legend}
                    for i, (expr, legend) in enumerate(queries)
                ],
            }
        )
    return {
        "uid": f"fleet-console-{slug}",
        "title": title,
        "tags": ["fleet-console"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [{"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"}]
        },
        "panels": body,
    }


def rendered() -> dict[str, str]:
    """File name → its JSON text."""
    return {
        f"{slug}.json": json.dumps(dashboard(slug, title, panels), indent=2, ensure_ascii=False) + "\n"
        for slug, (title, panels) in DASHBOARDS.items()
    }


if __name__ == "__main__":
    for name, text in rendered().items():
        (HERE / name).write_text(text)
        print(f"wrote {HERE / name}")
