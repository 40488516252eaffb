"""DRF authentication by personal token: ``Authorization: Bearer fct_...``."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone
from rest_framework import authentication, exceptions

from access import tokens
from access.people.models import PersonalToken
from audit import context as audit_context


class PersonalTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode(errors="replace").split()
        if not header or header[0].lower() not in {"bearer", "token"}:
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Send the header as 'Authorization: Bearer <token>'.")
        plaintext = header[1]
        prefix = tokens.parse_prefix(plaintext)
        token = (
            PersonalToken.objects.select_related("user", "user__department").filter(prefix=prefix).first()
            if prefix
            else None
        )
        if token is None or not tokens.matches(plaintext, token.digest):
            raise exceptions.AuthenticationFailed("Invalid token.")
        now = timezone.now()
        if token.revoked_at is not None:
            raise exceptions.AuthenticationFailed("This token was revoked.")
        if token.expires_at is not None and token.expires_at <= now:
            raise exceptions.AuthenticationFailed("This token has expired.")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("This user is inactive.")
        if token.last_used_at is None or now - token.last_used_at > timedelta(minutes=1):
            PersonalToken.objects.filter(pk=token.pk).update(last_used_at=now)
        # Audit events written during this API call name the token's user (reset by the
        # request's AuditContextMiddleware when the request ends).
        audit_context.push(user=token.user, channel="api")
        return token.user, token

    def authenticate_header(self, request) -> str:
        return self.keyword
