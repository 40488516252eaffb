"""The supervisor behind ``make run``: start named commands, restart the one that dies, stop them
all only when asked.

A child that exits is restarted after a backoff (0.5 s, doubling to 30 s) while its siblings keep
serving; one that dies again and again within seconds of starting is given up on, loudly, so a
broken configuration does not spin. Servers it did not start itself (the embedded PostgreSQL and
Redis, which daemonise) are watched and brought back the same way. Each part's state is written to
``supervisor.json`` in the data dir, where ``/healthz`` reads it.

Each child runs in its own process group, so stopping also reaches its children (Celery's pool)
and Ctrl-C in the terminal reaches only us: we stop the children in order, not all at once.

Why not supervisord or circus: both are a daemon with a config file and an RPC port of their own,
and neither can watch the embedded servers (they daemonise, so they are not its children). What is
needed — restart with backoff, give up, stop in order, report — is the ~150 lines below.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

SUPERVISOR_STATE = "supervisor.json"  # in the data dir
BACKOFF_S = (0.5, 30.0)  # first delay, ceiling
FAST_S = 10.0  # a run shorter than this counts as a failure to start
GIVE_UP_AFTER = 5  # fast failures in a row


@dataclass
class Program:
    name: str
    argv: Sequence[str]
    env: dict[str, str] = field(default_factory=dict, repr=False)  # added to the supervisor's own
    proc: subprocess.Popen | None = field(default=None, repr=False)
    state: str = "stopped"  # running | backoff | fatal | stopped
    restarts: int = 0
    fast_failures: int = 0
    started_at: float = 0.0
    next_start: float = 0.0
    last_exit: int | None = None


@dataclass
class Watch:
    """A server we did not start as a child: ``alive`` is polled, ``revive`` brings it back."""

    name: str
    alive: Callable[[], bool]
    revive: Callable[[], None]
    state: str = "running"
    restarts: int = 0
    fast_failures: int = 0
    started_at: float = field(default_factory=time.monotonic)
    next_start: float = 0.0


class Supervisor:
    def __init__(
        self,
        programs: list[Program],
        env: dict[str, str],
        grace: float = 10.0,
        watches: Sequence[Watch] = (),
        state_file: Path | None = None,
        out: TextIO | None = None,
    ) -> None:
        self.programs = programs
        self.watches = list(watches)
        self.env = env
        self.grace = grace
        self.state_file = state_file
        self.out = out or sys.stdout  # the children's lines, prefixed with their names
        self.stopping = threading.Event()
        self.width = max(len(name) for name in [p.name for p in programs] + [w.name for w in self.watches])

    def _say(self, text: str) -> None:
        print(f"supervisor: {text}", flush=True)

    def _pump(self, program: Program, proc: subprocess.Popen) -> None:
        assert proc.stdout
        for line in proc.stdout:
            self.out.write(f"{program.name:<{self.width}} | {line}")
            self.out.flush()

    def _spawn(self, program: Program) -> None:
        program.proc = proc = subprocess.Popen(
            list(program.argv),
            env=self.env | program.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        program.state, program.started_at = "running", time.monotonic()
        threading.Thread(target=self._pump, args=(program, proc), daemon=True).start()

    def start(self) -> None:
        for program in self.programs:
            self._spawn(program)
        self._write_state()

    def _failed(self, part: Program | Watch, what: str) -> None:
        """Count a failure; schedule the restart or give up."""
        now = time.monotonic()
        part.fast_failures = part.fast_failures + 1 if now - part.started_at < FAST_S else 1
        if part.fast_failures >= GIVE_UP_AFTER:
            part.state = "fatal"
            self._say(
                f"{part.name} {what}, {part.fast_failures} times in a row within {FAST_S:.0f} s of starting; "
                f"giving up on it (the others keep running). Fix the cause above and start the console again."
            )
            return
        delay = min(BACKOFF_S[1], BACKOFF_S[0] * 2 ** (part.fast_failures - 1))
        part.state, part.next_start = "backoff", now + delay
        self._say(f"{part.name} {what}; restarting it in {delay:.1f} s (the others keep running)")

    def tick(self) -> None:
        """One round: notice exits, restart what is due, check the watched servers."""
        changed = False
        now = time.monotonic()
        for program in self.programs:
            proc = program.proc
            if program.state == "running" and proc is not None and proc.poll() is not None:
                _signal_group(proc.pid, signal.SIGKILL)  # its orphans (a pool child) go with it
                program.last_exit = proc.returncode
                self._failed(program, f"exited with status {proc.returncode}")
                changed = True
            elif program.state == "backoff" and now >= program.next_start:
                program.restarts += 1
                self._spawn(program)
                changed = True
        for watch in self.watches:
            if watch.state == "running" and not watch.alive():
                self._failed(watch, "is not answering")
                changed = True
            elif watch.state == "backoff" and now >= watch.next_start:
                watch.restarts += 1
                watch.started_at = time.monotonic()
                try:
                    watch.revive()
                    watch.state = "running"
                    self._say(f"{watch.name} is back")
                except Exception as exc:  # noqa: BLE001 -- reported, and tried again after the backoff
                    self._failed(watch, f"could not be restarted ({exc})")
                changed = True
        if changed:
            self._write_state()

    def run(self) -> int:
        """Start everything; return when asked to stop (SIGINT/SIGTERM)."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.stopping.set())
        self.start()
        while not self.stopping.wait(0.2):
            self.tick()
        self.stop()
        return 0

    def states(self) -> dict[str, dict]:
        parts: dict[str, dict] = {}
        for p in self.programs:
            pid = p.proc.pid if p.proc is not None and p.state == "running" else None
            parts[p.name] = {"state": p.state, "pid": pid, "restarts": p.restarts, "last_exit": p.last_exit}
        for w in self.watches:
            parts[w.name] = {"state": w.state, "pid": None, "restarts": w.restarts, "last_exit": None}
        return parts

    def _write_state(self) -> None:
        if self.state_file is None:
            return
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "at": time.time(), "parts": self.states()}))
        tmp.replace(self.state_file)

    def stop(self) -> None:
        live = [(p, p.proc) for p in self.programs if p.proc and p.proc.poll() is None]
        for _program, proc in live:
            _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        for program, proc in live:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._say(f"{program.name} ignored SIGTERM; killing it")
        for program in self.programs:  # whatever is left in any group (pool children, stragglers)
            if program.proc:
                _signal_group(program.proc.pid, signal.SIGKILL)
                program.proc.wait()
            program.state = "stopped"
        self._write_state()
        if self.state_file is not None:
            self.state_file.unlink(missing_ok=True)


def read_state(path: Path) -> dict | None:
    """What a running supervisor last wrote, or None when none runs for this data dir."""
    try:
        state = json.loads(path.read_text())
        os.kill(int(state["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return state


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
