"""The agent's work: join, sample every tick, publish, heartbeat, roll up, serve its queue."""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celery import Celery
from celery.exceptions import TimeoutError as ResultTimeout
from channels_redis.core import RedisChannelLayer

from fleet.agent.instances import InstanceSupervisor
from fleet.agent.jobs import JobSupervisor
from fleet.agent.probe import GpuProbe, HostProbe, load_nvml
from fleet.protocol import runtimes, tasks, telemetry
from fleet.protocol.live import CHANNEL_PREFIX, Publisher, channel_layer_hosts

log = logging.getLogger("fleet.agent")
AGENT_VERSION = "0.3.0"


class AgentError(Exception):
    """Why the agent cannot go on, said plainly (it exits with this message)."""


@dataclass
class Identity:
    node_id: int
    name: str
    secret: str


def make_app(redis_url: str) -> Celery:
    # set_as_current=False: in a process that also has the console app (tests, bench) it stays current.
    app = Celery("fleet-agent", broker=redis_url, backend=redis_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        broker_connection_retry_on_startup=True,
        task_ignore_result=True,
        worker_hijack_root_logger=False,
    )
    return app


def layer_publisher(redis_url: str) -> Publisher:
    """Publishes to the console's channel layer without Django settings."""
    layer = RedisChannelLayer(hosts=channel_layer_hosts(redis_url), prefix=CHANNEL_PREFIX)
    return Publisher(lambda: layer)


