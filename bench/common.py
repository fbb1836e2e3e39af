"""Shared helpers of the benchmarks: phantom studies on disk, peers, timing, RSS sampling.

The real-peer harness of the tests (``tests/support``) is reused: Orthanc, dcmtk
``storescp``/``storescu`` and the node's own processes, all on loopback.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import psutil

from tests.support.dcmtk import NETWORK_ENV
from tests.support.ports import LOOPBACK

T = TypeVar("T")

QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
#: Repetitions per figure (medians are reported).
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
#: Where studies and peers' storage go (needs ~2 GB for the 1000-slice study).
DATA_DIR = Path(os.environ.get("BENCH_DATA_DIR", tempfile.gettempdir())) / "ainode-bench"
RESULTS_DIR = Path(__file__).parent / "results"


def median(values: Sequence[float]) -> float:
    """The median of ``values`` (NaN when there are none), the figure every table reports."""
    return float(statistics.median(values)) if values else float("nan")


def study_dir(slices: int, size: int = 512, syntax: str = "explicit", seed: int = 7) -> Path:
    """A phantom CT study on disk (generated once, cached under :data:`DATA_DIR`)."""
    from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless

    from pipelines.phantom import generate_ct_phantom, write_phantom

    folder = DATA_DIR / f"ct-{slices}x{size}-{syntax}-{seed}"
    done = folder / ".complete"
    if done.exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    transfer = JPEG2000Lossless if syntax == "j2k" else ExplicitVRLittleEndian
    # 512 x 512 at 0.7 mm covers the phantom's 36 cm field; slices 1 mm apart.
    spacing = 0.7 * 512 / size
    study = generate_ct_phantom(
        slices=slices,
        rows=size,
        columns=size,
        pixel_spacing=spacing,
        slice_thickness=1.0 if slices >= 300 else 3.0,
        seed=seed,
        transfer_syntax_uid=transfer,
    )
    write_phantom(study, folder)
    done.touch()
    return folder


def study_files(folder: Path) -> list[Path]:
    """The slice files of a generated study folder, in slice order."""
    return sorted(folder.glob("CT*.dcm"))


def total_bytes(files: Sequence[Path]) -> int:
    """The bytes on disk of ``files``, for the MB/s columns."""
    return sum(path.stat().st_size for path in files)


def split(items: Sequence[T], parts: int) -> list[list[T]]:
    """``parts`` contiguous chunks of ``items`` (one association each)."""
    size = -(-len(items) // parts)
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


#: Seconds a send may take before its storescu processes are killed.
SEND_TIMEOUT_SECONDS = 900.0


def send_parallel(
    port: int, called_ae: str, files: Sequence[Path], associations: int = 1, extra=()
) -> float:
    """Send ``files`` with ``associations`` concurrent dcmtk ``storescu``; wall seconds.

    The clock stops when every storescu has exited, i.e. after the last C-STORE
    response; each storescu gets ``TCP_NODELAY=1``.  Fails if any file failed.
    """
    env = {**os.environ, **NETWORK_ENV}
    procs = []
    logs = []
    start = time.perf_counter()
    for chunk in split(files, associations):
        log = tempfile.TemporaryFile()  # noqa: SIM115 (closed below)
        logs.append(log)
        argv = ["storescu", "-aec", called_ae, "-aet", "BENCHSCU", *extra, LOOPBACK, str(port)]
        procs.append(
            subprocess.Popen(
                [*argv, *map(str, chunk)], stdout=log, stderr=subprocess.STDOUT, env=env
            )
        )
    # A blocking wait: Popen.wait(timeout=...) polls with sleeps of up to 50 ms,
    # which added 0-50 ms to every measurement (8 % of a 0.6 s run).
    watchdog = threading.Timer(SEND_TIMEOUT_SECONDS, lambda: [proc.kill() for proc in procs])
    watchdog.start()
    try:
        codes = [proc.wait() for proc in procs]
    finally:
        watchdog.cancel()
    elapsed = time.perf_counter() - start
    for code, log in zip(codes, logs, strict=True):
        log.seek(0)
        text = log.read().decode(errors="replace")
        log.close()
        if code != 0 or "E:" in text:
            raise RuntimeError(f"storescu failed ({code}): {text[-2000:]}")
    return elapsed


def process_tree(root: psutil.Process) -> list[psutil.Process]:
    """``root`` and its descendants alive now (raises ``psutil.Error`` once it has exited)."""
    return [root, *root.children(recursive=True)]


class RssSampler:
    """Peak RSS of a process tree (the process and its children), sampled every 20 ms."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> int:
        total = 0
        try:
            procs = process_tree(self.root)
        except psutil.Error:
            return 0
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self.peak = self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._sample())


#: Folders of earlier runs set aside before they are deleted all at once (see :func:`scratch`).
TRASH_DIR = DATA_DIR / "trash"
#: Set-aside folders that trigger the deletion.
TRASH_LIMIT = 24
#: How long ext4 without a journal keeps freed inodes from being reused (seconds), plus margin.
INODE_REUSE_DELAY_SECONDS = 35.0


def _release_page_cache(folder: Path) -> None:
    """Write back and drop the cached pages of the files under ``folder``.

    Kept files would otherwise hold their page cache, and the next run's writes
    would go to memory this VM has never touched, which costs a fault in the
    hypervisor per page (``perf``: ``copy_folio_from_iter_atomic`` at 46 % of a
    receiver's CPU after a few kept runs, 1 % when the pages were reused).
    """
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fdatasync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def scratch(name: str) -> Path:
    """A fresh folder under :data:`DATA_DIR` (peers' storage, the node's spool).

    The last run's folder is moved aside, not deleted: ext4 without a journal
    (this machine's disk) will not reuse an inode freed in the last 30 s and
    scans past each one when it creates a file, so a receiver measured right
    after a deletion of thousands of files spent ~15 % of its CPU in that scan
    (``perf``: ``find_inode_bit`` → ``recently_deleted``).  The set-aside
    folders are deleted together every :data:`TRASH_LIMIT` runs, followed by
    a pause until their inodes are reusable; their cached pages are released
    when they are set aside (see :func:`_release_page_cache`).
    """
    folder = DATA_DIR / "run" / name
    if folder.exists():
        _release_page_cache(folder)
        TRASH_DIR.mkdir(parents=True, exist_ok=True)
        folder.rename(TRASH_DIR / f"{name}-{time.monotonic_ns()}")
        if sum(1 for _ in TRASH_DIR.iterdir()) >= TRASH_LIMIT:
            shutil.rmtree(TRASH_DIR, ignore_errors=True)
            time.sleep(INODE_REUSE_DELAY_SECONDS)
    folder.mkdir(parents=True)
    return folder
