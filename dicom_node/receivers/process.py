"""A receiver process: the Storage SCP serving the connections the main process hands over.

The main process starts each one as ``python -m dicom_node.receivers.process
HANDOFF_FD ROWS_FD`` (see :mod:`dicom_node.receivers.pool`): ``HANDOFF_FD`` is its
end of the hand-over channel (:mod:`dicom_node.receivers.handoff`), ``ROWS_FD`` its end
of the pipe on which it gets its :class:`~dicom_node.scp.settings.ScpSettings`
first, then sends each instance's row to be recorded (see
:mod:`dicom_node.recording.remote`).

A receiver loads only what the SCP needs, so that several of them fit the
memory of one: neither the database layer nor pydantic (the main process
records the rows and validates the settings), nor pydicom's pixel codecs.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import sys
import threading
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

from dicom_node.receivers.handoff import HandoffClosed, take_over

if TYPE_CHECKING:
    from dicom_node.recording.remote import RemoteRecorder
    from dicom_node.scp.server import StorageSCP

#: What a receiver sends once it serves connections ...
READY = "ready"
#: ... each time a connection has negotiated an association, and when that is over ...
ASSOCIATION_NEGOTIATED = "negotiated"
ASSOCIATION_RELEASED = "released"
#: ... and each time a connection is over (negotiated or not).
ASSOCIATION_ENDED = "ended"

#: Packages pydicom imports for decoding pixel data when they are installed.
#: A receiver stores the encoded bytes as they came and never decodes them;
#: without these it needs ≈ 18 MB less (numpy alone ≈ 14 MB).
PIXEL_CODEC_PACKAGES = ("numpy", "PIL", "pylibjpeg")


def _without_pixel_codecs() -> None:
    """Make every later ``import`` of the pixel codec packages fail, as if none were installed."""
    for name in PIXEL_CODEC_PACKAGES:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]


class _Receiver:
    """A receiver's SCP serving what is handed over, and what it tells the main process.

    The main process counts each child's open connections (for the balance)
    and negotiated associations (for the association limit) from these notices.
    """

    def __init__(self, scp: StorageSCP, recorder: RemoteRecorder, stop: threading.Event) -> None:
        self.scp = scp
        self.recorder = recorder
        self.stop = stop

    def report(self, message: str) -> None:
        """Tell the main process ``message``, unless it is gone (the pipe's end says so)."""
        with contextlib.suppress(OSError):
            self.recorder.send(message)

    def take_connections(self, handoff: socket.socket) -> None:
        """Serve every connection handed over on ``handoff``; stop once the channel closes."""
        with contextlib.suppress(HandoffClosed):
            while True:
                accepted, active = take_over(handoff)
                try:
                    host = str(accepted.getpeername()[0])
                except OSError:  # the peer left before the hand-over
                    accepted.close()
                    self.report(ASSOCIATION_ENDED)
                    continue
                self.serve(accepted, host, active)
        self.stop.set()

    def serve(self, accepted: socket.socket, host: str, active: int) -> None:
        """Serve one connection in a thread of the SCP, with its notices."""
        negotiated = threading.Event()

        def on_negotiated() -> None:
            negotiated.set()
            self.report(ASSOCIATION_NEGOTIATED)

        def on_end() -> None:
            if negotiated.is_set():
                self.report(ASSOCIATION_RELEASED)
            self.report(ASSOCIATION_ENDED)

        self.scp.serve(
            accepted, host, active_elsewhere=active, on_end=on_end, on_negotiated=on_negotiated
        )


def serve(handoff_fd: int, rows_fd: int) -> None:
    """Serve connections handed over on ``handoff_fd`` until SIGTERM or the main process is gone."""
    _without_pixel_codecs()
    # Imported only now: pydicom looks for the codecs as it is imported.
    from dicom_node.recording.remote import RemoteRecorder
    from dicom_node.scp.server import StorageSCP
    from dicom_node.scp.settings import ScpSettings

    connection = Connection(rows_fd)
    settings = ScpSettings.from_json(connection.recv())
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s receiver %(process)d %(name)s: %(message)s",
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides when receivers stop
    # Exit with the main process: a closed pipe or hand-over channel ends the wait as SIGTERM does.
    recorder = RemoteRecorder(connection, on_closed=stop.set)
    scp = StorageSCP(settings, recorder, clean_spool=False)
    scp.start(listen=False)
    receiver = _Receiver(scp, recorder, stop)
    handoff = socket.socket(fileno=handoff_fd)
    threading.Thread(
        target=receiver.take_connections, args=(handoff,), name="scp-handoff", daemon=True
    ).start()
    recorder.send(READY)
    stop.wait()
    scp.stop()


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]))
