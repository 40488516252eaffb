"""An agent on a second "machine": its own network namespace, reaching the console only over a veth
link, as a node in another rack would, with the organisation's own certificate on the console.
tshark captures the link while the node joins and takes commands: nothing in it is plaintext."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from access.people.choices import Role
from console import tls
from console.embedded import free_port
from fleet.nodes import commands, services
from fleet.nodes.choices import NodeState
from fleet.nodes.models import Node
from fleet.protocol import tasks
from tests.conftest import make_user
from tests.e2e.conftest import BASE_DIR, node_env, start_uvicorn, stop, stop_agent, wait_for, wait_for_port

pytestmark = pytest.mark.e2e


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def second_host() -> Iterator[dict]:
    """A network namespace joined to this one by a veth pair: 10.201.<n>.1 here, .2 there."""
    n = os.getpid() % 250
    ns, here, there = f"fleet-node-{os.getpid()}", f"fvh{os.getpid() % 100000}", f"fvn{os.getpid() % 100000}"
    console_ip, node_ip = f"10.201.{n}.1", f"10.201.{n}.2"
    _ip("netns", "add", ns)
    try:
        _ip("link", "add", here, "type", "veth", "peer", "name", there)
        _ip("link", "set", there, "netns", ns)
        _ip("addr", "add", f"{console_ip}/30", "dev", here)
        _ip("link", "set", here, "up")
        _ip("-n", ns, "addr", "add", f"{node_ip}/30", "dev", there)
        _ip("-n", ns, "link", "set", there, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        yield {"ns": ns, "interface": here, "console_ip": console_ip, "node_ip": node_ip}
    finally:
        subprocess.run(["ip", "link", "del", here], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


class Capture:
    """tshark on an interface with a port filter, into a pcap file."""

    def __init__(self, interface: str, port: int, path) -> None:
        self.path, self.port = path, port
        self.proc = subprocess.Popen(
            ["tshark", "-i", interface, "-f", f"tcp port {port}", "-w", str(path), "-q"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # it says "Capturing on …" once the filter is set
            line = self.proc.stderr.readline() if self.proc.stderr else ""
            if "Capturing on" in line:
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"tshark exited: {self.proc.stderr.read() if self.proc.stderr else ''}")
        raise TimeoutError("tshark did not start capturing")

    def stop(self) -> bytes:
        time.sleep(0.5)  # the last packets reach the file
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(30)
        return self.path.read_bytes()

    def count(self, display_filter: str) -> int:
        out = subprocess.run(
            ["tshark", "-r", str(self.path), "-d", f"tcp.port=={self.port},tls", "-Y", display_filter]
            + ["-T", "fields", "-e", "frame.number"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return len(out.split())


def test_an_agent_in_its_own_network_namespace_joins_over_tls_and_nothing_crosses_in_clear(
    transactional_db, celery_worker_process, live_server_url, process_env, second_host, tmp_path
):
    assert shutil.which("tshark") and shutil.which("ip"), "tshark and iproute2 are installed by .ci/run"
    # The organisation's own certificate (made here, after the link exists, so it names its address).
    org = tls.ensure(tmp_path / "org-tls")
    env = process_env | {"FLEET_TLS_CERT": str(org.cert), "FLEET_TLS_KEY": str(org.key), "FLEET_TLS_CA": str(org.ca)}
    port = free_port()
    endpoint = start_uvicorn("console.asgi:agents", port, env, host=second_host["console_ip"], certs=org)
    capture = None
    agent = None
    try:
        wait_for(lambda: _listening(second_host["console_ip"], port, endpoint), 30, "the agent endpoint")
        admin = make_user("admin", Role.ADMIN)
        _token, plaintext = services.create_join_token(admin, expires_in_hours=1)
        bare = plaintext.rpartition(".")[0]
        token = f"{bare}.{org.ca_fingerprint}"  # the console's CA is the organisation's here

        # From inside the namespace the console's loopback web port is out of reach: only the link.
        web_port = live_server_url.rsplit(":", 1)[1]
        probe = _in_namespace(
            second_host["ns"], f"import socket; socket.create_connection(('127.0.0.1', {web_port}), 2)"
        )
        assert probe.returncode != 0 and "refused" in probe.stderr.lower()

        capture = Capture(second_host["interface"], port, tmp_path / "node.pcap")
        agent = subprocess.Popen(
            ["ip", "netns", "exec", second_host["ns"], sys.executable, "-m", "fleet.agent", "--name", "rack4-node1"]
            + ["--interval", "0.5", "--heartbeat", "1", "--address", second_host["node_ip"]]
            + ["--state-dir", str(tmp_path / "agent")],
            env=node_env(process_env)
            | {"FLEET_CONSOLE_URL": f"https://{second_host['console_ip']}:{port}", "FLEET_JOIN_TOKEN": token},
            cwd=BASE_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        node = wait_for(lambda: Node.objects.filter(name="rack4-node1").first(), 60, "the node to join")
        assert node.state == NodeState.ONLINE and node.address == second_host["node_ip"]
        wait_for(lambda: Node.objects.get(pk=node.pk).last_sample.get("host"), 15, "a heartbeat with a sample")
        assert commands.ask(node, tasks.PING, timeout=20)["node_id"] == node.pk
        commands.push(node.pk, tasks.CANCEL_JOB, {"job_id": 424242})  # a command with a marker in it
        assert commands.wait_until_sent(node.pk, 10)
        credential = (tmp_path / "agent" / "agent.json").read_text()
        pcap = capture.stop()
        capture_file = capture
        capture = None

        # The capture saw the whole conversation (TLS records both ways), and none of it in clear.
        assert capture_file.count("tls.handshake.type == 1") >= 2  # join, register or link hellos
        assert capture_file.count("tls.record.opaque_type == 23") > 10  # TLS 1.3 application data
        secret = credential.split('"credential": "')[1].split('"')[0]
        for clear in (secret, bare, "agent.ping", "agent.cancel_job", "424242", "fleet.heartbeat", "telemetry"):
            assert clear.encode() not in pcap, f"{clear!r} crossed the link in clear"
    finally:
        if capture is not None:
            capture.stop()
        if agent is not None:
            stop_agent(agent)
        stop(endpoint)


def _listening(host: str, port: int, proc: subprocess.Popen) -> bool:
    try:
        wait_for_port(port, proc, timeout=0.2, host=host)
        return True
    except TimeoutError:
        return False


def _in_namespace(ns: str, code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", code], capture_output=True, text=True, timeout=30
    )
