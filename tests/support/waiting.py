"""Condition polling with a deadline.

Tests must never sleep for a fixed, long time; they wait on a condition and give
up at a deadline with a readable message.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(TimeoutError):
    """Raised by :func:`wait_until` when the deadline passes."""


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str | Callable[[], str] | None = None,
) -> T:
    """Poll ``predicate`` until it returns a truthy value or the deadline passes.

    Parameters
    ----------
    predicate : callable
        Called without arguments. Its first truthy return value is returned.
        Exceptions propagate (wrap the call yourself if some are expected).
    timeout : float
        Seconds until giving up.
    interval : float
        Seconds to sleep between polls (kept short; capped by the time left).
    message : str or callable, optional
        Text (or a function producing text, evaluated only on failure) added to
        the timeout error, e.g. the tail of a server log.

    Returns
    -------
    object
        The first truthy value returned by ``predicate``.

    Raises
    ------
    WaitTimeout
        If ``predicate`` never returned a truthy value before the deadline. The
        predicate is always evaluated at least once, and once more at the deadline.
    """
    deadline = time.monotonic() + timeout
    last: T = predicate()
    while not last:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            detail = message() if callable(message) else message
            text = f"condition not met within {timeout:.1f}s (last value: {last!r})"
            raise WaitTimeout(f"{text}: {detail}" if detail else text)
        time.sleep(min(interval, remaining))
        last = predicate()
    return last
