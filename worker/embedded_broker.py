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

from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

#: Suffix of a message file being written (kombu only reads ``*.<queue>.msg``).
PARTIAL_SUFFIX = ".partial"


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
    """The file-system transport with :class:`Channel`."""

    Channel = Channel
