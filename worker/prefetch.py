"""Loading the next job's input while the current job infers.

While a job runs its network (on the GPU, often), the worker's CPU would
otherwise sit idle; reading and decoding the next study's DICOM files takes
seconds to minutes.  :class:`InputPrefetcher` loads the input of the job the
worker will most likely run next in one background thread.

Correctness never depends on it: a prefetched input is used only by the job
it was loaded for (same job id *and* same set of input instances), loaded
from the same files by the same function; any other job, a failed or
unfinished prefetch, or a prediction that was wrong simply means the job
loads its own input as if there were no prefetcher.  At most one input is
held in memory.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

__all__ = ["InputPrefetcher"]

log = logging.getLogger(__name__)

Loader = Callable[[Sequence[Path]], Any]


class InputPrefetcher:
    """One-slot background loader of job inputs, keyed by ``(job id, input key)``.

    Parameters
    ----------
    loader:
        Loads an input from its files (e.g. :func:`pipelines.io.load_input`).
    """

    def __init__(self, loader: Loader) -> None:
        self._loader = loader
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
        self._lock = threading.Lock()
        self._key: tuple[int, str] | None = None
        self._future: Future[Any] | None = None

    def prefetch(self, job_id: int, input_key: str, paths: Sequence[Path]) -> None:
        """Start loading the input of job ``job_id`` (replacing any other prefetched input)."""
        with self._lock:
            if self._key == (job_id, input_key):
                return
            if self._future is not None:
                self._future.cancel()
            self._key = (job_id, input_key)
            self._future = self._executor.submit(self._loader, list(paths))
        log.debug("prefetching the input of job %d", job_id)

    def take(self, job_id: int, input_key: str, paths: Sequence[Path]) -> tuple[Any, bool]:
        """The input of job ``job_id``: the prefetched one when it is that job's, else loaded now.

        Returns
        -------
        tuple
            The input, and whether it came from the prefetch.  A prefetch
            that raised is discarded and the input is loaded again here, so
            errors surface exactly as without prefetching.
        """
        with self._lock:
            future = self._future if self._key == (job_id, input_key) else None
            if future is not None:
                self._key, self._future = None, None
        if future is not None:
            try:
                return future.result(), True
            except Exception:  # reloaded below: the job reports its own error
                log.debug("prefetch of job %d failed; loading again", job_id)
        return self._loader(list(paths)), False

    def shutdown(self) -> None:
        """Stop the background thread (pending loads are dropped)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
