"""Single sign-on with OpenID Connect, against a real provider in its own process (django-oauth-
toolkit, tests/oidc_provider) reached through discovery: the code flow with PKCE, groups to
roles, refusals with their reason, RP-initiated logout, and ID tokens that must be refused."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.test import Client
from joserfc import jwt
from joserfc.jwk import RSAKey

from access.people import oidc
from access.people.choices import Role, Source
from access.people.models import DirectoryMapping, User
from audit.models import AuditEvent
from tests.oidc_provider import server

CALLBACK = "http://testserver/login/oidc/idp/callback/"


@pytest.fixture(scope="module")
def provider(tmp_path_factory) -> Iterator[server.Provider]:
    started = server.start(tmp_path_factory.mktemp("idp"), [CALLBACK], ["http://testserver/login/"])
    yield started
    started.stop()


@pytest.fixture
def sso(db, provider, settings, department) -> server.Provider:
    settings.FLEET_OIDC_PROVIDERS = {
        "idp": {
            "discovery_url": provider.discovery_url,
            "client_id": server.CLIENT_ID,
            "client_secret": server.CLIENT_SECRET,
            "label": "Example IdP",
            "groups_claim": "groups",
            "scopes": "",
        }
    }
    DirectoryMapping.objects.create(provider="idp", group="fleet-admins", role=Role.ADMIN)
    DirectoryMapping.objects.create(provider="idp", group="fleet-auditors", role=Role.AUDITOR)
    DirectoryMapping.objects.create(provider="idp", group="Radiology", role=Role.DEPT_USER, department=department)
    return provider


def _to_callback(client: Client, provider: server.Provider, username: str) -> str:
    """The browser's part: start here, sign in on the provider's own page, come back with a code."""
    start = client.get("/login/oidc/idp/")
    assert start.status_code == 302 and start["Location"].startswith(provider.url + "/authorize/")
    query = parse_qs(urlsplit(start["Location"]).query)
    assert query["code_challenge_method"] == ["S256"] and query["nonce"] and query["state"]
    browser = requests.Session()
    page = browser.get(start["Location"], timeout=10)
    assert "Example IdP" in page.text  # the provider's login page, not ours
    next_url = re.search(r'name="next" value="([^"]+)"', page.text).group(1).replace("&amp;", "&")
    signed = browser.post(
        page.url,
        data={
            "username": username,
            "password": server.PASSWORD,
            "next": next_url,
            "csrfmiddlewaretoken": browser.cookies["idp_csrftoken"],
        },
        allow_redirects=False,
        timeout=10,
    )
    back = browser.get(
        urlsplit(provider.url)._replace(path="").geturl() + signed.headers["Location"],
        allow_redirects=False,
        timeout=10,
    )
    assert back.status_code == 302 and back.headers["Location"].startswith(CALLBACK), back.text[:500]
    parts = urlsplit(back.headers["Location"])
    return f"{parts.path}?{parts.query}"


@pytest.mark.parametrize(
    ("username", "role"), [("olivia", Role.ADMIN), ("rita", Role.AUDITOR), ("paul", Role.DEPT_USER)]
)
def test_a_provider_user_lands_with_the_role_their_group_maps_to(sso, username, role):
    client = Client()
    response = client.get(_to_callback(client, sso, username))
    assert response.status_code == 302 and response["Location"] == "/"
    user = User.objects.get(username=username)
    assert (user.source, user.role, user.email) == (Source.OIDC, role, f"{username}@example.org")
    assert user.external_id.startswith("idp:") and not user.has_usable_password()
    assert client.get("/").status_code == 200
    assert AuditEvent.objects.get(action="auth.login", actor_name=username).context == {
        "method": "oidc:idp",
        "role": role,
    }


def test_the_sign_in_page_offers_each_provider(sso):
    page = Client().get("/login/").content.decode()
    assert 'href="/login/oidc/idp/"' in page and "Example IdP" in page


def test_someone_in_no_mapped_group_sees_a_clear_refusal(sso):
    client = Client()
    response = client.get(_to_callback(client, sso, "quinn"))
    assert response.status_code == 401 and "not in any group that gives access" in response.content.decode()
    assert not User.objects.filter(username="quinn").exists()
    refused = AuditEvent.objects.get(action="auth.login_failed")
    assert refused.context == {"username": "quinn", "reason": "in no mapped group", "method": "oidc:idp"}


def test_a_wrong_or_replayed_state_is_refused(sso):
    client = Client()
    callback = _to_callback(client, sso, "paul")
    forged = re.sub(r"state=[^&]+", "state=forged", callback)
    assert client.get(forged).status_code == 401
    assert client.get(callback).status_code == 302  # the real one still works, once
    client.post("/logout/")
    assert client.get(callback).status_code == 401  # replayed
    reasons = list(AuditEvent.objects.filter(action="auth.login_failed").values_list("context__reason", flat=True))
    assert reasons == ["the sign-in's state does not match (an old, replayed or forged redirect)"] * 2


def test_signing_out_signs_out_at_the_provider_too(sso):
    client = Client()
    client.get(_to_callback(client, sso, "olivia"))
    response = client.post("/logout/")
    assert response.status_code == 302 and response["Location"].startswith(sso.url + "/logout/")
    query = parse_qs(urlsplit(response["Location"]).query)
    assert query["id_token_hint"] and query["post_logout_redirect_uri"] == ["http://testserver/login/"]
    assert client.get("/").status_code == 302


def test_a_new_signing_key_at_the_provider_is_fetched_when_it_appears(sso, settings, tmp_path):
    """Key rotation: the console holds the provider's old key set; the provider, restarted where it
    was, signs with a new key; the unknown key id makes the console fetch the set again."""
    own = server.start(tmp_path / "rotating", [CALLBACK], ["http://testserver/login/"])
    settings.FLEET_OIDC_PROVIDERS = {"idp": settings.FLEET_OIDC_PROVIDERS["idp"] | {"discovery_url": own.discovery_url}}
    try:
        client = Client()
        assert client.get(_to_callback(client, own, "rita")).status_code == 302
        old_kid = oidc.client("idp").server_metadata["jwks"]["keys"][0]["kid"]
        own.stop()
        own = server.start(tmp_path / "rotating", [CALLBACK], [], port=urlsplit(own.url).port)
        client = Client()
        assert client.get(_to_callback(client, own, "rita")).status_code == 302
        assert oidc.client("idp").server_metadata["jwks"]["keys"][0]["kid"] != old_kid
    finally:
        own.stop()


# --- ID tokens the console must refuse (signed with the provider's own key unless said) ---------


def _token(provider: server.Provider, key_pem: str | None = None, **claims) -> dict:
    kid = requests.get(provider.url + "/.well-known/jwks.json", timeout=5).json()["keys"][0]["kid"]
    now = int(time.time())
    body = {"iss": provider.url, "aud": server.CLIENT_ID, "sub": "1", "iat": now, "exp": now + 300, "nonce": "n-1"}
    body.update(claims)
    key = RSAKey.import_key(key_pem or provider.key_pem)
    return {"id_token": jwt.encode({"alg": "RS256", "kid": kid}, {k: v for k, v in body.items() if v is not None}, key)}


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"aud": "someone-else"}, "aud"),
        ({"iss": "http://127.0.0.1:1/o"}, "iss"),
        ({"exp": int(time.time()) - 3600}, "expired"),
        ({"nonce": "an-old-nonce"}, "nonce"),
        ({"nonce": None}, "nonce"),
    ],
)
def test_an_id_token_with_a_wrong_claim_is_refused(sso, claims, reason):
    assert oidc.validate_id_token("idp", _token(sso), "n-1")["sub"] == "1"  # the same token, right, passes
    with pytest.raises(oidc.Refused, match=reason):
        oidc.validate_id_token("idp", _token(sso, **claims), "n-1")


def test_an_id_token_with_a_bad_signature_is_refused(sso):
    with pytest.raises(oidc.Refused, match="the ID token was refused"):
        oidc.validate_id_token("idp", _token(sso, key_pem=server.new_key()), "n-1")


def test_a_little_clock_skew_is_allowed_and_no_more(sso, settings):
    settings.FLEET_OIDC_LEEWAY_S = 60
    assert oidc.validate_id_token("idp", _token(sso, exp=int(time.time()) - 30), "n-1")
    with pytest.raises(oidc.Refused, match="expired"):
        oidc.validate_id_token("idp", _token(sso, exp=int(time.time()) - 90), "n-1")
