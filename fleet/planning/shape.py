"""A model's shape, read from its config.json the way vLLM reads it: the attention family of each
layer (what the KV cache holds), and the sizes that count its parameters (dense, mixture of
experts, latent attention). Pure: no database, no I/O."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

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

FULL, SLIDING = "full", "sliding"


class EstimateError(ValueError):
    """A question the estimator cannot answer as asked: ``field`` names what to change."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


# model_type → the attention vLLM builds for it; anything else is an unknown family: the estimator
# says so rather than guess (hybrid state-space models, encoder-decoders, ...).
LATENT = {"deepseek_v2", "deepseek_v3", "kimi_k2"}
KNOWN = {
    "llama",
    "mistral",
    "mixtral",
    "qwen2",
    "qwen2_moe",
    "qwen3",
    "qwen3_moe",
    "gemma",
    "gemma2",
    "gemma3",
    "gemma3_text",
    "phi3",
} | LATENT
QWEN = {"qwen2", "qwen2_moe", "qwen3", "qwen3_moe"}
GEMMA = {"gemma", "gemma2", "gemma3", "gemma3_text"}
TEXT_OF_MULTIMODAL = {"gemma3"}  # the language model's config sits in text_config


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
    model_type: str = ""
    # per layer, FULL or SLIDING (a window of ``sliding_window`` tokens); empty: every layer FULL
    layer_kinds: tuple[str, ...] = ()
    sliding_window: int = 0
    unknown: str = ""  # why the KV cache cannot be modelled (an unknown family), else empty
    # multi-head latent attention (DeepSeek-V2/V3, Kimi K2): the cache holds the compressed latent
    kv_lora_rank: int = 0
    qk_rope_head_dim: int = 0
    qk_nope_head_dim: int = 0
    q_lora_rank: int = 0
    v_head_dim: int = 0
    # mixtures of experts beyond Mixtral's (every layer, intermediate_size per expert)
    moe_intermediate: int = 0  # per routed expert
    shared_intermediate: int = 0  # all shared experts of a layer together
    shared_gate: bool = False  # Qwen2-MoE gates its shared expert
    dense_layers: int = 0  # leading layers with a dense MLP (DeepSeek's first_k_dense_replace)
    expert_bias: bool = False  # DeepSeek-V3's e_score_correction_bias
    qk_norm: bool = False  # Qwen3, Gemma 3: RMSNorm of q and k per head
    norms_per_layer: int = 2  # Gemma 2 and 3 have four

    @property
    def latent(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def sliding_layers(self) -> int:
        return self.layer_kinds.count(SLIDING)

    @property
    def family(self) -> str:
        """The attention family in words, as the breakdown names it."""
        if self.unknown:
            return "unknown"
        if self.latent:
            return "multi-head latent attention"
        if self.sliding_layers == self.layers and self.layers:
            return f"sliding window of {self.sliding_window:,} tokens on every layer"
        if self.sliding_layers:
            return (
                f"hybrid: {self.sliding_layers} sliding-window layers ({self.sliding_window:,} tokens), "
                f"{self.layers - self.sliding_layers} full"
            )
        kind = "MHA" if self.kv_heads == self.heads else "MQA" if self.kv_heads == 1 else "GQA"
        return f"full attention ({kind})"

    @classmethod
    def from_config(cls, config: dict, weights_bytes: int | None = None) -> ModelShape:
        model_type = str(config.get("model_type", ""))
        outer = config
        if model_type in TEXT_OF_MULTIMODAL and isinstance(config.get("text_config"), dict):
            config = {**config["text_config"], "model_type": model_type}
        heads = int(config.get("num_attention_heads", 0))
        hidden = int(config.get("hidden_size", 0))
        layers = int(config.get("num_hidden_layers", 0))
        dtype = str(outer.get("torch_dtype") or outer.get("dtype") or config.get("torch_dtype") or "bfloat16")
        # Qwen2's attention ignores head_dim (vLLM's qwen2.py takes hidden ÷ heads)
        head_dim = int(
            (config.get("head_dim") if model_type not in ("qwen2", "qwen2_moe") else None)
            or (hidden // heads if heads else 0)
        )
        kinds, window, unknown = _layer_kinds(config, model_type, layers)
        moe = "moe_intermediate_size" in config and bool(config.get("n_routed_experts") or config.get("num_experts"))
        shared = int(config.get("n_shared_experts") or 0) * int(config.get("moe_intermediate_size") or 0)
        shared = shared or int(config.get("shared_expert_intermediate_size") or 0)
        shape = cls(
            layers=layers,
            hidden=hidden,
            heads=heads,
            kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=head_dim,
            intermediate=int(config.get("intermediate_size", 0)),
            vocab=int(config.get("vocab_size", 0)),
            dtype_bytes=min(2, DTYPE_BYTES.get(dtype) or 2),  # vLLM runs a float32 checkpoint in bfloat16
            weights_bytes=0,
            experts=int(
                config.get("num_local_experts") or config.get("n_routed_experts") or config.get("num_experts") or 0
            ),
            tied_embeddings=bool(config.get("tie_word_embeddings", model_type in GEMMA)),
            attention_bias=bool(config.get("attention_bias", model_type in ("qwen2", "qwen2_moe"))),
            max_position=int(config.get("max_position_embeddings", 0)),
            quantized=isinstance(outer.get("quantization_config"), dict),
            model_type=model_type,
            layer_kinds=kinds,
            sliding_window=window,
            unknown=unknown,
            kv_lora_rank=int(config.get("kv_lora_rank") or 0) if model_type in LATENT else 0,
            qk_rope_head_dim=int(config.get("qk_rope_head_dim") or 0),
            qk_nope_head_dim=int(config.get("qk_nope_head_dim") or 0),
            q_lora_rank=int(config.get("q_lora_rank") or 0),
            v_head_dim=int(config.get("v_head_dim") or 0),
            moe_intermediate=int(config.get("moe_intermediate_size") or 0) if moe else 0,
            shared_intermediate=shared if moe else 0,
            shared_gate="shared_expert_intermediate_size" in config,
            dense_layers=min(layers, int(config.get("first_k_dense_replace") or 0)),
            expert_bias=config.get("topk_method") == "noaux_tc",
            qk_norm=model_type in ("qwen3", "qwen3_moe", "gemma3", "gemma3_text"),
            norms_per_layer=4 if model_type in ("gemma2", "gemma3", "gemma3_text") else 2,
        )
        exact = parameters(shape) * shape.dtype_bytes
        if weights_bytes is not None:  # as stored; in memory at the dtype vLLM runs it in
            exact = weights_bytes * shape.dtype_bytes // (DTYPE_BYTES.get(dtype) or 2)
        return cls(**{**asdict(shape), "weights_bytes": exact})

    @classmethod
    def from_artifact(cls, artifact: Any) -> ModelShape:
        return cls.from_config(artifact.config, weights_bytes=artifact.weights_bytes)


def _layer_kinds(config: dict, model_type: str, layers: int) -> tuple[tuple[str, ...], int, str]:
    """(each layer's kind, the window, why unknown) as vLLM decides them: ``layer_types`` where the
    config has it, else the pattern transformers fills in for Gemma, else one window for every
    layer (Mistral v0.1), which Qwen applies only with use_sliding_window."""
    if model_type and model_type not in KNOWN:  # a config naming no family reads as a Llama
        return (), 0, f"the {model_type} family (the estimator models {', '.join(sorted(KNOWN))})"
    window = int(config.get("sliding_window") or 0)
    types = config.get("layer_types")
    if isinstance(types, list) and len(types) == layers:
        kinds = tuple(SLIDING if t == "sliding_attention" and window else FULL for t in types)
    elif model_type == "gemma2" and window:
        kinds = tuple(SLIDING if (i + 1) % 2 else FULL for i in range(layers))
    elif model_type in ("gemma3", "gemma3_text") and window:
        pattern = int(config.get("sliding_window_pattern") or 6)
        kinds = tuple(SLIDING if (i + 1) % pattern else FULL for i in range(layers))
    elif model_type in QWEN and not config.get("use_sliding_window"):
        kinds = (FULL,) * layers
    elif model_type in QWEN and int(config.get("max_window_layers") or 0):
        return (), 0, "Qwen with sliding windows on some layers only (vLLM refuses it)"
    else:
        kinds = (SLIDING if window else FULL,) * layers
    return (kinds if SLIDING in kinds else ()), (window if SLIDING in kinds else 0), ""


def _attention_parameters(s: ModelShape) -> int:
    """Per layer: projections (what quantization shrinks) of the layer's attention."""
    if s.latent:
        qk = s.qk_nope_head_dim + s.qk_rope_head_dim
        q = s.hidden * s.q_lora_rank + s.q_lora_rank * s.heads * qk if s.q_lora_rank else s.hidden * s.heads * qk
        kv_a = s.hidden * (s.kv_lora_rank + s.qk_rope_head_dim)
        kv = kv_a + s.kv_lora_rank * s.heads * (s.qk_nope_head_dim + s.v_head_dim)
        return q + kv + s.heads * s.v_head_dim * s.hidden
    return s.hidden * (s.heads * s.head_dim) * 2 + s.hidden * (s.kv_heads * s.head_dim) * 2


def _mlp_parameters(s: ModelShape) -> int:
    """All layers' MLPs: dense layers, then routed experts and shared experts."""
    dense = 3 * s.hidden * s.intermediate
    if not s.experts:
        return s.layers * dense
    if not s.moe_intermediate:  # Mixtral: every layer, intermediate_size per expert
        return s.layers * dense * s.experts
    moe = 3 * s.hidden * (s.moe_intermediate * s.experts + s.shared_intermediate)
    return s.dense_layers * dense + (s.layers - s.dense_layers) * moe


def linear_parameters(s: ModelShape) -> int:
    """Parameters in the linear layers of the decoder (what quantization shrinks)."""
    return s.layers * _attention_parameters(s) + _mlp_parameters(s)


def parameters(s: ModelShape) -> int:
    """Parameter count of the decoder from its config (checked against public models)."""
    bias = (s.heads + 2 * s.kv_heads) * s.head_dim if s.attention_bias else 0
    norms = s.norms_per_layer * s.hidden + (2 * s.head_dim if s.qk_norm else 0)
    if s.latent:  # the latent's and (with a q rank) the query's own RMSNorm
        norms += s.kv_lora_rank + s.q_lora_rank
    moe_layers = s.layers - s.dense_layers if s.experts else 0
    gate = s.hidden * s.experts + (s.experts if s.expert_bias else 0) + (s.hidden if s.shared_gate else 0)
    router = moe_layers * gate
    embeddings = s.vocab * s.hidden * (1 if s.tied_embeddings else 2)
    return linear_parameters(s) + s.layers * (norms + bias) + router + embeddings + s.hidden  # + final norm
