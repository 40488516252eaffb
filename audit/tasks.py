from __future__ import annotations

import logging

from celery import shared_task

log = logging.getLogger(__name__)


@shared_task(name="audit.tasks.verify_chain_task", ignore_result=False)
def verify_chain_task() -> dict:
    """Periodic (beat) and on-demand chain verification; returns the result as JSON."""
    from audit.chain import verify

    result = verify()
    (log.info if result.ok else log.error)("audit chain: %s", result)
    return result.as_dict()
