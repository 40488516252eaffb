"""A task that matters survives its worker dying mid-task: a real prefork worker computing a real
model checksum is killed (its pool child, then the worker itself) and the work still completes."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys

import psutil
import pytest
from celery import current_app

from console.config import BASE_DIR
from fleet.catalog.choices import ChecksumState
from fleet.catalog.models import ModelArtifact, ModelFile
from fleet.protocol import tasks
from tests.e2e.conftest import stop, wait_for

pytestmark = pytest.mark.e2e
QUEUE = "crash-drill"  # its own queue: the suite's shared worker must not take this task
SIZE = 3 << 30  # sparse: hashing it takes seconds, storing it takes nothing


def _worker(env: dict) -> subprocess.Popen:
    argv = ["celery", "-A", "console", "worker", "-Q", QUEUE, "--concurrency", "1", "-n", f"crash-{os.getpid()}@%h"]
    return subprocess.Popen([sys.executable, "-m", *argv, "-l", "WARNING"], env=env, cwd=BASE_DIR)


def _model(tmp_path) -> tuple[ModelArtifact, str]:
    weights = tmp_path / "model.safetensors"
    with open(weights, "wb") as f:
        f.truncate(SIZE)
    digest = hashlib.sha256()
    block = bytes(1 << 20)
    for _ in range(SIZE >> 20):
        digest.update(block)
    artifact = ModelArtifact.objects.create(name="crash-drill", path=str(tmp_path), config={})
    ModelFile.objects.create(artifact=artifact, name=weights.name, kind=ModelFile.Kind.WEIGHTS, size=SIZE)
    return artifact, digest.hexdigest()


def _running(artifact: ModelArtifact) -> bool:
    artifact.refresh_from_db()
    return artifact.checksum_state == ChecksumState.RUNNING and artifact.checksum_progress > 0


def _done(artifact: ModelArtifact) -> bool:
    artifact.refresh_from_db()
    return artifact.checksum_state == ChecksumState.DONE


@pytest.mark.parametrize("victim", ["pool child", "worker"])
def test_a_checksum_survives_its_worker_being_killed_mid_task(transactional_db, process_env, tmp_path, victim):
    env = process_env | {"FLEET_TASK_VISIBILITY_TIMEOUT_S": "3"}
    artifact, expected = _model(tmp_path)
    worker = _worker(env)
    try:
        current_app.send_task(tasks.CHECKSUM_MODEL, args=[artifact.pk], queue=QUEUE)
        wait_for(lambda: _running(artifact), 60, "the checksum to be under way")
        if victim == "pool child":
            child = psutil.Process(worker.pid).children()[0]
            os.kill(child.pid, signal.SIGKILL)  # the worker sees its child lost and requeues the task
        else:  # the whole worker, pool included: nothing is left to hand the task back
            pool = psutil.Process(worker.pid).children(recursive=True)
            worker.kill()
            for proc in pool:
                proc.kill()
            worker.wait()
            worker = _worker(env)  # the broker hands the unacknowledged task back after the visibility timeout
        wait_for(lambda: _done(artifact), 120, "the checksum to finish after the kill")
    finally:
        stop(worker)
    assert ModelFile.objects.get(artifact=artifact).sha256 == expected
