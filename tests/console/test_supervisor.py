"""The supervisor restarts what dies and keeps the rest serving; the embedded Redis keeps what it
acknowledged across a kill -9 (real processes throughout)."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest
import redis

from console import embedded, supervisor
from console.supervisor import Program, Supervisor, Watch, read_state

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


@pytest.fixture
def fast(monkeypatch):
    monkeypatch.setattr(supervisor, "BACKOFF_S", (0.05, 0.2))
    monkeypatch.setattr(supervisor, "FAST_S", 1.0)


def _until(condition, sup: Supervisor, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sup.tick()
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError("timed out")


def test_a_killed_child_is_restarted_and_its_siblings_keep_running(fast, tmp_path):
    web, worker = Program("web", SLEEPER), Program("worker", SLEEPER)
    sup = Supervisor([web, worker], dict(os.environ), state_file=tmp_path / "supervisor.json")
    sup.start()
    try:
        web_pid, worker_pid = web.proc.pid, worker.proc.pid
        os.kill(worker_pid, signal.SIGKILL)
        _until(lambda: worker.state == "running" and worker.proc.pid != worker_pid, sup)
        assert worker.restarts == 1 and worker.last_exit == -signal.SIGKILL
        assert web.proc.pid == web_pid and web.proc.poll() is None  # untouched
        state = read_state(tmp_path / "supervisor.json")
        assert state["parts"]["worker"]["restarts"] == 1 and state["parts"]["web"]["state"] == "running"
    finally:
        sup.stop()
    assert web.proc.poll() is not None and worker.proc.poll() is not None
    assert read_state(tmp_path / "supervisor.json") is None


def test_a_child_that_keeps_failing_is_given_up_on_clearly(fast, capsys):
    broken = Program("beat", [sys.executable, "-c", "raise SystemExit(3)"])
    web = Program("web", SLEEPER)
    sup = Supervisor([broken, web], dict(os.environ))
    sup.start()
    try:
        _until(lambda: broken.state == "fatal", sup)
        assert broken.restarts == supervisor.GIVE_UP_AFTER - 1
        assert web.state == "running" and web.proc.poll() is None
    finally:
        sup.stop()
    out = capsys.readouterr().out
    assert "beat exited with status 3; restarting it in" in out
    assert f"{supervisor.GIVE_UP_AFTER} times in a row" in out and "giving up on it (the others keep running)" in out


def test_embedded_redis_killed_is_revived_with_every_acknowledged_entry(fast, tmp_path):
    server = embedded.EmbeddedRedis(tmp_path)
    url = server.start()
    try:
        client = redis.Redis.from_url(url)
        ids = [client.xadd("fleet:ledger", {"u": str(i)}) for i in range(500)]  # each acknowledged
        os.kill(server._running_pid(), signal.SIGKILL)
        sup = Supervisor(
            [Program("web", SLEEPER)], dict(os.environ), watches=[Watch("redis", server.alive, server.revive)]
        )
        sup.start()
        try:
            _until(lambda: sup.watches[0].restarts == 1 and server.alive(), sup)
        finally:
            sup.stop()
        assert [i for i, _ in client.xrange("fleet:ledger")] == ids  # the same port: clients reconnect
    finally:
        server.release()


def test_an_rdb_only_redis_dir_switches_to_aof_without_losing_data(tmp_path):
    """A data dir from before AOF was on: starting with AOF would load nothing from dump.rdb."""
    server = embedded.EmbeddedRedis(tmp_path)
    (server.dir / "redis.conf").unlink(missing_ok=True)
    url = server.start()
    client = redis.Redis.from_url(url)
    client.config_set("appendonly", "no")
    client.set("old", "kept")
    client.save()
    server.release()
    (server.dir / "appendonly.aof").unlink(missing_ok=True)
    url = server.start()
    try:
        client = redis.Redis.from_url(url)
        assert client.get("old") == b"kept" and client.config_get("appendonly") == {"appendonly": "yes"}
    finally:
        server.release()


def test_embedded_postgres_killed_is_revived_with_every_committed_row(fast, tmp_path):
    import psycopg

    url, server = embedded.start_postgres(tmp_path)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE calls (id int)")
            conn.execute("INSERT INTO calls SELECT generate_series(1, 100)")
        os.kill(embedded._postmaster(server).process.pid, signal.SIGKILL)
        watch = Watch("postgres", lambda: embedded._postgres_alive(server), lambda: embedded._revive_postgres(server))
        sup = Supervisor([Program("web", SLEEPER)], dict(os.environ), watches=[watch])
        sup.start()
        try:
            _until(lambda: watch.restarts >= 1 and watch.state == "running", sup, timeout=30)
        finally:
            sup.stop()
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM calls").fetchone() == (100,)
    finally:
        server.cleanup()
