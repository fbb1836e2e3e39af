"""The Celery application factory: queues, task settings and the broker.

The queue only carries job and delivery ids; their state lives in the
database.  Settings follow what long GPU work needs: late acknowledgement,
re-queue when a worker dies, prefetch 1, hard time limits and, with Redis, a
visibility timeout well above the longest job so nothing runs twice.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from celery import Celery
from kombu import Queue

from core.config import Settings
from worker.queues import QUEUES, SEND_DELIVERY, SEND_HL7

#: kombu's file-system transport with atomic message files (see :mod:`worker.embedded_broker`).
EMBEDDED_TRANSPORT = "worker.embedded_broker:Transport"


def broker_options(settings: Settings) -> tuple[str, dict[str, Any]]:
    """Broker URL and transport options; the embedded broker is kombu's file-system one."""
    if settings.uses_embedded_broker:
        folder = settings.embedded_broker_dir
        for sub in ("queue", "control", "processed"):
            (folder / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        return "filesystem://", {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "control_folder": str(folder / "control"),
            "processed_folder": str(folder / "processed"),
            "store_processed": False,
            "polling_interval": 0.05,  # queue wait ~25 ms on average (was 0.2 s)
        }
    url = str(settings.broker_url)
    options: dict[str, Any] = {}
    if url.startswith(("redis://", "rediss://")):
        options["visibility_timeout"] = 2 * settings.job_time_limit_seconds + 600
    return url, options


class NodeCelery(Celery):
    """A Celery app that carries the node's settings and builds its runtime on first use."""

    def __init__(self, settings: Settings) -> None:
        super().__init__("ainode", set_as_current=False)
        self.node_settings = settings

    @cached_property
    def runtime(self) -> Any:
        """The per-process :class:`worker.runtime.WorkerRuntime` (DB engine, spool paths)."""
        from worker.runtime import WorkerRuntime

        return WorkerRuntime.from_settings(self.node_settings)


def create_app(settings: Settings) -> NodeCelery:
    """Build the Celery app for ``settings`` and register the node's tasks on it."""
    app = NodeCelery(settings)
    broker_url, transport_options = broker_options(settings)
    app.conf.update(
        broker_url=broker_url,
        broker_transport=EMBEDDED_TRANSPORT if settings.uses_embedded_broker else None,
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        result_backend=None,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_queues=[Queue(name) for name in QUEUES],
        task_default_queue="cpu",
        task_routes={SEND_DELIVERY: {"queue": "send"}, SEND_HL7: {"queue": "send"}},
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_time_limit=settings.job_time_limit_seconds,
        task_soft_time_limit=max(settings.job_time_limit_seconds - 30, 5),
        worker_prefetch_multiplier=1,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_hijack_root_logger=False,
        worker_timer_precision=0.1,  # its timer thread stops within 0.1 s of a SIGTERM
        worker_enable_remote_control=not settings.uses_embedded_broker,
        worker_send_task_events=False,
        enable_utc=True,
    )
    from worker.tasks import register_tasks

    register_tasks(app)
    return app
