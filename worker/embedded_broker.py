"""The embedded broker: kombu's file-system transport, with message files written whole.

kombu writes a message straight under its final name; a consumer listing the
queue folder at that moment moves and reads a file that is still empty, its
JSON decoding fails and the Celery worker stops ("Unrecoverable error"),
leaving the queue unserved until it is restarted.  Here a message is written
under a name no consumer picks up and renamed into place when complete, so a
consumer sees it whole or not at all.  The queue only carries work (the
database holds the jobs and the recovery sweep re-sends what a lost message
left behind), so message files are not fsynced.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from time import monotonic
from typing import Any

from celery.worker import state as worker_state
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

#: Suffix of a message file being written (kombu only reads ``*.<queue>.msg``).
PARTIAL_SUFFIX = ".partial"

#: The longest a wait for messages goes on before it looks at the worker's stop flag again.
DRAIN_SLICE_SECONDS = 0.1


def _worker_stopping() -> bool:
    """Whether the worker has been told to stop (its SIGTERM and SIGQUIT handlers set flags)."""
    # Identity checks: a warm stop sets should_stop to the exit code 0.
    return any(
        flag is not None and flag is not False
        for flag in (worker_state.should_stop, worker_state.should_terminate)
    )


class Channel(filesystem.Channel):
    """kombu's file-system channel whose messages appear atomically."""

    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        """Put ``payload`` on ``queue``: write a partial file, then rename it into place."""
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = final + PARTIAL_SUFFIX
        try:
            with open(partial, "wb") as handle:
                handle.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(partial)
            raise filesystem.ChannelError(f"cannot add a message to {queue!r}") from exc


class Transport(filesystem.Transport):
    """The file-system transport with :class:`Channel`, whose waits end soon after a stop.

    Celery's blocking loop (the only one a polling transport gets) waits 2 s for
    messages, and once more after SIGTERM before it stops; kombu's wait only
    ends on a message or at its timeout.  Waiting in slices of
    :data:`DRAIN_SLICE_SECONDS` that give up once the worker is stopping lets
    an idle ``ainode run`` exit within a second or so of SIGTERM.
    """

    Channel = Channel

    def drain_events(self, connection: Any, timeout: float | None = None) -> Any:
        """Deliver the next message, or raise :class:`TimeoutError` at ``timeout`` or a stop."""
        deadline = None if timeout is None else monotonic() + timeout
        while True:
            remaining = DRAIN_SLICE_SECONDS if deadline is None else deadline - monotonic()
            try:
                return super().drain_events(
                    connection, timeout=max(0.0, min(DRAIN_SLICE_SECONDS, remaining))
                )
            except TimeoutError:
                if _worker_stopping() or (deadline is not None and monotonic() >= deadline):
                    raise
