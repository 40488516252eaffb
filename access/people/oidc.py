"""Sign-in with OpenID Connect providers (Authlib): the authorization code flow with PKCE (S256),
the provider found by discovery, ID tokens checked against its JWKS (fetched again when a new key
id appears: key rotation) for issuer, audience, expiry within FLEET_OIDC_LEEWAY_S, nonce and state;
RP-initiated logout. Several providers at once (FLEET_OIDC_PROVIDERS). The groups claim maps to a
role and department through the same DirectoryMapping rows as LDAP groups, per provider.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

from authlib.integrations.base_client import OAuthError
from authlib.integrations.django_client import OAuth
from authlib.oidc.core import CodeIDToken
from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth.backends import BaseBackend
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from joserfc.errors import JoseError

import audit
from access.people import services
from access.people.choices import Source
from access.people.models import User

log = logging.getLogger(__name__)

SESSION_PROVIDER, SESSION_ID_TOKEN = "fleet_oidc_provider", "fleet_oidc_id_token"  # for RP-initiated logout
BACKEND = "access.people.oidc.OIDCBackend"


class Refused(Exception):
    """A sign-in the console will not accept; ``reason`` goes to the trail and the page."""

    def __init__(self, reason: str, username: str = "") -> None:
        super().__init__(reason)
        self.reason, self.username = reason, username


class OIDCBackend(BaseBackend):
    """Loads OIDC sessions' people; passwords are never checked here (the provider did that)."""

    def authenticate(self, request: HttpRequest | None, **credentials: Any) -> None:
        return None

    def get_user(self, user_id: int) -> User | None:
        return User.objects.filter(pk=user_id, is_active=True).first()


def providers() -> dict[str, dict[str, str]]:
    return settings.FLEET_OIDC_PROVIDERS


@lru_cache(maxsize=8)
def _registry(key: tuple) -> OAuth:
    oauth = OAuth()
    for name, conf in providers().items():
        oauth.register(
            name,
            client_id=conf["client_id"],
            client_secret=conf["client_secret"],
            server_metadata_url=conf["discovery_url"],
            client_kwargs={
                "scope": " ".join(["openid", "email", "profile", *conf["scopes"].split()]),
                "code_challenge_method": "S256",
                "timeout": 10,
            },
        )
    return oauth


def client(name: str) -> Any:
    """The provider's Authlib client (KeyError: not configured). Rebuilt when the settings change."""
    if name not in providers():
        raise KeyError(name)
    key = tuple(sorted((n, tuple(sorted(c.items()))) for n, c in providers().items()))
    return _registry(key).create_client(name)


def begin(request: HttpRequest, name: str) -> HttpResponse:
    """Off to the provider's login page, with a fresh state, nonce and PKCE verifier in the session."""
    redirect_uri = request.build_absolute_uri(reverse("oidc-callback", args=[name]))
    return client(name).authorize_redirect(request, redirect_uri)


def validate_id_token(name: str, token: dict, nonce: str) -> dict:
    """The ID token's claims once signature, issuer, audience, expiry (within the leeway) and nonce
    hold; raises Refused naming what failed."""
    app = client(name)
    issuer = app.load_server_metadata().get("issuer")
    options = {"iss": {"essential": True, "values": [issuer]}, "aud": {"essential": True, "values": [app.client_id]}}
    try:
        claims = app.parse_id_token(
            token, nonce=nonce, claims_options=options, claims_cls=CodeIDToken, leeway=settings.FLEET_OIDC_LEEWAY_S
        )
    except (JoseError, ValueError) as exc:
        raise Refused(f"the ID token was refused: {_why(exc)}") from None
    if claims is None:
        raise Refused("the provider sent no ID token")
    return dict(claims)


def finish(request: HttpRequest, name: str) -> User:
    """The provider's redirect back: state checked, code exchanged (with the PKCE verifier), ID token
    validated, the groups claim mapped, the person signed in. Raises Refused."""
    app = client(name)
    state_data = app.framework.get_state_data(request.session, request.GET.get("state"))
    if request.GET.get("error"):
        raise Refused(f"the provider refused: {request.GET.get('error_description') or request.GET['error']}"[:200])
    if not state_data or "nonce" not in state_data:
        raise Refused("the sign-in's state does not match (an old, replayed or forged redirect)")
    app.framework.clear_state_data(request.session, request.GET["state"])  # one use only
    try:
        token = app.fetch_access_token(
            code=request.GET.get("code"),
            redirect_uri=state_data["redirect_uri"],
            code_verifier=state_data.get("code_verifier"),
        )
    except (OAuthError, OSError, ValueError) as exc:
        raise Refused(f"the code could not be exchanged: {_why(exc)}") from None
    claims = validate_id_token(name, token, state_data["nonce"])
    user = _person(name, claims)
    user.fleet_sign_in_method = f"oidc:{name}"  # type: ignore[attr-defined]  # read by the auth.login event
    login(request, user, backend=BACKEND)
    request.session[SESSION_PROVIDER], request.session[SESSION_ID_TOKEN] = name, token["id_token"]
    return user


def _person(name: str, claims: dict) -> User:
    """The person the claims name, made or brought in line with the provider's mapping."""
    sub = str(claims.get("sub", ""))
    username = str(claims.get("preferred_username") or claims.get("email") or sub)[:150]
    groups_claim = claims.get(providers()[name]["groups_claim"]) or []
    groups = {str(g) for g in (groups_claim if isinstance(groups_claim, list) else [groups_claim])}
    found = services.mapped_verdict(name, groups)
    if found.refusal:
        raise Refused(found.refusal, username)
    external_id = f"{name}:{sub}"
    with transaction.atomic():
        user = User.objects.select_for_update(no_key=True).filter(external_id=external_id).first()
        if user is None:
            if User.objects.filter(username__iexact=username).exists():
                raise Refused("an account with this username exists already", username)
            user = User(username=username, external_id=external_id, source=Source.OIDC)
            user.set_unusable_password()
        elif not user.is_active:
            raise Refused("deactivated in the console", username)
        user.role, user.department = found.role, found.department
        user.email = str(claims.get("email", user.email))[:254]
        user.first_name = str(claims.get("given_name", user.first_name))[:150]
        user.last_name = str(claims.get("family_name", user.last_name))[:150]
        user.save()
    return user


def refuse(request: HttpRequest, name: str, refused: Refused) -> None:
    audit.record(
        None, "auth.login_failed", None, username=refused.username, reason=refused.reason, method=f"oidc:{name}"
    )


def logout_url(request: HttpRequest, name: str, id_token: str) -> str | None:
    """The provider's end-session URL (RP-initiated logout), back to our sign-in page afterwards."""
    try:
        made = client(name).create_logout_url(
            post_logout_redirect_uri=request.build_absolute_uri(reverse("login")), id_token_hint=id_token
        )
    except (KeyError, RuntimeError, OAuthError, OSError) as exc:  # no end_session_endpoint, or unreachable
        log.info("no RP-initiated logout at %s: %s", name, exc)
        return None
    return made["url"]


def _why(exc: Exception) -> str:
    return (getattr(exc, "description", None) or getattr(exc, "error", None) or str(exc) or type(exc).__name__)[:160]


__all__ = ["OIDCBackend", "Refused", "begin", "finish", "logout_url", "providers", "refuse", "validate_id_token"]
