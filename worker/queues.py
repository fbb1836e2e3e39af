"""The queues, the task names on them and how an id is put there.

The one module every side of the queue shares: the app factory routes by
these names, the tasks register under them and the scheduler and the tasks
enqueue with :func:`enqueue`.  It imports nothing of the worker, so no import
runs back from a task to the app that registers it.
"""

from __future__ import annotations

import logging

from celery import Celery

QUEUES = ("cpu", "gpu", "send")
RUN_JOB = "ainode.run_job"
SEND_DELIVERY = "ainode.send_delivery"
SEND_HL7 = "ainode.send_hl7"

log = logging.getLogger(__name__)


def enqueue(app: Celery, task: str, item_id: int, queue: str, countdown: float = 0) -> bool:
    """Send ``task(item_id)`` to ``queue`` after ``countdown`` seconds; False if the broker refused.

    A refusal is logged, not raised: the row stays in the database and the
    recovery sweep sends it again.
    """
    try:
        app.send_task(task, args=[item_id], queue=queue, countdown=countdown or None)
    except Exception as exc:
        log.error(
            "could not enqueue %s(%d): %s; the recovery sweep will retry",
            task,
            item_id,
            type(exc).__name__,
        )
        return False
    return True


def enqueue_delivery(app: Celery, delivery_id: int, countdown: float = 0) -> bool:
    """Put a delivery id on the send queue, after ``countdown`` seconds."""
    return enqueue(app, SEND_DELIVERY, delivery_id, "send", countdown)


def enqueue_hl7(app: Celery, message_id: int, countdown: float = 0) -> bool:
    """Put an HL7 message id on the send queue, after ``countdown`` seconds."""
    return enqueue(app, SEND_HL7, message_id, "send", countdown)
