"""The receiving side of the node as one object: SCP, stability monitor and dispatcher.

``ainode serve`` runs exactly this; workers run separately (``ainode worker``)
or, with ``ainode run``, as supervised child processes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from celery import Celery

from core.config import Settings
from core.db.session import make_engine, make_session_factory
from dicom_node.receivers.pool import ReceiverPool
from dicom_node.recording.group_commit import GroupCommitRecorder
from dicom_node.scp.server import StorageSCP
from dicom_node.scp.settings import ScpSettings
from dicom_node.store.receive import remove_stale
from scheduler.dispatch import Dispatcher
from scheduler.stability import StabilityMonitor
from worker.celery_app import create_app
from worker.commitment import CommitmentOutcome, apply_inbox, sweep_commitments

log = logging.getLogger(__name__)

#: Seconds a receiver process gets beyond the network timeout to end before it is killed.
RECEIVER_STOP_MARGIN = 5.0


class NodeService:
    """Receives studies, decides when they are complete and queues their jobs."""

    def __init__(self, settings: Settings, app: Celery | None = None) -> None:
        self.settings = settings
        self.engine = make_engine(settings.effective_database_url)
        self.session_factory = make_session_factory(self.engine)
        self.app = app or create_app(settings)
        self.dispatcher = Dispatcher(self.app, self.session_factory, settings)
        self.monitor = StabilityMonitor(
            self.session_factory,
            settings.stability_seconds,
            on_stable=self.dispatcher.route_study,
            sweep=self.sweep,
            sweep_seconds=settings.recovery_interval_seconds,
        )
        # One recorder for the rows of every receiver process: they share commits.
        self.recorder = GroupCommitRecorder(self.session_factory, settings.store_identifiers)
        scp_settings = ScpSettings.from_settings(settings)
        self.receivers = ReceiverPool(scp_settings, self.recorder, on_recorded=self.monitor.notify)
        # With several receiver processes this one accepts, hands over and records.
        self.scp = StorageSCP(
            scp_settings,
            self.recorder,
            on_recorded=self.monitor.notify,
            hand_over=self.receivers.hand_over if settings.receiver_processes > 1 else None,
            on_commitment_report=self.apply_commitment_reports,
        )

    @property
    def port(self) -> int:
        """The port the SCP listens on."""
        return self.scp.port

    def sweep(self) -> None:
        """The periodic recovery: lost jobs and deliveries, commitment reports, stale files."""
        self.dispatcher.recover()
        self._commitments(sweep_commitments)
        remove_stale(self.scp.receive_dir, 2 * self.settings.network_timeout_seconds)

    def apply_commitment_reports(self) -> None:
        """Apply the Storage Commitment reports received; what failed is sent again.

        A job whose results are all committed gets its HL7 result messages.
        """
        self._commitments(apply_inbox)

    def _commitments(self, step: Callable[..., CommitmentOutcome]) -> None:
        try:
            outcome = step(self.scp.commitment, self.session_factory, self.settings)
        except Exception:
            # The reports stay in the inbox; the next sweep applies them.
            log.exception("cannot apply storage commitment reports now")
            return
        for delivery_id in outcome.resend:
            self.dispatcher.enqueue_delivery(delivery_id)
        for message_id in outcome.hl7_messages:
            self.dispatcher.enqueue_hl7(message_id)

    def start(self) -> None:
        """Re-enqueue what an earlier run left queued, then start listening and monitoring."""
        self.dispatcher.recover(startup=True)
        self.apply_commitment_reports()
        if self.settings.receiver_processes > 1:
            self.receivers.start(self.settings.receiver_processes)
        self.scp.start()
        self.monitor.start()

    def stop(self) -> None:
        """Stop listening at once, let instances in progress finish, stop the monitor.

        Instances being received get up to the network timeout to arrive and
        be answered (receiver processes too); an idle node stops in a moment.
        The refusals counted until then, the receivers' included, are written.
        """
        self.scp.stop()
        self.receivers.stop(timeout=self.settings.network_timeout_seconds + RECEIVER_STOP_MARGIN)
        self.monitor.stop()
        self.recorder.close()
        self.engine.dispose()
