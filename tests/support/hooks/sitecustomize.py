"""Test-only hook: hold the node's worker inside its job for a while.

A fault test puts this folder first on ``PYTHONPATH`` of ``ainode worker``
(see :func:`tests.support.faults.job_delay_env`), as ``bench/ttr.py`` does with
``bench/hooks``, and sets ``TEST_HOOK_JOB_DELAY_SECONDS``: every job then sleeps
that long right after it is marked running and its heartbeat starts, so that a
kill lands deterministically mid-job.  Without the variable this does nothing.
"""

from __future__ import annotations

import os
import sys

_DELAY = float(os.environ.get("TEST_HOOK_JOB_DELAY_SECONDS") or 0)

if _DELAY and "worker" in sys.argv:
    import functools
    import time

    from worker.heartbeat import Heartbeat

    _enter = Heartbeat.__enter__

    @functools.wraps(_enter)
    def _enter_then_wait(self: Heartbeat) -> Heartbeat:
        entered = _enter(self)
        time.sleep(_DELAY)
        return entered

    Heartbeat.__enter__ = _enter_then_wait  # type: ignore[method-assign]
