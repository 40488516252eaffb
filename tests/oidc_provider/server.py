"""Start the test OpenID provider as its own process, on a free port, with a fresh RSA key."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from console.config import BASE_DIR
from console.embedded import free_port
from tests.helpers import stop_process

SEED = Path(__file__).with_name("seed.py")
CLIENT_ID, CLIENT_SECRET = "fleet-console", "console-client-secret"
PASSWORD = "Provider-passw0rd!"


def new_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@dataclass
class Provider:
    url: str  # the issuer: http://127.0.0.1:<port>/o
    key_pem: str
    proc: subprocess.Popen

    @property
    def discovery_url(self) -> str:
        return f"{self.url}/.well-known/openid-configuration"

    def stop(self) -> None:
        stop_process(self.proc)


def _env(root: Path, key_pem: str, **more: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    return keep | {
        "DJANGO_SETTINGS_MODULE": "tests.oidc_provider.settings",
        "OIDC_PROVIDER_DB": str(root / "provider.sqlite3"),
        "OIDC_PROVIDER_KEY": key_pem,
        "PYTHONPATH": str(BASE_DIR),
        **more,
    }


def start(root: Path, redirects: list[str], logout_redirects: list[str], port: int | None = None) -> Provider:
    """Migrate and seed (once per ``root``), then serve; ``port``: come back where it was (a restart)."""
    root.mkdir(parents=True, exist_ok=True)
    key_pem = new_key()
    env = _env(root, key_pem)
    if not (root / "provider.sqlite3").exists():
        run = [sys.executable, "-m", "django"]
        subprocess.run([*run, "migrate", "-v0"], env=env, cwd=BASE_DIR, check=True)
        seed_env = env | {
            "OIDC_SEED_REDIRECTS": " ".join(redirects),
            "OIDC_SEED_LOGOUT_REDIRECTS": " ".join(logout_redirects),
        }
        subprocess.run([*run, "shell", "-v0", "-c", SEED.read_text()], env=seed_env, cwd=BASE_DIR, check=True)
    port = port or free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "django", "runserver", f"127.0.0.1:{port}", "--noreload", "--skip-checks"],
        env=env,
        cwd=BASE_DIR,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/o"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/.well-known/openid-configuration", timeout=2) as answer:
                if answer.status == 200:
                    return Provider(url, key_pem, proc)
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"the test OpenID provider exited with {proc.returncode}") from None
            time.sleep(0.2)
    proc.kill()
    raise TimeoutError(f"the test OpenID provider did not answer at {url}")
