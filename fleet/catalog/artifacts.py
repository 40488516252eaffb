"""Reading a model directory in Hugging Face layout: where it may be, what config.json says, and
exactly what the safetensors headers hold. Every refusal is an ``ArtifactError`` whose message
names the problem and the file; nothing here writes.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings

# Bytes per element of each safetensors dtype.
DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "U16": 2,
    "U32": 4,
    "U64": 8,
    "BOOL": 1,
}
# Architectures the estimator knows the shape of (decoder-only, llama-like attention).
KNOWN_ARCHITECTURES = {
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "MixtralForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
    "Qwen2MoeForCausalLM",
    "Qwen3MoeForCausalLM",
    "GemmaForCausalLM",
    "Gemma2ForCausalLM",
    "Phi3ForCausalLM",
    "GraniteForCausalLM",
    "OlmoForCausalLM",
    "InternLM2ForCausalLM",
    "DeepseekForCausalLM",
}
MAX_HEADER = 100 * 1024 * 1024  # safetensors refuses headers above 100 MB too
TOKENIZER_FILES = {
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
}


class ArtifactError(ValueError):
    def __init__(self, message: str, field: str = "path") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


@dataclass
class Inspection:
    path: Path
    facts: dict[str, Any]  # ModelArtifact fields
    files: list[tuple[str, str, int]]  # (relative name, kind, size)
    warnings: list[str] = field(default_factory=list)


def model_roots() -> list[Path]:
    return [Path(r).resolve() for r in settings.FLEET_MODEL_ROOTS]


def resolve(path: str) -> Path:
    """An absolute path, or one relative to the first model root; it must stay inside a root."""
    if not isinstance(path, str) or not path.strip() or "\x00" in path:
        raise ArtifactError("Give the model's directory.")
    roots = model_roots()
    given = Path(path.strip())
    candidate = given if given.is_absolute() else roots[0] / given
    literal = Path(os.path.normpath(candidate))
    inside = [r for r in roots if literal == r or literal.is_relative_to(r)]
    if not inside:
        raise ArtifactError(f"{path} is outside the model roots ({', '.join(map(str, roots))}).")
    real = candidate.resolve()
    if not any(real == r or real.is_relative_to(r) for r in roots):
        raise ArtifactError(f"{path} is a symlink that leads outside the model roots (to {real}).")
    if not real.is_dir():
        raise ArtifactError(f"{path} is not a directory (or does not exist).")
    return real


def read_safetensors_header(file: Path) -> dict[str, Any]:
    """The tensors of one file: {name: {"dtype", "shape", "data_offsets"}}; checked against the file."""
    size = file.stat().st_size
    with file.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ArtifactError(f"{file.name}: too short to be a safetensors file.")
        (length,) = struct.unpack("<Q", head)
        if length > min(MAX_HEADER, size - 8):
            raise ArtifactError(f"{file.name}: corrupt safetensors header (says {length} bytes, file has {size}).")
        raw = f.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{file.name}: corrupt safetensors header (not JSON: {exc}).") from None
    if not isinstance(header, dict):
        raise ArtifactError(f"{file.name}: corrupt safetensors header (not an object).")
    data_size = size - 8 - length
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, end) = info["dtype"], info["shape"], info["data_offsets"]
            elements = math.prod(shape)
            ok = (
                dtype in DTYPE_BYTES
                and all(isinstance(d, int) and d >= 0 for d in shape)
                and 0 <= start <= end <= data_size
                and end - start == elements * DTYPE_BYTES[dtype]
            )
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise ArtifactError(
                f"{file.name}: corrupt safetensors header (tensor {name!r} has a bad dtype, shape or offsets)."
            )
        tensors[name] = info
    return tensors


def _config(directory: Path) -> dict[str, Any]:
    file = directory / "config.json"
    if not file.is_file():
        raise ArtifactError(f"{directory.name}: config.json is missing; is this a Hugging Face model directory?")
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{directory.name}/config.json is not valid JSON ({exc}).") from None
    if not isinstance(config, dict):
        raise ArtifactError(f"{directory.name}/config.json must hold a JSON object.")
    return config


def _int(config: dict, *keys: str, default: int = 0) -> int:
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return default


def quantization_of(config: dict) -> dict[str, Any]:
    """method, bits and group size from quantization_config (GPTQ/AWQ style or compressed-tensors)."""
    q = config.get("quantization_config")
    if not isinstance(q, dict):
        return {}
    out: dict[str, Any] = {"method": str(q.get("quant_method", "unknown"))}
    if "bits" in q:
        out["bits"], out["group_size"] = q.get("bits"), q.get("group_size")
    for group in (q.get("config_groups") or {}).values():  # compressed-tensors (llm-compressor)
        weights = (group or {}).get("weights") or {}
        activations = (group or {}).get("input_activations") or {}
        out.update(
            {
                "bits": weights.get("num_bits"),
                "group_size": weights.get("group_size"),
                "type": weights.get("type"),
                "activation_bits": activations.get("num_bits"),
            }
        )
        break
    if q.get("format"):
        out["format"] = q["format"]
    return out


def architecture_facts(config: dict) -> dict[str, Any]:
    """The shape facts of config.json as ModelArtifact fields (missing ones are 0/empty)."""
    architectures = config.get("architectures") or []
    heads = _int(config, "num_attention_heads", "n_head")
    hidden = _int(config, "hidden_size", "n_embd", "d_model")
    return {
        "architecture": str(architectures[0]) if architectures else "",
        "model_type": str(config.get("model_type", "")),
        "num_layers": _int(config, "num_hidden_layers", "n_layer", "num_layers"),
        "hidden_size": hidden,
        "intermediate_size": _int(config, "intermediate_size", "ffn_dim"),
        "num_attention_heads": heads,
        "num_kv_heads": _int(config, "num_key_value_heads", default=heads),
        "head_dim": _int(config, "head_dim", default=hidden // heads if heads else 0),
        "vocab_size": _int(config, "vocab_size"),
        "max_position_embeddings": _int(config, "max_position_embeddings", "n_positions"),
        "num_experts": _int(config, "num_local_experts", "num_experts"),
        "rope_scaling": config.get("rope_scaling") if isinstance(config.get("rope_scaling"), dict) else None,
        "torch_dtype": str(config.get("torch_dtype") or config.get("dtype") or ""),
        "quantization": quantization_of(config),
    }


def _kind(name: str) -> str:
    if name.endswith(".safetensors"):
        return "weights"
    if name in TOKENIZER_FILES:
        return "tokenizer"
    if name.endswith(".json"):
        return "config"
    return "other"


def inspect(directory: Path) -> Inspection:
    """Everything the registry keeps about one model directory (already resolved by ``resolve``)."""
    config = _config(directory)
    facts = architecture_facts(config)
    warnings = []
    if not facts["architecture"]:
        raise ArtifactError(f'{directory.name}/config.json names no architecture ("architectures" is missing).')
    facts["architecture_known"] = facts["architecture"] in KNOWN_ARCHITECTURES
    if not facts["architecture_known"]:
        warnings.append(
            f"Unknown architecture {facts['architecture']}: registered, but memory estimates "
            "assume a llama-like decoder and may be off."
        )
    for key in ("num_layers", "hidden_size", "num_attention_heads", "vocab_size"):
        if not facts[key]:
            warnings.append(f"config.json gives no {key}; estimates for this model are incomplete.")
    roots = model_roots()
    dtypes: dict[str, int] = {}  # parameters per dtype
    files, parameters, weights_bytes = [], 0, 0
    for file in sorted(directory.rglob("*")):
        real = file.resolve()
        if not any(real.is_relative_to(r) for r in roots):
            raise ArtifactError(f"{file.relative_to(directory)} is a symlink that leads outside the model roots.")
        if not real.is_file():
            continue
        name = str(file.relative_to(directory))
        files.append((name, _kind(file.name), real.stat().st_size))
        if file.name.endswith(".safetensors"):
            for info in read_safetensors_header(real).values():
                n = math.prod(info["shape"])
                dtypes[info["dtype"]] = dtypes.get(info["dtype"], 0) + n
                parameters += n
                weights_bytes += n * DTYPE_BYTES[info["dtype"]]
    if not any(kind == "weights" for _n, kind, _s in files):
        raise ArtifactError(f"{directory.name} holds no *.safetensors weights.")
    if not any(kind == "tokenizer" for _n, kind, _s in files):
        warnings.append("No tokenizer files: vLLM needs a tokenizer to serve this model.")
    facts.update(parameter_count=parameters, weights_bytes=weights_bytes, dtypes=dtypes, config=config)
    return Inspection(directory, facts, files, warnings)
