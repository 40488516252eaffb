"""Quantize a model with llm-compressor, measure what it cost, and write a compressed-tensors
directory vLLM loads. Runs in the llm-compressor runtime: ``python quantize.py spec.json``.

Perplexity of the parent and of the quantized model is measured on held-out text in this same
process: the parent before calibration, the variant after ``oneshot`` (its weights are then the
quantized ones) and before saving (saving compresses the weights in place)."""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Runners run in a runtime environment without the console installed: the line format comes from
# fleet/protocol/runner.py by path, the one module both sides share.
sys.path.insert(0, str(HERE.parent / "protocol"))
from runner import emit  # noqa: E402


def texts(given: list[str] | None, builtin: str) -> list[str]:
    if given:
        return [t for t in given if t.strip()]
    return [p.strip() for p in (HERE / builtin).read_text().split("\n\n") if p.strip()]


def recipe_for(spec: dict) -> list:
    """llm-compressor modifiers for each scheme the console offers (fleet/job_params.py)."""
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier

    scheme, ignore = spec["scheme"], spec.get("ignore") or ["lm_head"]
    if scheme in ("gptq-w4a16", "awq-w4a16"):
        from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

        weights = QuantizationArgs(num_bits=4, type="int", symmetric=scheme == "gptq-w4a16", strategy="group",
                                   group_size=spec["group_size"])
        groups = {"group_0": QuantizationScheme(targets=["Linear"], weights=weights)}
        if scheme == "awq-w4a16":
            from llmcompressor.modifiers.awq import AWQModifier

            return [AWQModifier(config_groups=groups, ignore=ignore)]
        return [GPTQModifier(config_groups=groups, ignore=ignore)]
    if scheme == "w8a8-int8":
        from llmcompressor.modifiers.smoothquant import SmoothQuantModifier

        return [SmoothQuantModifier(smoothing_strength=spec["smoothing_strength"]),
                GPTQModifier(targets="Linear", scheme="W8A8", ignore=ignore)]
    if scheme == "fp8-dynamic":
        return [QuantizationModifier(targets="Linear", scheme="FP8_DYNAMIC", ignore=ignore)]
    raise SystemExit(f"unknown scheme {scheme!r}")


def perplexity(model, tokenizer, samples: list[str], max_len: int) -> float:
    """exp(mean negative log-likelihood per predicted token) over the held-out samples."""
    import torch

    device = next(model.parameters()).device
    total_nll, total_tokens = 0.0, 0
    with torch.no_grad():
        for text in samples:
            ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_len).input_ids.to(device)
            if ids.shape[1] < 2:
                continue
            loss = model(ids, labels=ids).loss.float().item()
            total_nll += loss * (ids.shape[1] - 1)
            total_tokens += ids.shape[1] - 1
    return math.exp(total_nll / max(1, total_tokens))


def files_of(directory: Path) -> list[dict]:
    out = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
        out.append(
            {"name": str(path.relative_to(directory)), "size": path.stat().st_size, "sha256": digest.hexdigest()}
        )
    return out


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["output_path"])
    if out.exists():
        print(f"{out} exists already; refusing to overwrite it")
        return 2
    started = time.monotonic()
    emit(progress=2, phase="loading llm-compressor")
    import torch
    from datasets import Dataset
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gpu = f" ({torch.cuda.get_device_name(0)})" if device == "cuda" else ""
    print(f"torch {torch.__version__} on {device}{gpu}")
    emit(progress=10, phase="loading the model")
    model = AutoModelForCausalLM.from_pretrained(spec["model_path"], torch_dtype="auto",
                                                 device_map="auto" if device == "cuda" else None)
    tokenizer = AutoTokenizer.from_pretrained(spec["model_path"])
    max_len = spec["max_seq_length"]
    heldout = texts(None, "heldout.txt")

    emit(progress=20, phase="perplexity of the parent")
    ppl_parent = perplexity(model, tokenizer, heldout, max_len)
    print(f"parent perplexity on {len(heldout)} held-out texts: {ppl_parent:.4f}")

    if device == "cpu":
        # AWQ pins its cached activations for faster copies to a GPU; pinning needs one (llm-compressor
        # 0.14 raises "Cannot access accelerator device"). With no GPU there is no copy to speed up.
        from llmcompressor.pipelines.cache import IntermediatesCache

        IntermediatesCache.pin_memory = lambda self, *args, **kwargs: None
    recipe = recipe_for(spec)
    kwargs: dict = {}
    if spec["scheme"] != "fp8-dynamic":  # FP8 dynamic needs no calibration data
        calibration = texts(spec.get("calibration"), "calibration.txt")[: spec["num_samples"]]
        print(f"calibrating on {len(calibration)} texts ({'uploaded' if spec.get('calibration') else 'built-in'})")
        data = Dataset.from_dict({"text": calibration}).map(
            lambda row: tokenizer(row["text"], truncation=True, max_length=max_len, add_special_tokens=False),
            remove_columns=["text"])
        kwargs = {"dataset": data, "max_seq_length": max_len, "num_calibration_samples": len(calibration)}
    emit(progress=30, phase="quantizing")
    oneshot(model=model, recipe=recipe, **kwargs)

    emit(progress=75, phase="perplexity of the variant")
    ppl_variant = perplexity(model, tokenizer, heldout, max_len)
    print(f"variant perplexity: {ppl_variant:.4f} (parent {ppl_parent:.4f})")

    emit(progress=85, phase="saving")
    tmp = out.with_name(out.name + ".partial")
    model.save_pretrained(tmp, save_compressed=True)
    tokenizer.save_pretrained(tmp)
    recipe_file = tmp / "recipe.yaml"
    if not recipe_file.exists():
        recipe_file.write_text("\n".join(repr(m) for m in recipe) + "\n")
    os.replace(tmp, out)  # the directory appears whole or not at all

    emit(progress=95, phase="checksums")
    files = files_of(out)
    emit(progress=100, phase="done", result={
        "output_path": str(out), "scheme": spec["scheme"], "recipe": (out / "recipe.yaml").read_text(),
        "files": files, "size_bytes": sum(f["size"] for f in files),
        "perplexity_parent": round(ppl_parent, 4), "perplexity_variant": round(ppl_variant, 4),
        "perplexity_delta": round(ppl_variant - ppl_parent, 4),
        "perplexity_delta_pct": round(100 * (ppl_variant - ppl_parent) / ppl_parent, 3),
        "heldout_texts": len(heldout), "device": device, "seconds": round(time.monotonic() - started, 2)})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
