"""The agent's work: join, sample every tick, send telemetry, heartbeat, roll up, run commands.

It speaks to the console only through its link (fleet.agent.link): HTTPS to join, one websocket
for the rest. Commands run one at a time on a thread of their own, as they arrive.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleet.agent.instances import InstanceSupervisor
from fleet.agent.jobs import JobSupervisor
from fleet.agent.link import Console, Link, LinkError, Refused, Unreachable, save_private
from fleet.agent.probe import GpuProbe, HostProbe, load_nvml
from fleet.protocol import runtimes, tasks, telemetry, wire

log = logging.getLogger("fleet.agent")
AGENT_VERSION = "0.4.0"


class AgentError(Exception):
    """Why the agent cannot go on, said plainly (it exits with this message)."""


@dataclass
class Identity:
    node_id: int
    name: str
    credential: str


class Agent:
    def __init__(
        self,
        *,
        name: str,
        console_url: str,
        state_dir: Path,
        interval_s: float = 1.0,
        heartbeat_s: float = 5.0,
        nvml: Any = "auto",
        clock: Callable[[], float] = time.time,
        address: str = "127.0.0.1",
    ) -> None:
        self.name, self.state_dir, self.address = name, Path(state_dir), address
        self.interval_s, self.heartbeat_s = interval_s, heartbeat_s
        try:
            self.console = Console(console_url, self.state_dir / "console-ca.pem")
        except LinkError as exc:
            raise AgentError(str(exc)) from None
        self.link = Link(self.console, self._credential, self._safely_on_message)
        self.gpus = GpuProbe(load_nvml() if nvml == "auto" else nvml)
        self.host = HostProbe()
        self.identity: Identity | None = None
        self.seq = 0
        self.rollup: telemetry.MinuteRollup | None = None
        self.last_message: dict | None = None
        self._last_heartbeat = 0.0
        self.clock = clock  # wall-clock time of samples (tests step it across minute boundaries)
        self.instances = InstanceSupervisor(
            self.state_dir,
            report=lambda payload: self._send(tasks.INSTANCE_REPORT, report=payload),
            log_lines=lambda instance, lines: self.link.send(
                {"kind": wire.INSTANCE_LOG, "instance": instance, "lines": lines}, keep=False
            ),
        )
        self.jobs = JobSupervisor(self.state_dir, report=lambda payload: self._send(tasks.JOB_REPORT, report=payload))
        self.started = clock()
        self.stop = threading.Event()
        self._commands = ThreadPoolExecutor(1, thread_name_prefix="command")  # one at a time, in order
        self._seen: collections.deque[str] = collections.deque(maxlen=1000)  # command ids (a re-sent one runs once)

    # --- joining -----------------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.state_dir / "agent.json"

    def _credential(self) -> str:
        assert self.identity is not None
        return self.identity.credential

    def facts(self) -> dict:
        return {
            "host": self.host.discover() | {"address": self.address},
            "gpu": self.gpus.discover(),
            "runtimes": runtimes.installed(),
            "agent_version": AGENT_VERSION,
            "interval_s": self.interval_s,
        }

    def join(self, join_token: str | None = None, wait_s: float = 120.0) -> Identity:
        """With the identity saved here if the console still knows it, else with the join token.
        A console not answering yet (starting, restarting) is asked again for up to ``wait_s``."""
        deadline, pause = time.monotonic() + wait_s, 0.5
        while True:
            try:
                return self._join(join_token)
            except AgentError as exc:
                if not isinstance(exc.__cause__, Unreachable) or time.monotonic() + pause > deadline:
                    raise
                log.info("%s; trying again in %.1f s", exc, pause)
                time.sleep(pause)
                pause = min(pause * 2, 10.0)

    def _join(self, join_token: str | None) -> Identity:
        saved = self._load_identity()
        facts = self.facts()
        try:
            if saved is not None and saved.name == self.name:
                try:
                    self.console.post(wire.REGISTER_PATH, {"name": self.name, "facts": facts}, saved.credential)
                    self.identity = saved
                    return saved
                except Refused as exc:
                    if not join_token:
                        raise AgentError(f"the console refused this agent: {exc}") from None
                    log.warning("saved identity refused (%s); joining with the token", exc)
            if not join_token:
                raise AgentError("this node has not joined yet: give a join token (FLEET_JOIN_TOKEN)")
            token, pin = wire.split_join_token(join_token)
            self.console.pin(pin)
            answer = self.console.post(wire.JOIN_PATH, {"name": self.name, "token": token, "facts": facts})
        except Refused as exc:
            raise AgentError(f"the console refused to join this node: {exc}") from None
        except LinkError as exc:
            raise AgentError(str(exc)) from exc
        self.identity = Identity(int(answer["node_id"]), self.name, str(answer["credential"]))
        self._save_identity(self.identity)
        log.info("joined the fleet as node %s (id %s, %s)", self.name, answer["node_id"], answer.get("kind"))
        return self.identity

    def _load_identity(self) -> Identity | None:
        try:
            data = json.loads(self.state_file.read_text())
            return Identity(int(data["node_id"]), str(data["name"]), str(data["credential"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _save_identity(self, identity: Identity) -> None:
        save_private(self.state_file, identity.__dict__)  # the credential: owner only

    # --- telemetry -----------------------------------------------------------------------------
    def sample(self) -> dict:
        assert self.identity is not None
        readings, errors = self.gpus.sample()
        self.seq += 1
        return {
            "v": telemetry.VERSION,
            "node": self.identity.node_id,
            "name": self.name,
            "ts": self.clock(),
            "seq": self.seq,
            "host": self.host.sample(),
            "gpus": readings,
            "errors": errors,
            "instances": self.instances.metrics(),
        }

    def tick(self) -> dict:
        """One telemetry tick: sample, publish live, fold into the minute, heartbeat when due."""
        assert self.identity is not None
        message = self.sample()
        self.last_message = message
        self.link.send({"kind": wire.TELEMETRY, "sample": message}, keep=False)
        minute = int(message["ts"] // 60 * 60)
        if self.rollup is not None and self.rollup.minute != minute:
            self._send(tasks.ROLLUPS, minute=self.rollup.minute, rows=self.rollup.rows())
            self.rollup = None
        if self.rollup is None:
            self.rollup = telemetry.MinuteRollup(minute)
        self.rollup.add(message)
        if time.monotonic() - self._last_heartbeat >= self.heartbeat_s:
            self.heartbeat()
        return message

    def heartbeat(self) -> None:
        self._last_heartbeat = time.monotonic()
        self._send(tasks.HEARTBEAT, sample=self.last_message)

    def _send(self, task: str, **kwargs: Any) -> None:
        """A report (kept while the link is down; the console attributes it to this node)."""
        self.link.send({"kind": task, **kwargs})

    def run_telemetry(self, stop: threading.Event) -> None:
        next_at = time.monotonic()
        while not stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("telemetry tick failed")
            next_at += self.interval_s
            if next_at < time.monotonic():  # fell behind (suspended?): do not burst to catch up
                next_at = time.monotonic()
            stop.wait(max(0.0, next_at - time.monotonic()))

    # --- runtime environments --------------------------------------------------------------------
    def install_runtime(self, engine: str, version: str) -> None:
        """Install a vLLM environment on this node, its pip output streamed to node.<id>.runtime."""
        assert self.identity is not None
        key = f"{engine}=={version}"
        say = lambda line: self.link.send({"kind": wire.RUNTIME_LOG, "runtime": key, "line": line}, keep=False)  # noqa: E731
        self._send(tasks.RUNTIME_REPORT, runtime=key, state="installing")
        try:
            runtimes.ensure(engine, version, log=say)
        except Exception as exc:
            say(f"failed: {exc}")
            self._send(tasks.RUNTIME_REPORT, runtime=key, state="failed", detail=str(exc)[:300])
            return
        self._send(tasks.RUNTIME_REPORT, runtime=key, state="ready")

    # --- commands --------------------------------------------------------------------------------
    def _safely_on_message(self, said: dict) -> None:
        try:
            self._on_message(said)
        except Exception:  # one odd message must not drop the link
            log.exception("could not handle a message from the console")

    def _on_message(self, said: dict) -> None:
        kind = said.get("kind")
        if kind == wire.COMMAND and isinstance(said.get("id"), str):
            self.link.send({"kind": wire.ACK, "id": said["id"]}, keep=False)  # received: the console forgets it
            if said["id"] not in self._seen:
                self._seen.append(said["id"])
                self._commands.submit(self._run_command, said)
        elif kind == wire.CREDENTIAL and self.identity is not None and isinstance(said.get("credential"), str):
            self.identity = Identity(self.identity.node_id, self.name, said["credential"])
            self._save_identity(self.identity)
            log.info("the console rotated this node's credential; the new one is saved")
        elif kind == "refused":
            log.warning("the console refused %s: %s", said.get("what"), said.get("why"))

    def _run_command(self, said: dict) -> None:
        task, kwargs = said.get("task"), said.get("kwargs") or {}
        handler = self.handlers().get(task) if isinstance(task, str) else None
        try:
            if handler is None:
                raise ValueError(f"unknown command {task!r}")
            value = handler(**kwargs)
        except Exception as exc:
            log.exception("command %s failed", task)
            value = {"error": str(exc)[:400]}
        if said.get("reply"):
            self.link.send({"kind": wire.RESULT, "id": said["id"], "value": value}, keep=False)

    def handlers(self) -> dict[str, Callable[..., Any]]:
        return {
            tasks.PING: self.ping,
            tasks.START_INSTANCE: self.start_instance,
            tasks.STOP_INSTANCE: lambda instance_id, drain_s=0.0: self.instances.stop(instance_id, drain_s),
            tasks.ENSURE_RUNTIME: lambda engine, version: threading.Thread(
                target=self.install_runtime, args=(engine, version), daemon=True
            ).start(),
            tasks.RUN_JOB: lambda spec: self.jobs.start(spec),  # returns at once: its own process group
            tasks.CANCEL_JOB: lambda job_id: self.jobs.cancel(job_id),
            tasks.INSTANCES: lambda: self.instances.describe(),
        }

    def ping(self) -> dict:
        return {
            "name": self.name,
            "node_id": self.identity.node_id if self.identity else None,
            "uptime_s": round(self.clock() - self.started, 1),
            "gpus": len(self.gpus.handles),
            "version": AGENT_VERSION,
        }

    def start_instance(self, spec: dict) -> None:
        try:
            self.instances.start(spec)
        except Exception as exc:  # e.g. the runtime is missing: the console shows why
            log.exception("could not start instance %s", spec.get("id"))
            self._send(
                tasks.INSTANCE_REPORT,
                report={
                    "instance": spec.get("id"),
                    "state": "failed",
                    "cause": "Could not start",
                    "remedy": str(exc)[:400],
                },
            )

    # --- serving ------------------------------------------------------------------------------------
    def connect(self) -> threading.Thread:
        """Open the link in a thread of its own (reports queue until it is up)."""
        thread = threading.Thread(target=self.link.run, args=(self.stop,), name="link", daemon=True)
        thread.start()
        return thread

    def serve(self) -> int:
        """Telemetry, the instance watch and the link in threads until stopped (SIGTERM) or revoked.
        vLLM processes are left running when the agent stops: the next agent adopts them."""
        self.instances.adopt()
        if reaped := self.jobs.reap():
            log.warning("ended %d job process(es) a previous agent left running", len(reaped))
        threading.Thread(target=self.run_telemetry, args=(self.stop,), name="telemetry", daemon=True).start()
        threading.Thread(target=self.instances.run, args=(self.stop,), name="instances", daemon=True).start()
        link = self.connect()
        while link.is_alive():
            if self.stop.wait(0.5):
                self.link.close()
                link.join(5)
                break
        self._commands.shutdown(wait=False, cancel_futures=True)
        return 3 if self.link.revoked else 0
