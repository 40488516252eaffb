"""The Celery app: queue "console" for the web side; agents get "node.<name>" (later issues)."""

import os

from celery import Celery
from celery.signals import task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")

# For tasks that are safe to run twice: acknowledged only once they finish, and handed to another
# worker when theirs dies mid-task (a killed pool child, or a killed worker after the broker's
# visibility timeout), instead of being lost with it.
SURVIVES_A_CRASH = {"acks_late": True, "reject_on_worker_lost": True}

app = Celery("console")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect
def _bind_audit_context(task_id=None, task=None, **_kwargs) -> None:
    # Events recorded inside a task say so and carry the task id as their request id.
    from audit import context  # here: this module loads with console/, before Django's apps

    task.request.audit_token = context.push(user=None, source_ip=None, channel="task", request_id=task_id or "")


@task_postrun.connect
def _unbind_audit_context(task=None, **_kwargs) -> None:
    from audit import context  # here: this module loads with console/, before Django's apps

    token = getattr(task.request, "audit_token", None)
    if token is not None:
        context.pop(token)
