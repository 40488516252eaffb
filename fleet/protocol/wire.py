"""The node boundary: what an agent and the console's agent endpoint say to each other.

An agent holds only the console's URL, the CA fingerprint from its join token, and a credential
of its own. It joins and re-registers over HTTPS and keeps one websocket open for everything
else. The console attributes every message to the credential the socket was opened with, never
to a field in the message, and relays what a node may say into its own Celery tasks and channel
groups; anything else is refused, counted and audited (``node.refused``).
"""

from __future__ import annotations

import hashlib
import ssl

from fleet.protocol import tasks

JOIN_PATH = "/agent/join"  # POST {name, token, facts} → {node_id, name, kind, credential}
REGISTER_PATH = "/agent/register"  # POST {name, facts} with the credential: a restarted agent
CA_PATH = "/agent/ca.pem"  # the CA the join token's fingerprint pins
LINK_PATH = "/agent/link"  # the websocket, opened with the credential

CREDENTIAL_KIND = "fnc"  # fleet node credential: fnc_<node id>_<secret>
MAX_MESSAGE_BYTES = 256 * 1024

# agent → console. Reports are relayed to the console task of the same name with the node's id
# added, and with only these fields (anything else in a report is dropped).
REPORTS: dict[str, frozenset[str]] = {
    tasks.HEARTBEAT: frozenset({"sample"}),
    tasks.ROLLUPS: frozenset({"minute", "rows"}),
    tasks.INSTANCE_REPORT: frozenset({"report"}),
    tasks.RUNTIME_REPORT: frozenset({"runtime", "state", "detail"}),
    tasks.JOB_REPORT: frozenset({"report"}),
}
TELEMETRY = "telemetry"  # {"sample"} of this node → telemetry.fleet (and so telemetry.node.<own id>)
INSTANCE_LOG = "instance.log"  # {"instance", "lines"} → instance.<id>.log, for this node's instances only
RUNTIME_LOG = "runtime.log"  # {"runtime", "line"} → node.<own id>.runtime
ACK = "ack"  # {"id"}: a command was received; the console forgets it
RESULT = "result"  # {"id", "value"}: the answer to a command that asked for one
SAYS = frozenset({*REPORTS, TELEMETRY, INSTANCE_LOG, RUNTIME_LOG, ACK, RESULT})

# console → agent
COMMAND = "command"  # {"id", "task", "kwargs", "reply"}
CREDENTIAL = "credential"  # {"credential"}: a rotated credential; the socket closes after it

CLOSE_REVOKED = 4403  # removed, or its credential no longer valid: do not reconnect with it
CLOSE_ROTATED = 4001  # reconnect at once with the credential just sent


def credential(node_id: int, secret: str) -> str:
    return f"{CREDENTIAL_KIND}_{node_id}_{secret}"


def parse_credential(value: object) -> tuple[int, str] | None:
    parts = value.split("_", 2) if isinstance(value, str) else []
    if len(parts) != 3 or parts[0] != CREDENTIAL_KIND or not parts[1].isdigit() or len(parts[2]) < 32:
        return None
    return int(parts[1]), parts[2]


def split_join_token(value: str) -> tuple[str, str | None]:
    """``<token>.<sha256 of the console's CA>`` → (token, fingerprint); a bare token has none."""
    token, dot, pin = value.strip().rpartition(".")
    if not dot:
        return value.strip(), None
    return token, pin.lower()


def fingerprint(pem: str | bytes) -> str:
    """SHA-256 of the certificate's DER form, as kubeadm's discovery-token-ca-cert-hash."""
    text = pem.decode() if isinstance(pem, bytes) else pem
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(text)).hexdigest()
