"""The two commands (and a helper), behind ``make run`` / ``make test``.

    python -m console.launch run [--host H] [--port P]   # the whole product, under one supervisor
    python -m console.launch test [pytest args]          # the test suite
    python -m console.launch manage <command> [args]     # manage.py with the same servers

With DATABASE_URL / REDIS_URL unset, each starts (or joins) the embedded PostgreSQL and Redis
under FLEET_DATA_DIR and stops them when done.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

from console import embedded, tls
from console.config import BASE_DIR, data_dir
from console.supervisor import SUPERVISOR_STATE, Program, Supervisor

PY = sys.executable


def _manage(env: dict[str, str], *args: str) -> None:
    subprocess.run([PY, str(BASE_DIR / "manage.py"), *args], env=env, check=True, cwd=BASE_DIR)


def _local_agent(env: dict[str, str], data: Path, port: int) -> Program | None:
    """The agent for this machine, so a fresh install shows one live node (FLEET_LOCAL_AGENT=0: none)."""
    if os.environ.get("FLEET_LOCAL_AGENT", "1") == "0":
        return None
    host = re.sub(r"[^a-z0-9-]+", "-", socket.gethostname().lower())[:63].strip("-")
    name = os.environ.get("FLEET_LOCAL_NODE_NAME") or host or "local"
    state_dir = data / "agent" / name
    # A join token only when this agent has no identity the console still knows.
    token = subprocess.run(
        [
            PY,
            str(BASE_DIR / "manage.py"),
            "local_join_token",
            "--name",
            name,
            "--state-file",
            str(state_dir / "agent.json"),
        ],
        env=env,
        check=True,
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return Program(
        "agent",
        [PY, "-m", "fleet.agent", "--name", name, "--state-dir", str(state_dir)],
        # This machine's agent may use the plain loopback port; other nodes use the TLS agent port.
        env={"FLEET_CONSOLE_URL": f"http://127.0.0.1:{port}"} | ({"FLEET_JOIN_TOKEN": token} if token else {}),
    )


def programs(env: dict[str, str], data: Path, host: str, port: int) -> list[Program]:
    """What `make run` supervises: web (with the gateway), the agent endpoint over TLS, worker, beat
    and this machine's agent."""
    certs = tls.material()
    found = [
        Program(
            "web",
            [
                PY,
                "-m",
                "uvicorn",
                "console.asgi:application",
                "--host",
                host,
                "--port",
                str(port),
                "--lifespan",
                "off",
                "--proxy-headers",
                # Live frames are small JSON on a LAN: per-socket deflate doubled the web process's
                # CPU per browser (bench/telemetry.py: 35% → 18.5% of a core at 100 nodes, 200 browsers).
                "--ws-per-message-deflate",
                "false",
            ],
        ),
        Program(
            "agents",
            [
                PY,
                "-m",
                "uvicorn",
                "console.asgi:agents",
                "--host",
                os.environ.get("FLEET_AGENT_HOST", host),
                "--port",
                os.environ.get("FLEET_AGENT_PORT", "8443"),
                "--lifespan",
                "off",
                "--ssl-certfile",
                str(certs.cert),
                "--ssl-keyfile",
                str(certs.key),
            ],
        ),
        Program(
            "worker",
            [
                PY,
                "-m",
                "celery",
                "-A",
                "console",
                "worker",
                "-Q",
                "console",
                "-n",
                "console@%h",
                "--concurrency",
                os.environ.get("FLEET_WORKER_CONCURRENCY", "2"),
                "-l",
                "INFO",
            ],
        ),
        Program(
            "beat",
            [PY, "-m", "celery", "-A", "console", "beat", "-l", "INFO", "-s", str(data / "celerybeat-schedule")],
        ),
    ]
    agent = _local_agent(env, data, port)
    if agent is not None:
        found.append(agent)
    return found


def prepare(env: dict[str, str]) -> None:
    _manage(env, "migrate", "--noinput")
    _manage(env, "ensure_admin")
    _manage(env, "make_demo_model")  # a tiny model to try everything on; built once


def run(host: str, port: int) -> int:
    data = data_dir()
    with embedded.services(data) as extra:
        env = os.environ | extra
        prepare(env)
        children = programs(env, data, host, port)
        print(f"Fleet Console: http://{host}:{port}/  (Ctrl-C stops everything)", flush=True)
        agent_port = os.environ.get("FLEET_AGENT_PORT", "8443")
        print(f"Nodes join at https://<this host>:{agent_port} (CA sha256 {tls.material().ca_fingerprint})", flush=True)
        watches = embedded.watches(data)
        return Supervisor(children, env, watches=watches, state_file=data / SUPERVISOR_STATE).run()


def test(pytest_args: list[str]) -> int:
    with embedded.services(data_dir()) as extra:
        if "REDIS_URL" in extra:  # keep test traffic off the database a running `make run` uses
            extra["REDIS_URL"] = extra["REDIS_URL"].rsplit("/", 1)[0] + "/1"
        env = os.environ | extra | {"FLEET_FAST_PASSWORD_HASHER": "1"}
        proc = subprocess.Popen([PY, "-m", "pytest", *pytest_args], env=env, cwd=BASE_DIR)
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:  # pytest got it too; let it finish its report
                continue


def manage(args: list[str]) -> int:
    with embedded.services(data_dir()) as extra:
        return subprocess.run([PY, str(BASE_DIR / "manage.py"), *args], env=os.environ | extra, cwd=BASE_DIR).returncode


def main(argv: list[str] | None = None) -> int:
    # The two commands serve one machine over plain HTTP unless told otherwise.
    os.environ.setdefault("FLEET_MODE", "local")
    parser = argparse.ArgumentParser(
        prog="python -m console.launch", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="run web, worker, beat and this machine's agent")
    run_p.add_argument("--host", default=os.environ.get("FLEET_HOST", "127.0.0.1"))
    run_p.add_argument("--port", type=int, default=int(os.environ.get("FLEET_PORT", "8000")))
    sub.add_parser("test", help="run the test suite", add_help=False)
    sub.add_parser("manage", help="run a manage.py command", add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.command == "run":
        if rest:
            parser.error(f"unknown arguments: {' '.join(rest)}")
        return run(args.host, args.port)
    if args.command == "test":
        return test(rest)
    return manage(rest)


if __name__ == "__main__":
    sys.exit(main())