class Agent:
    def __init__(
        self,
        *,
        name: str,
        redis_url: str,
        state_dir: Path,
        interval_s: float = 1.0,
        heartbeat_s: float = 5.0,
        nvml: Any = "auto",
        app: Celery | None = None,
        publisher: Publisher | None = None,
        clock: Callable[[], float] = time.time,
        address: str = "127.0.0.1",
    ) -> None:
        self.name, self.redis_url, self.state_dir, self.address = name, redis_url, Path(state_dir), address
        self.interval_s, self.heartbeat_s = interval_s, heartbeat_s
        self.app = app or make_app(redis_url)
        self.gpus = GpuProbe(load_nvml() if nvml == "auto" else nvml)
        self.host = HostProbe()
        self.publisher = publisher or layer_publisher(redis_url)
        self.identity: Identity | None = None
        self.seq = 0
        self.rollup: telemetry.MinuteRollup | None = None
        self.last_message: dict | None = None
        self._last_heartbeat = 0.0
        self.clock = clock  # wall-clock time of samples (tests step it across minute boundaries)
        self.instances = InstanceSupervisor(
            self.state_dir,
            report=lambda payload: self._send(tasks.INSTANCE_REPORT, report=payload),
            publish=lambda topic, payload: self.publisher.publish(topic, payload),
        )
        self.jobs = JobSupervisor(self.state_dir, report=lambda payload: self._send(tasks.JOB_REPORT, report=payload))
        self.started = clock()

    # --- joining -----------------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.state_dir / "agent.json"

    def facts(self) -> dict:
        return {
            "host": self.host.discover() | {"address": self.address},
            "gpu": self.gpus.discover(),
            "runtimes": runtimes.installed(),
            "agent_version": AGENT_VERSION,
            "interval_s": self.interval_s,
        }

    def _ask_console(self, wait_s: float, **kwargs: Any) -> dict:
        """Send the registration and wait for its answer (never re-sent: a join token works once)."""
        result = self.app.send_task(tasks.REGISTER_NODE, kwargs=kwargs, queue=tasks.CONSOLE_QUEUE, ignore_result=False)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                return result.get(timeout=min(10.0, max(0.1, deadline - time.monotonic())), disable_sync_subtasks=False)
            except ResultTimeout:
                if time.monotonic() >= deadline:
                    raise AgentError(
                        f"no answer from the console within {wait_s:.0f} s: is its worker running?"
                    ) from None
                log.info("still waiting for the console to answer the registration…")

    def join(self, join_token: str | None = None, wait_s: float = 120.0) -> Identity:
        saved = self._load_identity()
        facts = self.facts()
        if saved is not None and saved.name == self.name:
            answer = self._ask_console(wait_s, name=self.name, secret=saved.secret, facts=facts, node_id=saved.node_id)
            if answer.get("ok"):
                self.identity = saved
                return saved
            if not join_token:
                raise AgentError(f"the console refused this agent: {answer.get('error')}")
            log.warning("saved identity refused (%s); joining with the token", answer.get("error"))
        if not join_token:
            raise AgentError("this node has not joined yet: give a join token (FLEET_JOIN_TOKEN)")
        secret = secrets.token_urlsafe(32)
        answer = self._ask_console(wait_s, name=self.name, secret=secret, facts=facts, join_token=join_token)
        if not answer.get("ok"):
            raise AgentError(f"the console refused to join this node: {answer.get('error')}")
        self.identity = Identity(int(answer["node_id"]), self.name, secret)
        self._save_identity(self.identity)
        log.info("joined the fleet as node %s (id %s, %s)", self.name, answer["node_id"], answer.get("kind"))
        return self.identity

    def _load_identity(self) -> Identity | None:
        try:
            data = json.loads(self.state_file.read_text())
            return Identity(int(data["node_id"]), str(data["name"]), str(data["secret"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _save_identity(self, identity: Identity) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # the secret: owner only
        with os.fdopen(fd, "w") as f:
            json.dump(identity.__dict__, f)
        tmp.replace(self.state_file)

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
        self.publisher.publish((f"telemetry.node.{self.identity.node_id}", "telemetry.fleet"), message)
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
        assert self.identity is not None
        try:
            self.app.send_task(
                task,
                kwargs={"node_id": self.identity.node_id, "secret": self.identity.secret, **kwargs},
                queue=tasks.CONSOLE_QUEUE,
            )
        except Exception as exc:  # Redis away: keep sampling, the next tick tries again
            log.warning("could not send %s: %s", task, exc)

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
        topic, key = f"node.{self.identity.node_id}.runtime", f"{engine}=={version}"
        say = lambda line: self.publisher.publish(topic, {"runtime": key, "line": line})  # noqa: E731
        self._send(tasks.RUNTIME_REPORT, runtime=key, state="installing")
        try:
            runtimes.ensure(engine, version, log=say)
        except Exception as exc:
            say(f"failed: {exc}")
            self._send(tasks.RUNTIME_REPORT, runtime=key, state="failed", detail=str(exc)[:300])
            return
        self._send(tasks.RUNTIME_REPORT, runtime=key, state="ready")

    # --- serving the node queue ------------------------------------------------------------------
    def serve(self) -> None:
        """Telemetry and the instance watch in threads; the Celery worker for queue node.<name> in
        this one (blocks). vLLM processes are left running when the agent stops: the next agent
        adopts them."""
        stop = threading.Event()
        self.instances.adopt()
        if reaped := self.jobs.reap():
            log.warning("ended %d job process(es) a previous agent left running", len(reaped))
        threading.Thread(target=self.run_telemetry, args=(stop,), name="telemetry", daemon=True).start()
        threading.Thread(target=self.instances.run, args=(stop,), name="instances", daemon=True).start()
        agent = self

        @self.app.task(name=tasks.PING, ignore_result=False)
        def ping() -> dict:
            return {
                "name": agent.name,
                "node_id": agent.identity.node_id if agent.identity else None,
                "uptime_s": round(agent.clock() - agent.started, 1),
                "gpus": len(agent.gpus.handles),
                "version": AGENT_VERSION,
            }

        @self.app.task(name=tasks.START_INSTANCE)
        def start_instance(spec: dict) -> None:
            try:
                agent.instances.start(spec)
            except Exception as exc:  # e.g. the runtime is missing: the console shows why
                log.exception("could not start instance %s", spec.get("id"))
                agent._send(
                    tasks.INSTANCE_REPORT,
                    report={
                        "instance": spec.get("id"),
                        "state": "failed",
                        "cause": "Could not start",
                        "remedy": str(exc)[:400],
                    },
                )

        @self.app.task(name=tasks.ENSURE_RUNTIME)
        def ensure_runtime(engine: str, version: str) -> None:
            threading.Thread(target=agent.install_runtime, args=(engine, version), daemon=True).start()

        @self.app.task(name=tasks.STOP_INSTANCE)
        def stop_instance(instance_id: int) -> None:
            agent.instances.stop(instance_id)

        @self.app.task(name=tasks.RUN_JOB)
        def run_job(spec: dict) -> None:
            agent.jobs.start(spec)  # returns at once: the job runs in its own process group

        @self.app.task(name=tasks.CANCEL_JOB)
        def cancel_job(job_id: int) -> None:
            agent.jobs.cancel(job_id)

        @self.app.task(name=tasks.INSTANCES, ignore_result=False)
        def instances() -> list[dict]:
            return agent.instances.describe()

        try:
            self.app.worker_main(
                [
                    "worker",
                    "-Q",
                    f"node.{self.name}",
                    "-n",
                    f"agent@{self.name}",
                    "--pool=solo",
                    "--without-mingle",
                    "--without-gossip",
                    "--loglevel=INFO",
                ]
            )
        finally:
            stop.set()
