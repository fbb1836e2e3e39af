"""Task registration: binds the node's task functions to an app built by create_app."""

from __future__ import annotations

from typing import TYPE_CHECKING

from worker.base import NodeTask

if TYPE_CHECKING:
    from celery import Celery


def register_tasks(app: Celery) -> None:
    """Register ``ainode.run_job``, ``ainode.send_delivery`` and ``ainode.send_hl7`` on ``app``."""
    from worker.hl7 import outbox
    from worker.queues import RUN_JOB, SEND_DELIVERY, SEND_HL7
    from worker.tasks import inference, send

    @app.task(
        name=RUN_JOB, base=NodeTask, bind=True, record_failure=staticmethod(inference.fail_job)
    )
    def run_job(task: NodeTask, job_id: int) -> str:
        return inference.execute_job(task.app.runtime, job_id, task.app).value

    @app.task(
        name=SEND_DELIVERY,
        base=NodeTask,
        bind=True,
        record_failure=staticmethod(send.fail_delivery),
    )
    def send_delivery(task: NodeTask, delivery_id: int) -> str:
        return send.execute_delivery(task.app.runtime, delivery_id, task.app).value

    @app.task(name=SEND_HL7, base=NodeTask, bind=True, record_failure=staticmethod(outbox.fail_hl7))
    def send_hl7(task: NodeTask, message_id: int) -> str:
        return outbox.execute_hl7(task.app.runtime, message_id, task.app).value
