"""The test suite's own OpenID Connect provider: django-oauth-toolkit in a Django project of its
own, run as a separate process (tests/access/test_oidc.py starts it). Not part of the product."""
