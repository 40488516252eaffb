"""The agent's side of the node boundary (fleet.protocol.wire): HTTPS to join and re-register, one
websocket for everything else, and TLS checked against the CA its join token pins.

The agent holds the console's URL, the pinned CA (saved at join) and its own credential: nothing
that opens the console's Redis or database.
"""

from __future__ import annotations

import collections
import ipaddress
import json
import logging
import os
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from fleet.protocol import wire

log = logging.getLogger("fleet.agent")
BACKLOG = 10_000  # reports kept while the link is down (telemetry is not kept: it is live only)


class LinkError(Exception):
    """Why the agent cannot talk to the console, said plainly."""


class Refused(LinkError):
    """The console answered and said no (revoked, removed, a used join token…)."""


class Unreachable(LinkError):
    """Nothing answered at the console's address (yet): worth trying again."""


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Console:
    """The console as this node sees it: a URL and the CA it must chain to."""

    def __init__(self, url: str, ca_file: Path) -> None:
        parts = urlsplit(url.rstrip("/"))
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise LinkError(f"the console URL must be https://host:port, not {url!r}")
        if parts.scheme == "http" and not _loopback(parts.hostname):
            raise LinkError("a node reaches the console over TLS: give its https:// agent URL")
        self.url, self.tls, self.ca_file = url.rstrip("/"), parts.scheme == "https", ca_file

    def context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        if not self.ca_file.exists():
            raise LinkError("this node has no pinned CA for the console yet: join with a join token")
        return ssl.create_default_context(cafile=str(self.ca_file))  # checks the chain and the name

    def pin(self, fingerprint: str | None) -> None:
        """Fetch the console's CA and keep it only if it is the one the join token names (as kubeadm
        checks discovery-token-ca-cert-hash). Nothing secret is sent before this check."""
        if not self.tls:
            return
        if not fingerprint:
            raise LinkError("this join token carries no CA fingerprint: copy the whole token from the console")
        unverified = ssl._create_unverified_context()  # noqa: S323 (the fingerprint check below is the verification)
        try:
            with urllib.request.urlopen(self.url + wire.CA_PATH, context=unverified, timeout=15) as answer:
                pem = answer.read().decode()
        except (OSError, urllib.error.URLError) as exc:
            raise Unreachable(f"could not reach the console at {self.url}: {exc}") from None
        try:
            got = wire.fingerprint(pem)
        except ValueError:
            raise LinkError("the console sent no certificate for its CA") from None
        if got != fingerprint:
            raise LinkError(
                f"the console's CA (sha256 {got[:16]}…) is not the one this join token pins "
                f"({fingerprint[:16]}…): refusing to talk to it"
            )
        self.ca_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.ca_file.with_suffix(".tmp")
        tmp.write_text(pem)
        tmp.replace(self.ca_file)

    def post(self, path: str, body: dict, credential: str | None = None) -> dict:
        headers = {"Content-Type": "application/json"}
        if credential:
            headers["Authorization"] = f"Bearer {credential}"
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), headers=headers)
        try:
            with urllib.request.urlopen(request, context=self.context(), timeout=60) as answer:
                return json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            try:
                why = json.loads(exc.read()).get("error") or exc.reason
            except ValueError:
                why = exc.reason
            raise Refused(str(why)) from None
        except (OSError, urllib.error.URLError) as exc:
            reason = getattr(exc, "reason", exc)  # urllib wraps the TLS failure
            if isinstance(reason, ssl.SSLCertVerificationError):
                raise LinkError(
                    f"the console's certificate does not chain to the pinned CA: {reason.verify_message}"
                ) from None
            raise Unreachable(f"could not reach the console at {self.url}: {exc}") from None

    @property
    def link_url(self) -> str:
        return ("wss" if self.tls else "ws") + self.url[self.url.index(":") :] + wire.LINK_PATH


class Link:
    """One websocket to the console, opened again whenever it drops; reports sent while it is down
    go out when it is back. A revoked credential ends it for good (``revoked`` is set)."""

    def __init__(self, console: Console, credential: Callable[[], str], on_message: Callable[[dict], None]) -> None:
        self.console, self.credential, self.on_message = console, credential, on_message
        self._ws: ClientConnection | None = None
        self._lock = threading.Lock()
        self._backlog: collections.deque[str] = collections.deque(maxlen=BACKLOG)
        self.connected = threading.Event()
        self.revoked = False

    def send(self, said: dict, keep: bool = True) -> None:
        data = json.dumps(said)
        with self._lock:
            if self._ws is not None:
                try:
                    self._ws.send(data)
                    return
                except (ConnectionClosed, OSError):
                    pass
            if keep:
                self._backlog.append(data)

    def close(self) -> None:
        with self._lock:
            ws = self._ws
        if ws is not None:
            ws.close()

    def run(self, stop: threading.Event) -> None:
        backoff = 0.5
        while not stop.is_set():
            code = None
            try:
                with connect(
                    self.console.link_url,
                    ssl=self.console.context(),
                    additional_headers={"Authorization": f"Bearer {self.credential()}"},
                    proxy=None,
                    open_timeout=10,
                    max_size=4 * wire.MAX_MESSAGE_BYTES,
                ) as ws:
                    with self._lock:
                        while self._backlog:
                            ws.send(self._backlog.popleft())
                        self._ws = ws
                    self.connected.set()
                    backoff = 0.5
                    try:
                        for raw in ws:
                            self.on_message(json.loads(raw))
                    except ConnectionClosed:
                        pass
                    code = ws.close_code
            except InvalidStatus as exc:
                if exc.response.status_code == 403:
                    code = wire.CLOSE_REVOKED
                else:
                    log.warning("the console refused the link: HTTP %s", exc.response.status_code)
            except ssl.SSLCertVerificationError as exc:
                log.error("the console's certificate does not chain to the pinned CA: %s", exc.verify_message)
            except (OSError, InvalidHandshake, TimeoutError, LinkError) as exc:
                log.warning("link to the console: %s", exc)
            finally:
                with self._lock:
                    self._ws = None
                self.connected.clear()
            if code == wire.CLOSE_REVOKED:
                self.revoked = True
                log.error("the console revoked this node's credential (removed?): join again with a new join token")
                stop.set()
                return
            if code == wire.CLOSE_ROTATED:
                continue  # the new credential is saved: reconnect with it at once
            stop.wait(backoff)
            backoff = min(backoff * 2, 10.0)


def save_private(path: Path, data: Any) -> None:
    """JSON, owner-only (0600), replaced atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    tmp.replace(path)
