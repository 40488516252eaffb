"""A tiny process supervisor: start named commands, prefix their output, stop them all together.

Each child runs in its own process group, so stopping also reaches its children (Celery's pool)
and Ctrl-C in the terminal reaches only us: we stop the children in order, not all at once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class Program:
    name: str
    argv: Sequence[str]
    env: dict[str, str] = field(default_factory=dict, repr=False)  # added to the supervisor's own
    proc: subprocess.Popen | None = field(default=None, repr=False)


class Supervisor:
    def __init__(self, programs: list[Program], env: dict[str, str], grace: float = 10.0) -> None:
        self.programs = programs
        self.env = env
        self.grace = grace
        self.stopping = threading.Event()
        self.width = max(len(p.name) for p in programs)

    def _pump(self, program: Program) -> None:
        assert program.proc and program.proc.stdout
        for line in program.proc.stdout:
            sys.stdout.write(f"{program.name:<{self.width}} | {line}")
            sys.stdout.flush()

    def start(self) -> None:
        for program in self.programs:
            program.proc = subprocess.Popen(
                list(program.argv),
                env=self.env | program.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                bufsize=1,
                start_new_session=True,
            )
            threading.Thread(target=self._pump, args=(program,), daemon=True).start()

    def run(self) -> int:
        """Start everything; return when asked to stop (SIGINT/SIGTERM) or when a child dies."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.stopping.set())
        self.start()
        code = 0
        while not self.stopping.wait(0.5):
            for program in self.programs:
                if program.proc and program.proc.poll() is not None:
                    print(
                        f"supervisor: {program.name} exited with status {program.proc.returncode}; stopping all",
                        flush=True,
                    )
                    code = 1
                    self.stopping.set()
        self.stop()
        return code

    def stop(self) -> None:
        live = [(p, p.proc) for p in self.programs if p.proc and p.proc.poll() is None]
        for _program, proc in live:
            _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        for program, proc in live:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"supervisor: {program.name} ignored SIGTERM; killing it", flush=True)
        for program in self.programs:  # whatever is left in any group (pool children, stragglers)
            if program.proc:
                _signal_group(program.proc.pid, signal.SIGKILL)
                program.proc.wait()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
