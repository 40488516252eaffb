"""Run by `django-admin shell` on the provider: its people, groups and the console as a client.
Reads OIDC_SEED_REDIRECTS (the console's callback URLs) and prints nothing."""

import os

from django.contrib.auth.models import Group, User
from oauth2_provider.models import Application

PASSWORD = "Provider-passw0rd!"
for username, groups, active in [
    ("olivia", ["fleet-admins"], True),
    ("paul", ["radiology"], True),
    ("quinn", ["canteen"], True),
    ("rita", ["fleet-auditors"], True),
]:
    user = User.objects.create_user(username, f"{username}@example.org", PASSWORD, first_name=username.title())
    user.is_active = active
    user.save()
    for name in groups:
        user.groups.add(Group.objects.get_or_create(name=name)[0])
Application.objects.create(
    name="Fleet Console",
    client_id="fleet-console",
    client_secret="console-client-secret",
    client_type=Application.CLIENT_CONFIDENTIAL,
    authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
    redirect_uris=os.environ["OIDC_SEED_REDIRECTS"],
    post_logout_redirect_uris=os.environ["OIDC_SEED_LOGOUT_REDIRECTS"],
    algorithm=Application.RS256_ALGORITHM,
    skip_authorization=True,
)
