"""Thin wrappers around the dcmtk 3.6.7 command-line tools.

Network tools get ``TCP_NODELAY=1`` in their environment. :func:`storescu`
passes ``-nh`` (``--no-halt``) by default so one failed file does not stop the
others; with ``-nh`` storescu exits 0 even when files failed, so read the
per-file outcome from :attr:`StoreSCUResult.files` (parsed from the ``-v`` log
on stderr: ``I: Sending file: PATH`` then ``I: Received Store Response (TEXT)``
or an ``E:`` line).

Note: dcmtk's ``storescp`` has no bind-address option; it listens on all
interfaces of its port. Tests only connect to it over loopback.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .ports import LOOPBACK, free_port, port_is_open
from .processes import BackgroundProcess, ScopedPeer
from .waiting import wait_until

#: Environment added to every network tool.
NETWORK_ENV = {"TCP_NODELAY": "1"}

PathLike = str | os.PathLike[str]


class DcmtkError(RuntimeError):
    """A dcmtk tool failed where the caller asked for ``check=True``."""


def _run(
    argv: Sequence[str], check: bool, env: dict[str, str] | None = None, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        raise DcmtkError(
            f"{' '.join(argv)} exited with {proc.returncode}\n"
            f"stdout:\n{proc.stdout[-2000:]}\nstderr:\n{proc.stderr[-4000:]}"
        )
    return proc


# --------------------------------------------------------------------- storescu
@dataclass
class FileStatus:
    """Outcome of one file sent by storescu.

    Attributes
    ----------
    path : str
        The file as storescu printed it.
    status : str or None
        storescu's status text for the C-STORE response, e.g. ``"Success"``,
        ``"Warning: ..."``, ``"Refused: OutOfResources"``; None if no response
        was received (see ``errors``).
    status_code : int or None
        The DIMSE status (only available when run with ``-d``).
    errors : list of str
        ``E:``/``W:``/``F:`` lines attributed to this file (no presentation
        context, unreadable file, ...).
    """

    path: str
    status: str | None = None
    status_code: int | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True if the peer answered Success or a Warning status."""
        if self.status_code is not None:
            return self.status_code == 0 or (self.status_code & 0xF000) == 0xB000
        return self.status is not None and (
            self.status == "Success" or self.status.startswith("Warning")
        )


class StoreSCUResult(subprocess.CompletedProcess[str]):
    """``CompletedProcess`` of storescu plus the parsed per-file outcome.

    Attributes
    ----------
    files : list of FileStatus
        One entry per file storescu tried (or skipped while checking its input),
        in order.
    """

    files: list[FileStatus]

    @property
    def succeeded(self) -> list[str]:
        """Paths that were stored with Success/Warning."""
        return [f.path for f in self.files if f.ok]

    @property
    def failed(self) -> list[str]:
        """Paths that storescu reported as failed or skipped."""
        return [f.path for f in self.files if not f.ok]

    def status_of(self, path: PathLike) -> FileStatus | None:
        """Return the last outcome recorded for ``path`` (None if never tried)."""
        wanted = os.fspath(path)
        for entry in reversed(self.files):
            if entry.path == wanted:
                return entry
        return None


_SENDING = re.compile(r"^I: Sending file: (?P<path>.+?)\s*$")
_RESPONSE = re.compile(r"^I: Received Store Response(?: \((?P<text>.*)\))?\s*$")
_DIMSE_STATUS = re.compile(
    r"^D: DIMSE Status\s*:\s*0x(?P<code>[0-9a-fA-F]{4})(?::\s*(?P<text>.*))?$"
)
_SKIPPED = re.compile(r"^W: cannot access file: (?P<path>.+?), ignoring file\s*$")
_PROBLEM = re.compile(r"^[EFW]: ")


def parse_storescu_log(text: str) -> list[FileStatus]:
    """Parse storescu's ``-v`` (or ``-d``) log into per-file outcomes.

    Parameters
    ----------
    text : str
        storescu's stderr.

    Returns
    -------
    list of FileStatus
        In the order storescu handled the files; files skipped while checking
        the input (missing/unreadable) are included with an error and no status.
    """
    out: list[FileStatus] = []
    current: FileStatus | None = None
    for line in text.splitlines():
        if m := _SKIPPED.match(line):
            out.append(FileStatus(path=m["path"], errors=[line]))
        elif m := _SENDING.match(line):
            current = FileStatus(path=m["path"])
            out.append(current)
        elif current is None:
            continue
        elif m := _RESPONSE.match(line):
            current.status = m["text"] or current.status or "?"
        elif m := _DIMSE_STATUS.match(line):
            current.status_code = int(m["code"], 16)
            if m["text"]:
                current.status = current.status if current.status not in (None, "?") else m["text"]
        elif _PROBLEM.match(line):
            current.errors.append(line)
    return out


