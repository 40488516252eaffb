import os
import secrets

from django.core.management.base import BaseCommand
from django.db import transaction

from access.people.choices import Role
from access.people.models import User


class Command(BaseCommand):
    help = "Create the first admin if there is none (password from FLEET_ADMIN_PASSWORD, else generated)."

    def handle(self, *args, **options) -> None:
        with transaction.atomic():
            if User.objects.filter(role=Role.ADMIN, is_active=True).exists():
                self.stdout.write("An admin exists; nothing to do.")
                return
            username = os.environ.get("FLEET_ADMIN_USER") or "admin"
            password = os.environ.get("FLEET_ADMIN_PASSWORD")
            generated = not password
            if generated:
                password = secrets.token_urlsafe(15)
            user = User(username=username, role=Role.ADMIN, is_superuser=True)
            user.set_password(password)
            user.save()
        if generated:
            self.stdout.write(
                self.style.WARNING(
                    f"\n  First admin created.  user: {username}   password: {password}\n"
                    "  This password is shown once; change it after signing in.\n"
                )
            )
        else:
            self.stdout.write(f"First admin '{username}' created with the password from FLEET_ADMIN_PASSWORD.")
