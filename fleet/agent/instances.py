"""vLLM processes on this node: start, watch, restart, stop, and re-adopt after an agent restart.

Each process runs in its own session (process group), writes straight to its log file (so it
outlives the agent), and is recorded in a state file; a restarted agent adopts every recorded
process that still runs. Readiness: /health answers 200 and /v1/models lists the served name.
A crash restarts after a growing delay; a permanent cause (fleet.protocol.diagnosis) or K crashes within
the window make the instance Failed. Every change is reported to the console."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from fleet.protocol import runtimes
from fleet.protocol import vllm as vllm_options
from fleet.protocol.diagnosis import diagnose

log = logging.getLogger("fleet.agent")
CRASH_LIMIT, CRASH_WINDOW_S = 5, 300.0
STOP_GRACE_S = float(os.environ.get("FLEET_STOP_GRACE_S", "10"))
DRAIN_SETTLE_S = 1.0
CPU_BIND = "VLLM_CPU_OMP_THREADS_BIND"
LOG_ROTATE_BYTES = 20 * 1024 * 1024
METRICS = {
    "vllm:num_requests_running": "running",
    "vllm:num_requests_waiting": "waiting",
    "vllm:kv_cache_usage_perc": "kv_cache_usage",
    "vllm:generation_tokens_total": "generation_tokens",
    "vllm:prompt_tokens_total": "prompt_tokens",
}


@dataclass
class Managed:
    id: int
    served: str
    host: str
    port: int
    argv: list[str]
    env: dict[str, str]
    log_path: str
    pid: int | None = None
    created: float = 0.0  # the process's create_time, to tell it from a reused pid
    state: str = "pending"
    restarts: int = 0
    crashes: list[float] = field(default_factory=list)
    stop_requested: bool = False
    next_start: float | None = None
    stop_deadline: float | None = None
    drain_until: float | None = None  # stopping: SIGTERM once no call runs or waits, or at this time
    drain_from: float = 0.0
    log_offset: int = 0
    attempt_offset: int = 0  # where this start's output begins in the log: diagnosis reads all of it
    last_probe: float = 0.0
    pinned: bool = False  # the process (not only vLLM's worker) is kept on its VLLM_CPU_OMP_THREADS_BIND core


def _get(url: str, timeout: float = 0.5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except OSError:
        return 0, b""


def kill_group(pid: int | None, sig: int) -> None:
    """Signal the process group ``pid`` leads (each vLLM process and job runner starts its own
    session); gone already, or never started, is fine."""
    if pid is None:  # never started
        return
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError, TypeError):
        pass


class InstanceSupervisor:
    def __init__(
        self, state_dir: Path, report: Callable[[dict], None], log_lines: Callable[[int, list[str]], None]
    ) -> None:
        self.state_file = Path(state_dir) / "instances.json"
        self.log_dir = Path(state_dir) / "logs"
        self.report, self.log_lines = report, log_lines
        self.managed: dict[int, Managed] = {}
        self.children: dict[int, subprocess.Popen] = {}
        self.lock = threading.RLock()

    # --- state file -------------------------------------------------------------------------
    def _save(self) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({i: asdict(m) for i, m in self.managed.items()}))
        tmp.replace(self.state_file)

    def adopt(self) -> list[int]:
        """Take over the processes a previous agent started; forget those that are gone."""
        try:
            saved = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return []
        adopted = []
        with self.lock:
            for raw in saved.values():
                m = Managed(**raw)
                if m.pid and self._alive(m):
                    self.managed[m.id] = m
                    adopted.append(m.id)
                    log.info("adopted instance %s (pid %s)", m.id, m.pid)
                elif not m.stop_requested:
                    self.managed[m.id] = m  # it died while no agent watched: handled as a crash
                    m.pid = None
                    self._crashed(m, None)
            self._save()
        return adopted

    def _alive(self, m: Managed) -> bool:
        child = self.children.get(m.id)
        if child is not None:
            return child.poll() is None
        try:
            proc = psutil.Process(m.pid)
            return abs(proc.create_time() - m.created) < 1 and proc.status() != psutil.STATUS_ZOMBIE
        except (psutil.Error, TypeError):
            return False

    # --- commands (idempotent, keyed by instance id) ----------------------------------------
    def start(self, spec: dict) -> None:
        with self.lock:
            current = self.managed.get(spec["id"])
            if current is not None and not current.stop_requested and (current.pid is None or self._alive(current)):
                return  # already ours: a repeated command changes nothing
            engine, _, version = spec["options"]["runtime"].partition("==")
            try:
                python = str(runtimes.python(engine, version))
            except runtimes.RuntimeMissing:  # install it first (minutes), then start
                self.report({"instance": spec["id"], "state": "starting", "cause": f"installing {engine} {version}"})
                threading.Thread(target=self._install_then_start, args=(engine, version, spec), daemon=True).start()
                return
            self.log_dir.mkdir(parents=True, exist_ok=True)
            m = Managed(
                id=spec["id"],
                served=spec["served"],
                host=spec["host"],
                port=spec["port"],
                argv=vllm_options.argv(
                    python, spec["model_path"], spec["served"], spec["host"], spec["port"], spec["options"]
                ),
                env=vllm_options.environment(spec["options"], spec.get("gpus", [])) | self._cpu_binding(spec),
                log_path=str(self.log_dir / f"instance-{spec['id']}.log"),
            )
            # Beside a sibling, the whole process stays on its core: a vLLM worker spins on its own,
            # and a process moved onto that core (torch probes every allowed core as it is imported)
            # was seen to wait there for minutes.
            m.pinned = bool(self._siblings(m.id)) and CPU_BIND in m.env
            self.managed[m.id] = m
            self._spawn(m)

    def _cpu_binding(self, spec: dict) -> dict[str, str]:
        """vllm-cpu binds its worker to core 0 unless told: a second instance there starves. Each
        instance on a CPU node gets the core its siblings use least."""
        if spec.get("gpus"):
            return {}
        cores = sorted(os.sched_getaffinity(0))
        used = [m.env.get(CPU_BIND) for m in self._siblings(spec["id"])]
        return {CPU_BIND: str(min(cores, key=lambda core: used.count(str(core))))}

    def _siblings(self, instance_id: int) -> list[Managed]:
        return [m for m in self.managed.values() if not m.stop_requested and m.id != instance_id]

    def _install_then_start(self, engine: str, version: str, spec: dict) -> None:
        try:
            runtimes.ensure(engine, version, log=lambda line: self.log_lines(spec["id"], [line]))
        except Exception as exc:
            self.report(
                {
                    "instance": spec["id"],
                    "state": "failed",
                    "cause": "Runtime could not be installed",
                    "remedy": f"{exc}"[:400] + " — check FLEET_PIP_INDEX_URL or FLEET_WHEEL_DIR on the node.",
                }
            )
            return
        self.start(spec)

    def stop(self, instance_id: int, drain_s: float = 0.0) -> None:
        """Stop the instance; with ``drain_s``, a Ready one first finishes the calls it has (the
        console stopped sending it more), up to ``drain_s`` seconds."""
        with self.lock:
            m = self.managed.get(instance_id)
            if m is None:
                self.report({"instance": instance_id, "state": "stopped"})
                return
            if m.stop_requested:
                return
            m.stop_requested, m.next_start = True, None
            now = time.monotonic()
            if m.state == "ready" and drain_s > 0 and m.pid and self._alive(m):
                m.drain_from, m.drain_until = now, now + min(float(drain_s), 3600.0)
            else:
                self._terminate(m, now)
            self._save()

    def _terminate(self, m: Managed, now: float) -> None:
        m.drain_until, m.stop_deadline = None, now + STOP_GRACE_S
        if m.pid and self._alive(m):
            self._signal(m, signal.SIGTERM)

    def _drained(self, m: Managed, now: float) -> bool:
        """No call runs or waits in it (vLLM's own gauges), or its drain time is up. The first
        second is always waited: a gateway may have picked it just before it left the routes."""
        if m.drain_until is None or now >= m.drain_until:
            return True
        if now - m.drain_from < DRAIN_SETTLE_S or now - m.last_probe < 0.5:
            return False
        m.last_probe = now
        figures = self._figures(m)
        return figures is not None and figures.get("running", 0.0) + figures.get("waiting", 0.0) == 0

    def _spawn(self, m: Managed) -> None:
        fd = os.open(m.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        m.attempt_offset = os.fstat(fd).st_size
        try:
            proc = subprocess.Popen(
                m.argv,
                env=os.environ | m.env,
                stdout=fd,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            os.close(fd)
        if m.pinned:  # before the child imports anything (exec has happened; torch takes seconds)
            with contextlib.suppress(OSError):
                os.sched_setaffinity(proc.pid, {int(m.env[CPU_BIND])})
        self.children[m.id] = proc
        m.pid, m.created, m.state, m.next_start = proc.pid, psutil.Process(proc.pid).create_time(), "starting", None
        self._save()
        self.report({"instance": m.id, "state": "starting", "pid": m.pid, "restarts": m.restarts})

    def _signal(self, m: Managed, sig: int) -> None:
        kill_group(m.pid, sig)  # vLLM's engine core and workers too

    # --- the watch loop -----------------------------------------------------------------------
    def run(self, stop: threading.Event, every: float = 0.2) -> None:
        while not stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("instance watch failed")
            stop.wait(every)

    def tick(self) -> None:
        now = time.monotonic()
        with self.lock:
            for m in list(self.managed.values()):
                self._stream_log(m)
                alive = bool(m.pid) and self._alive(m)
                if m.stop_requested:
                    if not alive:
                        self._forget(m, "stopped")
                    elif m.drain_until is not None:
                        if self._drained(m, now):
                            self._terminate(m, now)
                    elif m.stop_deadline and now > m.stop_deadline:
                        self._signal(m, signal.SIGKILL)
                    continue
                if m.pid and not alive:
                    child = self.children.pop(m.id, None)
                    self._crashed(m, child.returncode if child is not None else None)
                elif m.pid is None and m.next_start is not None and now >= m.next_start:
                    m.restarts += 1
                    self._spawn(m)
                elif m.state == "starting" and now - m.last_probe > 0.5:
                    m.last_probe = now
                    self._probe(m)

    def _probe(self, m: Managed) -> None:
        base = f"http://{m.host}:{m.port}"
        if _get(base + "/health")[0] != 200:
            return
        status, body = _get(base + "/v1/models")
        try:
            served = {d["id"] for d in json.loads(body)["data"]} if status == 200 else set()
        except (ValueError, KeyError, TypeError):
            served = set()
        if m.served in served:
            m.state = "ready"
            self._save()
            self.report({"instance": m.id, "state": "ready", "pid": m.pid, "restarts": m.restarts})

    def _tail(self, m: Managed, limit: int = 4 * 1024 * 1024) -> str:
        """This start's whole output (up to the last 4 MiB): the root cause may sit far above the
        tracebacks of the processes that died after it."""
        try:
            with open(m.log_path, "rb") as f:
                size = os.path.getsize(m.log_path)
                start = m.attempt_offset if m.attempt_offset <= size else 0
                f.seek(max(start, size - limit))
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def _crashed(self, m: Managed, exit_code: int | None) -> None:
        found = diagnose(exit_code, self._tail(m))
        if m.pid:  # the API server is gone; its engine core and workers (same group) must go too
            self._signal(m, signal.SIGKILL)
        now = time.monotonic()
        m.crashes = [t for t in m.crashes if now - t < CRASH_WINDOW_S] + [now]
        m.pid = None
        if found.permanent or len(m.crashes) >= CRASH_LIMIT:
            cause = (
                found.cause
                if found.permanent
                else f"{found.cause} ({len(m.crashes)} crashes in {CRASH_WINDOW_S / 60:.0f} min)"
            )
            report = {
                "instance": m.id,
                "state": "failed",
                "exit_code": exit_code,
                "cause": cause,
                "remedy": found.remedy,
                "restarts": m.restarts,
            }
            del self.managed[m.id]
        else:
            m.state, m.next_start = "crashed", now + min(30.0, 2.0 ** (len(m.crashes) - 1) - 1)
            report = {
                "instance": m.id,
                "state": "crashed",
                "exit_code": exit_code,
                "cause": found.cause,
                "remedy": found.remedy,
                "restarts": m.restarts,
            }
        self._save()
        self.report(report)

    def _forget(self, m: Managed, state: str) -> None:
        self._signal(m, signal.SIGKILL)  # whatever of its process group outlived it
        self.children.pop(m.id, None)
        del self.managed[m.id]
        self._save()
        self.report({"instance": m.id, "state": state})

    def _stream_log(self, m: Managed) -> None:
        try:
            size = os.path.getsize(m.log_path)
        except OSError:
            return
        if size < m.log_offset:
            m.log_offset = 0
        if size > m.log_offset:
            with open(m.log_path, "rb") as f:
                f.seek(m.log_offset)
                chunk = f.read(min(size - m.log_offset, 65536))
            end = chunk.rfind(b"\n") + 1
            if end:
                m.log_offset += end
                lines = [x for x in chunk[:end].decode(errors="replace").splitlines() if not _scrape_line(x)]
                if lines:
                    self.log_lines(m.id, lines[-200:])
        if size > LOG_ROTATE_BYTES:  # copy-truncate: vLLM keeps appending to the same file
            with open(m.log_path, "rb") as src, open(m.log_path + ".1", "wb") as dst:
                dst.write(src.read())
            os.truncate(m.log_path, 0)
            m.log_offset = 0

    # --- telemetry ----------------------------------------------------------------------------
    def metrics(self) -> list[dict]:
        """Serving metrics of each Ready instance, from its Prometheus endpoint."""
        out = []
        with self.lock:
            ready = [m for m in self.managed.values() if m.state == "ready"]
        for m in ready:
            out.append({"instance": m.id} | (self._figures(m) or {}))
        return out

    def _figures(self, m: Managed) -> dict[str, float] | None:
        """The instance's METRICS from its Prometheus endpoint; None if it did not answer."""
        status, body = _get(f"http://{m.host}:{m.port}/metrics", timeout=0.3)
        if status != 200:
            return None
        figures: dict[str, float] = {}
        for line in body.decode(errors="replace").splitlines():
            name = line.split("{", 1)[0].split(" ", 1)[0]
            if name in METRICS:
                try:
                    figures[METRICS[name]] = figures.get(METRICS[name], 0.0) + float(line.rsplit(" ", 1)[1])
                except ValueError:
                    pass
        return figures

    def describe(self) -> list[dict]:
        with self.lock:
            return [
                {"id": m.id, "pid": m.pid, "state": m.state, "port": m.port, "restarts": m.restarts}
                for m in self.managed.values()
            ]


def _scrape_line(line: str) -> bool:
    """uvicorn's access line for this agent's own scrape of /metrics (every few seconds): kept in the
    file, not streamed to the console's log panel, where it would bury vLLM's own lines."""
    return '"GET /metrics HTTP/' in line and " 200" in line