def storescu(
    host: str,
    port: int,
    files: Iterable[PathLike],
    called_ae: str,
    calling_ae: str = "STORESCU",
    extra_args: Sequence[str] = (),
    keep_going: bool = True,
    timeout: float = 120.0,
) -> StoreSCUResult:
    """Send files with ``storescu -v`` and parse the per-file outcome.

    Parameters
    ----------
    host, port : str, int
        The peer (loopback only).
    files : iterable of path
        Files and/or directories (directories add ``+sd +r``).
    called_ae : str
        Peer AE title (``-aec``).
    calling_ae : str
        Own AE title (``-aet``).
    extra_args : sequence of str
        More storescu options, e.g. ``["-xs"]`` to propose JPEG lossless or
        ``["-d"]`` to also get hex DIMSE status codes.
    keep_going : bool
        Pass ``-nh`` so a failed store does not halt the transfer.
    timeout : float
        Seconds before the subprocess is killed.

    Returns
    -------
    StoreSCUResult
        ``returncode`` is non-zero if the association failed (or, without
        ``keep_going``, if a store failed); use ``.files``/``.failed`` for
        per-file results.
    """
    paths = [os.fspath(f) for f in files]
    if not paths:
        raise ValueError("storescu needs at least one file")
    argv = ["storescu", "-v", "-aec", called_ae, "-aet", calling_ae]
    if keep_going:
        argv.append("-nh")
    if any(Path(p).is_dir() for p in paths):
        argv += ["+sd", "+r"]
    argv += [*extra_args, host, str(port), *paths]
    proc = _run(argv, check=False, env=NETWORK_ENV, timeout=timeout)
    result = StoreSCUResult(proc.args, proc.returncode, proc.stdout, proc.stderr)
    result.files = parse_storescu_log(proc.stderr)
    return result


def echoscu(
    host: str,
    port: int,
    called_ae: str,
    calling_ae: str = "ECHOSCU",
    extra_args: Sequence[str] = (),
    timeout: float = 30.0,
) -> subprocess.CompletedProcess[str]:
    """C-ECHO a peer; ``returncode == 0`` means it answered.

    Parameters
    ----------
    host, port : str, int
        The peer (loopback only).
    called_ae, calling_ae : str
        AE titles (``-aec`` / ``-aet``).
    extra_args : sequence of str
        More echoscu options.
    timeout : float
        Seconds before the subprocess is killed.

    Returns
    -------
    subprocess.CompletedProcess
        The finished process.
    """
    argv = ["echoscu", "-v", "-aec", called_ae, "-aet", calling_ae, *extra_args, host, str(port)]
    return _run(argv, check=False, env=NETWORK_ENV, timeout=timeout)


