"""Jobs on this node (quantize, benchmark): each runs a runner script (fleet/runners) in its own
runtime environment and process group. Output is read as it comes (lines split on \\n and \\r, so
progress bars arrive too), runner events (``@fleet {...}``) become progress and the result, and
everything reaches the console in one report per half second. Cancel kills the process group."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import subprocess
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import cast

import psutil

from fleet.agent.instances import kill_group
from fleet.protocol import runner as protocol
from fleet.protocol import runtimes

log = logging.getLogger("fleet.agent")
RUNNERS = Path(__file__).resolve().parent.parent / "runners"
REPORT_EVERY_S = 0.5
KILL_GRACE_S = 5.0
KINDS = {"quantize", "benchmark"}  # each is a runner script in fleet/runners
LINE_SPLIT = re.compile(rb"\r\n|\r|\n")
# llm-compressor's sequential pipeline prints "(3/5): Calibrating: ..." per layer group; the
# quantize runner reserves 30–75 % for that stage, so those lines move the bar within it.
CALIBRATING = re.compile(r"^\((\d+)/(\d+)\): Calibrating")


class Job:
    def __init__(self, spec: dict) -> None:
        self.spec = spec
        self.id: int = spec["id"]
        self.proc: subprocess.Popen | None = None
        self.cancelled = False
        self.lines: list[str] = []  # not yet reported
        self.tail: deque[str] = deque(maxlen=5)  # the last lines, for a failure's message
        self.sent: tuple = ()
        self.progress: float | None = None
        self.phase = ""
        self.result: dict | None = None
        self.lock = threading.Lock()


class JobSupervisor:
    def __init__(self, state_dir: Path, report: Callable[[dict], None]) -> None:
        self.dir = Path(state_dir) / "jobs"
        self.report = report
        self.jobs: dict[int, Job] = {}
        self.skip: set[int] = set()  # cancelled before they reached this node
        self.lock = threading.Lock()

    def reap(self) -> list[int]:
        """At agent start: end the jobs a previous agent left running (their output went to it, and
        the console fails them when this agent rejoins)."""
        reaped = []
        for spec_file in self.dir.glob("job-*.json"):
            for proc in psutil.process_iter(["cmdline"]):
                if str(spec_file) in (proc.info["cmdline"] or []):
                    kill_group(proc.pid, signal.SIGKILL)
                    reaped.append(proc.pid)
            spec_file.unlink(missing_ok=True)
        return reaped

    def start(self, spec: dict) -> None:
        """Idempotent: a job already known here is not started twice."""
        with self.lock:
            if spec["id"] in self.jobs or spec["id"] in self.skip:
                return
            job = self.jobs[spec["id"]] = Job(spec)
        threading.Thread(target=self._run, args=(job,), name=f"job-{job.id}", daemon=True).start()

    def cancel(self, job_id: int) -> None:
        with self.lock:
            job = self.jobs.get(job_id)
        if job is None:  # not here yet (queued behind other work) or long finished: never run it
            self.skip.add(job_id)
            self.report({"job": job_id, "state": "cancelled"})
            return
        with job.lock:
            job.cancelled = True
            proc = job.proc
        if proc is not None and proc.poll() is None:
            kill_group(proc.pid, signal.SIGTERM)
            threading.Timer(KILL_GRACE_S, kill_group, args=(proc.pid, signal.SIGKILL)).start()

    # --- one job ----------------------------------------------------------------------------
    def _say(self, job: Job, line: str) -> None:
        with job.lock:
            job.lines.append(line)
            job.tail.append(line)

    def _run(self, job: Job) -> None:
        if job.spec.get("kind") not in KINDS:
            self._finish(job, "failed", f"this agent runs no job of kind {job.spec.get('kind')!r}")
            return
        engine, _, version = job.spec["runtime"].partition("==")
        try:
            python = str(runtimes.ensure(engine, version, log=lambda line: self._say(job, line)))
        except Exception as exc:
            self._finish(job, "failed", f"the {engine} {version} runtime could not be installed: {exc}"[:500])
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        spec_file = self.dir / f"job-{job.id}.json"
        fd = os.open(spec_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # may hold uploaded text
        with os.fdopen(fd, "w") as f:
            json.dump(job.spec["params"], f)
        argv = [python, str(RUNNERS / f"{job.spec['kind']}.py"), str(spec_file)]
        env = os.environ | {"PYTHONUNBUFFERED": "1", "TQDM_MININTERVAL": "1", "FLEET_JOB_ID": str(job.id)}
        with job.lock:
            if job.cancelled:
                self._finish(job, "cancelled", "")
                return
            job.proc = subprocess.Popen(
                argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=str(RUNNERS),
                start_new_session=True,
            )
        self.report({"job": job.id, "state": "running", "pid": job.proc.pid})
        stop = threading.Event()
        flusher = threading.Thread(target=self._flush_loop, args=(job, stop), daemon=True)
        flusher.start()
        self._read(job)
        code = job.proc.wait()
        stop.set()
        flusher.join()
        spec_file.unlink(missing_ok=True)
        if job.cancelled:
            self._finish(job, "cancelled", "")
        elif code == 0 and job.result is not None:
            self._finish(job, "succeeded", "")
        else:
            tail = list(job.tail) or ["(no output)"]
            self._finish(job, "failed", f"exit status {code}: " + " | ".join(tail)[-400:])

    def _read(self, job: Job) -> None:
        assert job.proc is not None and job.proc.stdout is not None
        stdout = cast(io.BufferedReader, job.proc.stdout)  # a binary, buffered pipe: it has read1
        buffer = b""
        while chunk := stdout.read1(65536):
            parts = LINE_SPLIT.split(buffer + chunk)
            buffer = parts.pop()
            for raw in parts:
                line = raw.decode(errors="replace")
                event = protocol.parse(line)
                with job.lock:
                    if event is None:
                        stage = CALIBRATING.match(line)
                        if stage and job.spec["kind"] == "quantize":
                            done, total = int(stage[1]), max(1, int(stage[2]))
                            job.progress = max(job.progress or 0, 30 + 45 * (done - 1) / total)
                            job.phase = f"calibrating layer group {done}/{total}"
                        if line.strip():
                            job.lines.append(line)
                            job.tail.append(line)
                        continue
                    if "progress" in event:
                        job.progress = float(event["progress"])
                    job.phase = str(event.get("phase", job.phase))
                    if "result" in event:
                        job.result = event["result"]
        if buffer.strip():
            self._say(job, buffer.decode(errors="replace"))

    def _flush_loop(self, job: Job, stop: threading.Event) -> None:
        while not stop.wait(REPORT_EVERY_S):
            self._flush(job)

    def _flush(self, job: Job, **final: object) -> None:
        with job.lock:
            lines, job.lines = job.lines[-500:], []
            now = (job.progress, job.phase)
            if not (lines or final or now != job.sent):
                return
            job.sent = now
            payload = {"job": job.id, "lines": lines, "progress": job.progress, "phase": job.phase, **final}
        self.report(payload)

    def _finish(self, job: Job, state: str, error: str) -> None:
        final: dict = {"state": state}
        if error:
            final["error"] = error
        if state == "succeeded":
            final["result"] = job.result
        self._flush(job, **final)
        log.info("job %s %s", job.id, state)
