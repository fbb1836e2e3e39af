"""The base class of the node's tasks: late acks, expected errors, DB state on failure.

A task receives an id, asserts the state of the world from the database and
does only what is still missing, so a redelivered or duplicated message is
harmless.  Expected errors (bad input, a pipeline that cannot analyse a
series) are recorded by the task itself and are not retried; anything
unexpected is recorded here, in ``on_failure``, so no failure is invisible.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task

from core.errors import InputRejected, PipelineError

log = logging.getLogger(__name__)


class NodeTask(Task):
    """Celery task base for long jobs: acks_late, re-queue on worker loss, prefetch 1."""

    abstract = True
    acks_late = True
    reject_on_worker_lost = True
    throws = (PipelineError, InputRejected)
    record_failure: Any = None

    def on_failure(
        self, exc: BaseException, task_id: str, args: tuple, kwargs: dict, einfo: Any
    ) -> None:
        """Record an unexpected failure against the job or delivery the task was given."""
        if self.record_failure is None or not args:
            return
        # The exception text may quote dataset values: record only its type.
        reason = f"internal error ({type(exc).__name__}); see the worker log of task {task_id}"
        try:
            self.record_failure(self.app.runtime, int(args[0]), reason)
        except Exception:
            log.exception("could not record the failure of task %s", task_id)
