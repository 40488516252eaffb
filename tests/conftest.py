"""Personas and helpers shared by every test. Real Postgres and Redis (see console.launch)."""

from __future__ import annotations

import os
import sys
import threading

import pytest
from django.db import connection
from django.test import Client

from access.people.choices import Role
from access.people.models import Department, User

PASSWORD = "Fleet-test-passw0rd!"
PERSONAS = ("admin", "dept_user", "auditor", "outsider")


@pytest.fixture
def department(db) -> Department:
    return Department.objects.create(name="Radiology", slug="radiology")


def make_user(username: str, role: str, department: Department | None = None) -> User:
    user = User(username=username, role=role, department=department, email=f"{username}@example.org")
    user.set_password(PASSWORD)
    user.save()
    return user


@pytest.fixture
def people(db, department) -> dict[str, User]:
    """The four personas: IT admin, a department member, an auditor, and a user with no role."""
    return {
        "admin": make_user("admin", Role.ADMIN),
        "dept_user": make_user("dept_user", Role.DEPT_USER, department),
        "auditor": make_user("auditor", Role.AUDITOR),
        "outsider": make_user("outsider", Role.NONE),
    }


@pytest.fixture
def client_for(people):
    """client_for("auditor") → a Django test client signed in as that persona (None: anonymous)."""

    def make(persona: str | None) -> Client:
        client = Client()
        if persona is not None:
            client.force_login(people[persona])
        return client

    return make


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """The test database (only it) lets the runner TRUNCATE the audit table between tests; the
    append-only trigger refuses TRUNCATE everywhere else."""
    with django_db_blocker.unblock():
        with connection.cursor() as cursor:
            cursor.execute(
                f"ALTER DATABASE \"{connection.settings_dict['NAME']}\" SET fleet.audit_allow_truncate = 'on'"
            )
            cursor.execute("SET fleet.audit_allow_truncate = 'on'")
    yield


_EXIT_STATUS = pytest.StashKey[int]()


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus) -> None:
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config) -> None:
    """A test that timed out can leave a thread waiting forever on an event loop it abandoned (seen
    once in CI: the run printed its report, then never exited). The report is out by now; such a
    thread must not hold the run, so the process ends here with the run's status, naming it."""
    stuck = [t.name for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if stuck and _EXIT_STATUS in config.stash:
        print(f"\nleft behind at exit (not waited for): {', '.join(stuck)}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(config.stash[_EXIT_STATUS])
