"""Ingest throughput and memory: the node's SCP vs dcmtk ``storescp`` and Orthanc.

Every receiver gets the same study from dcmtk ``storescu`` (``TCP_NODELAY=1``),
over 1, 4 and 8 associations; the clock runs from starting storescu to the last
C-STORE response.  Receivers are started fresh (empty storage) for every run.
The node runs as ``ainode serve`` (SCP + scheduler; stability long enough that
no job starts during the measurement) with its durable writes (fsync + rename +
database row before the response).  Peers: dcmtk writes without fsync; Orthanc
with ``SyncStorageArea: false`` (the harness default), so they do less per instance.
Every run also records where the CPU went (:mod:`bench.cpu`): the machine's busy,
idle and disk-wait shares, and CPU per instance of the receiver and the senders.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import (
    QUICK,
    RUNS,
    RssSampler,
    median,
    scratch,
    send_parallel,
    split,
    study_dir,
    study_files,
    total_bytes,
)
from bench.cpu import CpuAccount
from tests.support.dcmtk import StoreSCP
from tests.support.node import NodeProcesses
from tests.support.orthanc import OrthancServer

Receiver = Callable[[], Any]


@contextmanager
def dcmtk_receiver(associations: int) -> Iterator[tuple[int, str, int]]:
    """A dcmtk ``storescp`` peer: yields its port, AE title and PID."""
    # storescp serves one association at a time unless it forks one child per association
    extra = ["--fork"] if associations > 1 else []
    with StoreSCP(aet="STORESCP", output_dir=scratch("storescp"), extra_args=extra) as scp:
        yield scp.port, "STORESCP", scp.pid or 0


@contextmanager
def orthanc_receiver(associations: int, sync: str = "") -> Iterator[tuple[int, str, int]]:
    """An Orthanc peer (``sync``: with ``SyncStorageArea``): yields its port, AE title and PID."""
    # Orthanc's DCMTK reads TCP_NODELAY from the environment as storescp does.
    os.environ["TCP_NODELAY"] = "1"
    extra = {"SyncStorageArea": True} if sync else {}
    with OrthancServer(workdir=scratch("orthanc"), extra_config=extra) as orthanc:
        yield orthanc.dicom_port, "ORTHANC", orthanc.pid or 0


def node_env(**extra: str) -> dict[str, str]:
    """The environment of a node under test: no study goes stable during the run, INFO logging."""
    # INFO, the level a site runs at: a line per association
    env = {"AINODE_STABILITY_SECONDS": "3600", "AINODE_LOG_LEVEL": "INFO"}
    env.update(extra)
    return env


@contextmanager
def node_receiver(
    associations: int, postgres: str = "", **env: str
) -> Iterator[tuple[int, str, int]]:
    """``ainode serve`` on SQLite (default) or, with ``postgres``, a fresh PostgreSQL database."""
    workdir = scratch("node")
    drop = None
    if postgres:
        from tests.support.services import fresh_postgres_database

        env["AINODE_DATABASE_URL"], drop = fresh_postgres_database("bench")
    try:
        with NodeProcesses(workdir, env=node_env(**env)) as node:
            node.cli("db", "upgrade")
            process = node.start("serve")
            node.wait_listening()
            yield node.port, "AINODE", process.pid or 0
    finally:
        if drop is not None:
            drop()


def durable_writes(files: list[Path], writers: int, account: CpuAccount) -> float:
    """Seconds this disk takes to store ``files`` as the node does, without network or database.

    Each file's bytes (read beforehand) are written to a temp file, fsynced,
    renamed into a series folder, and the folder fsynced: the node's durable
    write alone, the ceiling of any receiver that answers only after it.
    ``writers`` threads share the files as associations share a study (the
    system calls release the GIL), which shows how far the disk overlaps
    concurrent flushes.  ``account`` (this process's) is kept over the timed writes alone.
    """
    folder = scratch("disk")
    incoming = folder / "incoming"
    incoming.mkdir()
    payloads = list(enumerate(path.read_bytes() for path in files))

    def write(chunk: list[tuple[int, bytes]]) -> None:
        folder_fd = os.open(incoming, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for number, payload in chunk:
                temp = folder / f"{number}.receiving"
                fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                try:
                    os.write(fd, payload)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(temp, incoming / f"{number}.dcm")
                os.fsync(folder_fd)
        finally:
            os.close(folder_fd)

    with account:
        start = time.perf_counter()
        with ThreadPoolExecutor(writers) as pool:
            for done in [pool.submit(write, chunk) for chunk in split(payloads, writers)]:
                done.result()
        return time.perf_counter() - start


RECEIVERS: dict[str, Callable[..., Any]] = {
    "dcmtk": dcmtk_receiver,
    "orthanc": orthanc_receiver,
    "node": node_receiver,
}


def measure(
    receiver: str,
    files: list[Path],
    associations: int,
    runs: int,
    label: str | None = None,
    extra: tuple[str, ...] = (),
    **env: str,
) -> dict[str, Any]:
    """Send ``files`` to ``receiver`` over ``associations`` associations ``runs`` times."""
    seconds = []
    cpu = []
    for _ in range(runs):
        if receiver == "disk":
            # The bare loop runs in this process: it is the receiver.
            account = CpuAccount(os.getpid())
            seconds.append(durable_writes(files, associations, account))
        else:
            with (
                RECEIVERS[receiver](associations, **env) as (port, aet, pid),
                CpuAccount(pid) as account,
            ):
                seconds.append(send_parallel(port, aet, files, associations, extra))
        cpu.append(account.per_instance(len(files)))
    return _row(label or receiver, associations, files, seconds, cpu)


def _row(
    label: str,
    associations: int,
    files: list[Path],
    seconds: list[float],
    cpu: list[dict[str, float]],
) -> dict[str, Any]:
    """A table row: the runs' times and CPU figures, and their medians."""
    mb = total_bytes(files) / 1e6
    sec = median(seconds)
    return {
        "receiver": label,
        "associations": associations,
        "instances": len(files),
        "megabytes": round(mb, 1),
        "seconds_runs": [round(s, 3) for s in seconds],
        "seconds": round(sec, 3),
        "instances_per_s": round(len(files) / sec, 1),
        "mb_per_s": round(mb / sec, 1),
        "cpu_runs": cpu,
        "cpu": {key: round(median([run[key] for run in cpu]), 3) for key in cpu[0]},
    }


def _peak_rss_mb(folders: list[Path], **env: str) -> float:
    """Peak RSS (MB) of a fresh node's SCP process tree while ``folders`` arrive at once."""
    import subprocess
    import threading

    errors: list[str] = []

    def send(port: int, aet: str, folder: Path) -> None:
        try:
            send_parallel(port, aet, study_files(folder), 1)
        except (RuntimeError, subprocess.SubprocessError) as exc:
            errors.append(str(exc))

    with node_receiver(len(folders), **env) as (port, aet, pid), RssSampler(pid) as sampler:
        threads = [threading.Thread(target=send, args=(port, aet, f)) for f in folders]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    if errors:
        raise RuntimeError(errors[0])
    return round(sampler.peak / 1e6, 1)


def node_memory(
    studies: int = 8, slices: int = 300, runs: int = RUNS, **env: str
) -> dict[str, Any]:
    """Peak RSS of the node's SCP process tree while ``studies`` studies arrive at once.

    Each run starts a fresh node; the median of the runs' peaks is reported.
    """
    folders = [study_dir(slices, seed=100 + i) for i in range(studies)]
    peaks = [_peak_rss_mb(folders, **env) for _ in range(runs)]
    return {
        "receiver_processes": int(env.get("AINODE_RECEIVER_PROCESSES", "1")),
        "studies": studies,
        "slices": slices,
        "megabytes_received": round(sum(total_bytes(study_files(f)) for f in folders) / 1e6),
        "peak_rss_mb": median(peaks),
        "peak_rss_mb_runs": peaks,
    }


def _interleaved(
    configs: list[tuple[str, str, dict[str, str]]],
    files: list[Path],
    associations: int,
    runs: int,
    extra: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """Each run measures every receiver in turn, so load from elsewhere hits all alike."""
    samples: dict[str, list[dict[str, Any]]] = {label: [] for _, label, _ in configs}
    for _ in range(runs):
        for receiver, label, env in configs:
            samples[label].append(measure(receiver, files, associations, 1, label, extra, **env))
    return [
        _row(
            label,
            associations,
            files,
            [s for item in items for s in item["seconds_runs"]],
            [c for item in items for c in item["cpu_runs"]],
        )
        for label, items in samples.items()
    ]


def run(runs: int = RUNS) -> dict[str, Any]:
    """The ingest section: every receiver and association count, interleaved, and peak RSS."""
    slices = 100 if QUICK else 300
    files = study_files(study_dir(slices))
    configs = [
        ("dcmtk", "dcmtk", {}),
        ("orthanc", "orthanc", {}),
        ("orthanc", "orthanc-sync", {"sync": "1"}),
        ("node", "node", {}),
        ("node", "node-2proc", {"AINODE_RECEIVER_PROCESSES": "2"}),
        ("node", "node-4proc", {"AINODE_RECEIVER_PROCESSES": "4"}),
        ("node", "node-pg", {"postgres": "1"}),
        ("node", "node-pg-4proc", {"postgres": "1", "AINODE_RECEIVER_PROCESSES": "4"}),
    ]
    rows = []
    for associations in (1, 4, 8):
        # The disk's own durable-write rate, one writer per association, measured
        # between the receivers (no network).
        extra_configs = [("disk", "disk-durable-writes", {})] if associations < 8 else []
        rows += _interleaved(configs + extra_configs, files, associations, runs)
    j2k = study_files(study_dir(100, syntax="j2k"))
    # -xv: storescu proposes JPEG 2000 lossless (the files' own syntax)
    for row in _interleaved(configs[:2] + configs[3:4], j2k, 1, runs, ("-xv",)):
        row["syntax"] = "jpeg2000-lossless"
        rows.append(row)
    count, size = (4, 100) if QUICK else (8, 300)
    memory = [
        node_memory(count, size),
        node_memory(count, size, AINODE_RECEIVER_PROCESSES="2"),
        node_memory(count, size, AINODE_RECEIVER_PROCESSES="4"),
    ]
    return {"slices": slices, "throughput": rows, "memory": memory}


if __name__ == "__main__":
    import json
    import sys

    receiver = sys.argv[1] if len(sys.argv) > 1 else "node"
    associations = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    slices = int(os.environ.get("BENCH_SLICES", "300"))
    print(json.dumps(measure(receiver, study_files(study_dir(slices)), associations, RUNS)))
