"""Configuration read from the environment, in one place.

Two modes: ``production`` (the default) demands every required setting and turns on HTTPS-only
cookies and HSTS; ``local`` (set by ``make run``/``make test``, see ``console.launch``) fills in
safe defaults for a single machine served over plain HTTP on loopback.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import overload

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

__all__ = ["BASE_DIR", "env", "env_bool", "env_int", "env_list", "require", "mode", "data_dir", "local_secret_key"]


@overload
def env(name: str, default: str) -> str: ...


@overload
def env(name: str, default: None = None) -> str | None: ...


def env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def env_bool(name: str, default: bool = False) -> bool:
    value = env(name)
    if value is None:
        return default
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {value!r}")


def env_list(name: str, default: list[str]) -> list[str]:
    value = env(name)
    return [item.strip() for item in value.split(",") if item.strip()] if value else default


def require(name: str, hint: str = "") -> str:
    value = env(name)
    if value is None:
        raise ImproperlyConfigured(
            f"The environment variable {name} is required but not set." + (f" {hint}" if hint else "")
        )
    return value


def mode() -> str:
    value = env("FLEET_MODE", "production")
    if value not in {"production", "local"}:
        raise ImproperlyConfigured(f"FLEET_MODE must be 'production' or 'local', not {value!r}")
    return value


def data_dir() -> Path:
    """Where the embedded servers, the generated local secret and beat's schedule live."""
    path = Path(env("FLEET_DATA_DIR", str(BASE_DIR / ".data"))).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def local_secret_key() -> str:
    """A per-installation key for local mode, generated once and kept (0600) in the data dir."""
    path = data_dir() / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(64))
        path.chmod(0o600)
    return path.read_text().strip()


def env_int(name: str, default: int) -> int:
    value = env(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {value!r}") from None


def oidc_providers() -> dict[str, dict[str, str]]:
    """FLEET_OIDC_PROVIDERS=keycloak,entra and, per name, FLEET_OIDC_<NAME>_DISCOVERY_URL, _CLIENT_ID,
    _CLIENT_SECRET, and optionally _LABEL (the sign-in button), _GROUPS_CLAIM, _SCOPES (beyond
    openid, email and profile)."""
    found: dict[str, dict[str, str]] = {}
    for name in env_list("FLEET_OIDC_PROVIDERS", []):
        if not name.replace("-", "").isalnum():
            raise ImproperlyConfigured(f"FLEET_OIDC_PROVIDERS: {name!r} is not a name (letters, digits, hyphens)")
        prefix = f"FLEET_OIDC_{name.upper().replace('-', '_')}_"
        found[name] = {
            "discovery_url": require(prefix + "DISCOVERY_URL", "The provider's .well-known/openid-configuration URL."),
            "client_id": require(prefix + "CLIENT_ID"),
            "client_secret": require(prefix + "CLIENT_SECRET"),
            "label": env(prefix + "LABEL", name),
            "groups_claim": env(prefix + "GROUPS_CLAIM", "groups"),
            "scopes": env(prefix + "SCOPES", ""),
        }
    return found
