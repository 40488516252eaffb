"""Typed, validated parameters of quantization and benchmark jobs. Each refusal is a ServiceError
naming the field and what to change; nothing is queued before every parameter passed."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError

from console.actions import ServiceError
from fleet.catalog.models import ModelArtifact, slug_validator


@dataclass(frozen=True)
class Scheme:
    label: str
    bits: int
    weight_type: str  # "int" or "float"
    calibrated: bool
    grouped: bool  # 4-bit schemes quantize weights in groups along the input dimension


SCHEMES: dict[str, Scheme] = {
    "gptq-w4a16": Scheme("GPTQ W4A16 (4-bit int weights, 16-bit activations)", 4, "int", True, True),
    "awq-w4a16": Scheme("AWQ W4A16 (activation-aware 4-bit int weights)", 4, "int", True, True),
    "w8a8-int8": Scheme("W8A8 int8 (SmoothQuant + GPTQ: 8-bit weights and activations)", 8, "int", True, False),
    "fp8-dynamic": Scheme(
        "FP8 dynamic (8-bit float weights, per-token activation scales; no calibration)", 8, "float", False, False
    ),
}
GROUP_SIZES = (32, 64, 128)
CALIBRATION_MAX_BYTES = 2 * 1024 * 1024
BENCH_MODES = ("concurrency", "rate")


def _int(params: dict, name: str, default: int, low: int, high: int) -> int:
    value = params.get(name, default)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ServiceError(f"{name.replace('_', ' ').capitalize()} must be a whole number from {low} to {high}.", name)
    return value


def _float(params: dict, name: str, default: float, low: float, high: float) -> float:
    value = params.get(name, default)
    try:
        value = float(value)
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(params.get(name), bool) or not low <= value <= high:
        raise ServiceError(f"{name.replace('_', ' ').capitalize()} must be a number from {low} to {high}.", name)
    return value


def calibration_samples(data: bytes | None) -> list[str]:
    """An uploaded calibration file: UTF-8 text, samples separated by blank lines (or one per line)."""
    if data is None:
        raise ServiceError(
            "Choose a calibration file to upload, or use the built-in calibration set.", "calibration_file"
        )
    if len(data) > CALIBRATION_MAX_BYTES:
        raise ServiceError(
            f"The calibration file is {len(data):,} bytes; the limit is {CALIBRATION_MAX_BYTES:,}.", "calibration_file"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ServiceError("The calibration file is not UTF-8 text.", "calibration_file") from None
    text = text.replace("\r\n", "\n")
    samples = [p.strip() for p in text.split("\n\n") if p.strip()]
    if len(samples) == 1:
        samples = [line.strip() for line in text.splitlines() if line.strip()]
    if not samples:
        raise ServiceError("The calibration file holds no text.", "calibration_file")
    return samples


def quantize(
    model: ModelArtifact, params: Any, calibration_file: bytes | None = None, calibration_name: str = ""
) -> tuple[dict, list[str] | None]:
    """(clean params to store, uploaded calibration samples or None)."""
    if not isinstance(params, dict):
        raise ServiceError("Parameters must be an object.", "params")
    unknown = set(params) - {
        "scheme",
        "bits",
        "group_size",
        "calibration",
        "num_samples",
        "max_seq_length",
        "smoothing_strength",
        "name",
        "node",
    }
    if unknown:
        raise ServiceError(f"Unknown parameter(s): {', '.join(sorted(unknown))}.", sorted(unknown)[0])
    name = params.get("scheme")
    if name not in SCHEMES:
        raise ServiceError(f"Unknown scheme {name!r}; use one of {', '.join(SCHEMES)}.", "scheme")
    scheme = SCHEMES[name]
    if params.get("bits") not in (None, ""):
        bits = _int(params, "bits", scheme.bits, 1, 16)
        if bits != scheme.bits:
            fits = [k for k, s in SCHEMES.items() if s.bits == bits]
            raise ServiceError(
                f"{name} quantizes weights to {scheme.bits} bits, not {bits}"
                + (f": for {bits}-bit weights use {' or '.join(fits)}." if fits else "."),
                "bits",
            )
    if model.quantization or model.is_variant:
        raise ServiceError(f"{model.name} is already quantized; quantize its unquantized parent.", "model")
    clean: dict[str, Any] = {
        "scheme": name,
        "bits": scheme.bits,
        "max_seq_length": _int(params, "max_seq_length", 512, 16, 8192),
    }
    if scheme.grouped:
        group = _int(params, "group_size", 128, 1, 1024)
        if group not in GROUP_SIZES:
            raise ServiceError(f"Group size must be one of {', '.join(map(str, GROUP_SIZES))}.", "group_size")
        for dim, what in ((model.hidden_size, "hidden size"), (model.intermediate_size, "intermediate size")):
            if dim and dim % group:
                raise ServiceError(
                    f"Group size {group} does not divide the model's {what} ({dim}); "
                    f"choose one of {', '.join(str(g) for g in GROUP_SIZES if dim % g == 0) or 'none'}.",
                    "group_size",
                )
        clean["group_size"] = group
    if name == "w8a8-int8":
        clean["smoothing_strength"] = _float(params, "smoothing_strength", 0.8, 0.0, 1.0)
    source = params.get("calibration") or ("upload" if calibration_file is not None else "builtin")
    samples = None
    if scheme.calibrated:
        if source not in ("builtin", "upload"):
            raise ServiceError(
                "Calibration is “builtin” (the set shipped with the console) or “upload”.", "calibration"
            )
        clean["num_samples"] = _int(params, "num_samples", 64, 1, 4096)
        if source == "upload":
            samples = calibration_samples(calibration_file)
            clean["calibration"] = {
                "source": "upload",
                "file": calibration_name[:200],
                "samples": len(samples),
                "sha256": hashlib.sha256(calibration_file or b"").hexdigest(),
            }
        else:
            clean["calibration"] = {"source": "builtin"}
    elif calibration_file is not None or source == "upload":
        raise ServiceError(f"{name} needs no calibration data; leave the calibration file out.", "calibration_file")
    variant = params.get("name") or f"{model.name}-{name}"
    try:
        slug_validator(variant)
    except ValidationError as exc:
        raise ServiceError(f"Variant name {variant!r}: {exc.messages[0]}", "name") from None
    if ModelArtifact.objects.filter(name=variant).exists():
        raise ServiceError(f"A model named {variant!r} exists already; give the variant another name.", "name")
    clean["name"] = variant
    return clean, samples


def benchmark(params: Any, max_model_len: int) -> dict:
    if not isinstance(params, dict):
        raise ServiceError("Parameters must be an object.", "params")
    unknown = set(params) - {"input_len", "output_len", "num_prompts", "mode", "levels", "seed"}
    if unknown:
        raise ServiceError(f"Unknown parameter(s): {', '.join(sorted(unknown))}.", sorted(unknown)[0])
    mode = params.get("mode", "concurrency")
    if mode not in BENCH_MODES:
        raise ServiceError(
            f"Mode is “concurrency” (requests in flight) or “rate” (requests per second), not {mode!r}.", "mode"
        )
    clean = {
        "mode": mode,
        "input_len": _int(params, "input_len", 128, 1, 32768),
        "output_len": _int(params, "output_len", 64, 1, 8192),
        "num_prompts": _int(params, "num_prompts", 32, 1, 5000),
        "seed": _int(params, "seed", 0, 0, 2**31),
    }
    if clean["input_len"] + clean["output_len"] > max_model_len:
        raise ServiceError(
            f"Input plus output length ({clean['input_len'] + clean['output_len']}) exceeds the "
            f"deployment's context of {max_model_len} tokens.",
            "input_len",
        )
    levels = params.get("levels", [1, 4])
    if isinstance(levels, str):
        levels = [p.strip() for p in levels.split(",") if p.strip()]
    if not isinstance(levels, list) or not 1 <= len(levels) <= 8:
        raise ServiceError("Levels: a list of 1 to 8 concurrencies or request rates, e.g. [1, 4, 16].", "levels")
    out = []
    for value in levels:
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if (
            isinstance(value, bool)
            or not (0 < number <= (256 if mode == "concurrency" else 1000))
            or (mode == "concurrency" and number != int(number))
        ):
            raise ServiceError(
                f"Level {value!r}: a {mode} must be "
                + (
                    "a whole number from 1 to 256."
                    if mode == "concurrency"
                    else "a rate above 0 and up to 1000 requests/s."
                ),
                "levels",
            )
        out.append(int(number) if mode == "concurrency" else number)
    clean["levels"] = sorted(set(out))
    return clean


__all__ = ["SCHEMES", "GROUP_SIZES", "Scheme", "quantize", "benchmark", "calibration_samples"]
