"""A real Prometheus (Debian's) scrapes the running console with the shipped rules loaded, and its
HTTP API answers for a gateway call, a GPU and a broken audit chain after the test made each
happen: counted from the ledger, read from a heartbeat, and the AuditChainBroken alert firing."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings

from access.grants import services as grants
from audit import verification
from bench import mock_openai
from console.embedded import free_port
from fleet.nodes.models import Node
from tests.e2e.conftest import settle_ledger, start_uvicorn, stop, wait_for, wait_for_port
from tests.helpers import tamper

pytestmark = pytest.mark.e2e
RULES = Path(settings.BASE_DIR) / "deploy" / "prometheus" / "rules.yml"


def _query(port: int, promql: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as r:
        answer = json.load(r)
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def _value(port: int, promql: str) -> float | None:
    result = _query(port, promql)
    return float(result[0]["value"][1]) if result else None


@pytest.fixture
def scraped(transactional_db, process_env, celery_worker_process, tmp_path):
    """The console under uvicorn (with a scrape token) and Prometheus scraping it every second."""
    token = secrets.token_urlsafe(24)
    port = free_port()
    console = start_uvicorn("console.asgi:application", port, process_env | {"FLEET_METRICS_TOKEN": token})
    (tmp_path / "token").write_text(token)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {
                "job_name": "fleet-console",
                "authorization": {"credentials_file": str(tmp_path / "token")},
                "static_configs": [{"targets": [f"127.0.0.1:{port}"]}],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    prom_port = free_port()
    log = (tmp_path / "prometheus.log").open("w")
    prometheus = subprocess.Popen(
        [
            shutil.which("prometheus") or "/usr/bin/prometheus",
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(port, console)
        wait_for_port(prom_port, prometheus)
        wait_for(lambda: _value(prom_port, 'up{job="fleet-console"}') == 1, 30, "a first good scrape")
        yield port, prom_port
    finally:
        stop(prometheus)
        stop(console)
        log.close()


def test_prometheus_sees_a_gateway_call_a_gpu_and_a_broken_chain(scraped, mock_backend, people):
    console, prom = scraped
    deployment, instance = mock_openai.register("chat-prom", mock_backend)
    sample = {"gpus": [{"i": 0, "util": 77, "temp": 66, "mem_used": 2**30, "mem_total": 2**34, "ecc": 0, "xid": 0}]}
    Node.objects.filter(pk=instance.node_id).update(last_sample=sample)
    grant = grants.create_grant(people["admin"], user=people["dept_user"], models=[deployment.model], duration_days=1)
    _key, plaintext = grants.create_key(people["dept_user"], grant=grant, name="prom")
    body = json.dumps({"model": "chat-prom", "messages": [{"role": "user", "content": "hi"}]}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{console}/v1/chat/completions",
        body,
        {"Authorization": f"Bearer {plaintext}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as r:
        assert r.status == 200
    settle_ledger()

    calls = 'fleet_gateway_requests_total{deployment="chat-prom",department="Radiology",code="200"}'
    assert wait_for(lambda: _value(prom, calls), 30, "the call in Prometheus") == 1
    gpu = f'max_over_time(fleet_gpu_temperature_celsius{{node="{instance.node.name}",gpu="0"}}[5m])'
    assert wait_for(lambda: _value(prom, gpu), 30, "the GPU in Prometheus") == 66
    assert wait_for(lambda: _value(prom, "fleet_audit_chain_broken") is not None, 30, "the chain flag") is True
    assert _value(prom, "fleet_audit_chain_broken") == 0  # no verification has failed yet

    run = verification.run(full=True)
    tamper("UPDATE audit_auditevent SET actor_name = 'someone-else' WHERE seq = %s", [run.intact_up_to])
    assert not verification.run(full=True).ok
    assert wait_for(lambda: _value(prom, "fleet_audit_chain_broken") == 1 or None, 30, "the broken flag")
    firing = 'ALERTS{alertname="AuditChainBroken",alertstate="firing"}'
    assert wait_for(lambda: _value(prom, firing), 30, "the AuditChainBroken alert") == 1
