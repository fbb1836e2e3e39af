"""Counting the instances the Storage SCP refuses, off the path of its answers.

A refusal is counted in memory (a dict update: no I/O, nothing that can fail
or wait) and a thread of its own adds the counts to ``instance_refusals``, one
row per minute, status, cause and calling AE.  The SCP thus answers a refused
instance exactly as it would without the count, however slow or down the
database is, and a sender whose every instance is refused costs one upsert a
second at most, however many it sends.  While the database is down the counts
wait in memory (the refusals of an outage are themselves worth counting) and
are written once it answers again.  As the node stops, the counts still held
are written once more (:meth:`RefusalTally.close`); only those the database
then refuses are lost, and the log says how many.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from datetime import datetime

from sqlalchemy import bindparam
from sqlalchemy.engine import Engine
from sqlalchemy.sql.dml import Insert

from core.db.models import InstanceRefusal
from dicom_node.recording.dialects import upsert_insert
from dicom_node.recording.received import Refusal

log = logging.getLogger(__name__)

#: Seconds at least between two writes of the counts.
WRITE_INTERVAL_SECONDS = 1.0
#: Seconds before counts that could not be written are tried again.
RETRY_SECONDS = 5.0
#: Most (minute, status, cause, AE) counts held in memory while the database is down.
MAX_HELD = 10_000

_refusals = InstanceRefusal.__table__
Key = tuple[datetime, int, str, str]


def _upsert(dialect: str) -> Insert:
    """Add a count to its (minute, status, cause, AE) row, creating the row when missing."""
    statement = upsert_insert(_refusals, dialect).values(
        minute=bindparam("minute"),
        status=bindparam("status"),
        cause=bindparam("cause"),
        calling_ae=bindparam("ae"),
        count=bindparam("added"),
    )
    return statement.on_conflict_do_update(
        index_elements=[
            _refusals.c.minute,
            _refusals.c.status,
            _refusals.c.cause,
            _refusals.c.calling_ae,
        ],
        set_={"count": _refusals.c.count + statement.excluded.count},
    )


class RefusalTally:
    """Refusals counted in memory and written to the database by a thread of their own.

    The thread starts with the first refusal (a node that refuses nothing
    runs none) and writes what was counted at once, then at most every
    :data:`WRITE_INTERVAL_SECONDS`.  Without ``background`` no thread runs:
    counts are written when :meth:`write` is called.
    """

    def __init__(self, engine: Engine, background: bool = True) -> None:
        self._engine = engine
        self._upsert = _upsert(engine.dialect.name)
        self._background = background
        self._held: Counter[Key] = Counter()
        self._lock = threading.Lock()
        # One write at a time: a closing write waits for the thread's, then takes what is left.
        self._writing = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False
        self._dropped = 0  # refusals not counted since MAX_HELD kinds were held

    def add(self, refusal: Refusal) -> None:
        """Count ``refusal``; written to the database shortly after, by the tally's thread."""
        key = (
            refusal.at.replace(second=0, microsecond=0),
            refusal.status,
            refusal.cause,
            refusal.calling_ae or "",
        )
        with self._lock:
            if key not in self._held and len(self._held) >= MAX_HELD:
                if not self._dropped:
                    log.error(
                        "%d kinds of refusal wait for the database: not counting more", MAX_HELD
                    )
                self._dropped += 1
                return
            self._held[key] += 1
            if self._background and self._thread is None:
                self._thread = threading.Thread(target=self._run, name="refusals", daemon=True)
                self._thread.start()
        self._wake.set()

    def write(self) -> bool:
        """Add the counts held to the database now; whether they are written (else kept)."""
        with self._writing:
            return self._write()

    def close(self) -> None:
        """Write the counts still held, as the process stops; what cannot be is logged as lost."""
        if not self.write():
            with self._lock:
                lost = self._held.total() + self._dropped
            log.error(
                "%d refused instances not recorded: the database failed as the node stopped", lost
            )

    def _write(self) -> bool:
        with self._lock:
            held, self._held = self._held, Counter()
        if not held:
            return True
        rows = [
            {"minute": minute, "status": status, "cause": cause, "ae": ae, "added": count}
            for (minute, status, cause, ae), count in held.items()
        ]
        try:
            with self._engine.begin() as connection:
                connection.execute(self._upsert, rows)
        except Exception as exc:
            with self._lock:
                self._held.update(held)
            if not self._failing:
                log.warning(
                    "cannot record %d refused instances now (%s): kept, tried again",
                    held.total(),
                    type(exc).__name__,
                )
            self._failing = True
            return False
        if self._failing:
            log.info("refused instances counted while the database was unavailable are recorded")
        self._failing = False
        with self._lock:
            dropped, self._dropped = self._dropped, 0
        if dropped:
            log.error("%d refused instances were not counted while the database was down", dropped)
        return True

    def _run(self) -> None:
        written = True
        while True:
            self._wake.wait(None if written else RETRY_SECONDS)
            self._wake.clear()
            written = self.write()
            time.sleep(WRITE_INTERVAL_SECONDS)