# --------------------------------------------------------------------- converters
def dcmcjpeg(
    src: PathLike,
    dst: PathLike,
    lossless: bool = True,
    extra_args: Sequence[str] = (),
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Compress to JPEG.

    ``lossless=True`` uses ``+e1`` (process 14 SV1, 1.2.840.10008.1.2.4.70, true
    lossless codec); ``lossless=False`` uses ``+ee`` (extended, 12-bit capable,
    1.2.840.10008.1.2.4.51).
    """
    mode = "+e1" if lossless else "+ee"
    return _run(["dcmcjpeg", mode, *extra_args, os.fspath(src), os.fspath(dst)], check)


def dcmdjpeg(
    src: PathLike, dst: PathLike, extra_args: Sequence[str] = (), check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Decompress a JPEG file to explicit VR little endian."""
    return _run(["dcmdjpeg", *extra_args, os.fspath(src), os.fspath(dst)], check)


def dcmcjpls(
    src: PathLike,
    dst: PathLike,
    lossless: bool = True,
    extra_args: Sequence[str] = (),
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Compress to JPEG-LS: ``+el`` lossless (1.2.840.10008.1.2.4.80) or ``+en`` near-lossless."""
    mode = "+el" if lossless else "+en"
    return _run(["dcmcjpls", mode, *extra_args, os.fspath(src), os.fspath(dst)], check)


_XFER_FLAGS = {"implicit": "+ti", "explicit": "+te", "big": "+tb", "deflated": "+td"}


def dcmconv(
    src: PathLike,
    dst: PathLike,
    transfer_syntax: str = "implicit",
    extra_args: Sequence[str] = (),
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Rewrite an uncompressed file in another transfer syntax.

    Parameters
    ----------
    transfer_syntax : {"implicit", "explicit", "big", "deflated"}
        ``+ti`` implicit VR LE (1.2.840.10008.1.2), ``+te`` explicit VR LE,
        ``+tb`` explicit VR BE, ``+td`` deflated.
    """
    flag = _XFER_FLAGS[transfer_syntax]
    return _run(["dcmconv", flag, *extra_args, os.fspath(src), os.fspath(dst)], check)


# --------------------------------------------------------------------- storescp
class StoreSCP(ScopedPeer):
    """A dcmtk ``storescp`` receiving into a directory, stopped by PID.

    Parameters
    ----------
    aet : str
        Its AE title (``-aet``).
    output_dir : Path, optional
        Where files are written (``-od``); a temp dir removed on :meth:`stop`
        if omitted.
    port : int, optional
        A free port is chosen if omitted.
    extra_args : sequence of str
        More storescp options, e.g. ``["--refuse"]``, ``["--sleep-during", "5"]``,
        ``["-pm"]`` (accept unknown SOP classes). ``+xa`` (accept all transfer
        syntaxes) and ``-dhl`` are always passed.
    start_timeout : float
        Seconds to wait for the port to accept connections.
    """

    def __init__(
        self,
        aet: str = "STORESCP",
        output_dir: Path | None = None,
        port: int | None = None,
        extra_args: Sequence[str] = (),
        start_timeout: float = 10.0,
    ) -> None:
        self.aet = aet
        self._own_dir = output_dir is None
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.port = port or 0
        self._fixed_port = port
        self.host = LOOPBACK
        self.extra_args = list(extra_args)
        self.start_timeout = start_timeout
        self._process: BackgroundProcess | None = None
        self._logdir: Path | None = None

    @property
    def pid(self) -> int | None:
        """PID of storescp, or None if not running."""
        return self._process.pid if self._process is not None else None

    @property
    def modality(self) -> list[str | int]:
        """``[AET, host, port]`` for Orthanc's ``DicomModalities``."""
        return [self.aet, self.host, self.port]

    def start(self) -> StoreSCP:
        """Start storescp and wait until its port accepts connections."""
        if self._process is not None:
            raise RuntimeError(f"storescp already running (pid {self.pid})")
        if self.output_dir is None:
            self.output_dir = Path(tempfile.mkdtemp(prefix="storescp-"))
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._logdir = Path(tempfile.mkdtemp(prefix="storescp-log-"))
        self.port = self._fixed_port or free_port()
        argv = [
            "storescp",
            "-v",
            "-aet",
            self.aet,
            "-od",
            str(self.output_dir),
            "+xa",
            "-dhl",
            *self.extra_args,
            str(self.port),
        ]
        self._process = BackgroundProcess(argv, self._logdir / "storescp.log", env=NETWORK_ENV)
        self._process.start()
        process = self._process

        def ready() -> bool:
            if process.poll() is not None:
                raise DcmtkError(
                    f"storescp exited with {process.poll()} during start-up:\n{process.log_tail()}"
                )
            return port_is_open(self.host, self.port)

        try:
            wait_until(ready, self.start_timeout, 0.02, message=process.log_tail)
        except BaseException:
            self.stop()
            raise
        return self

    def log_tail(self, max_bytes: int = 4000) -> str:
        """Return the tail of storescp's log."""
        return self._process.log_tail(max_bytes) if self._process is not None else ""

    def received_files(self) -> list[Path]:
        """Return the files written so far (sorted)."""
        if self.output_dir is None:
            return []
        return sorted(p for p in self.output_dir.rglob("*") if p.is_file())

    def wait_for_files(self, count: int, timeout: float = 10.0) -> list[Path]:
        """Wait until at least ``count`` files exist and their sizes stopped changing.

        Parameters
        ----------
        count : int
            Number of files expected.
        timeout : float
            Seconds until giving up.

        Returns
        -------
        list of Path
            The received files.
        """
        last: dict[Path, int] = {}

        def settled() -> list[Path] | None:
            nonlocal last
            files = self.received_files()
            sizes = {p: p.stat().st_size for p in files}
            stable = len(files) >= count and sizes == last
            last = sizes
            return files if stable else None

        return wait_until(
            settled,
            timeout,
            0.05,
            message=lambda: f"{len(self.received_files())}/{count} files\n{self.log_tail()}",
        )

    def stop(self) -> None:
        """Stop storescp by PID and remove temporary directories."""
        if self._process is not None:
            self._process.stop()
            self._process = None
        if self._logdir is not None:
            shutil.rmtree(self._logdir, ignore_errors=True)
            self._logdir = None
        if self._own_dir and self.output_dir is not None:
            shutil.rmtree(self.output_dir, ignore_errors=True)
            self.output_dir = None

    teardown = stop
