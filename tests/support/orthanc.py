"""A private Orthanc instance for tests, with REST helpers built on urllib.

Orthanc 1.10.1 (Debian) has no option to choose the listening address: the DICOM
and HTTP servers listen on all interfaces of the chosen ports. ``RemoteAccessAllowed:
false`` makes the HTTP server refuse non-loopback clients; tests only ever
connect to 127.0.0.1.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .ports import LOOPBACK, free_port, port_is_open
from .processes import BackgroundProcess, ScopedPeer, tail

ORTHANC_BINARY = "/usr/sbin/Orthanc"

#: Modality entry: ``[AET, host, port]`` or the object form Orthanc accepts.
Modality = Sequence[Any] | Mapping[str, Any]


class OrthancError(RuntimeError):
    """An Orthanc REST call failed or the server could not be started."""


class OrthancServer(ScopedPeer):
    """Run ``/usr/sbin/Orthanc`` on free loopback ports with a throw-away config.

    Parameters
    ----------
    modalities : mapping, optional
        ``DicomModalities`` of the config, e.g.
        ``{"ainode": ["AINODE", "127.0.0.1", 11112]}``. More can be added at run
        time with :meth:`add_modality`.
    aet : str
        Orthanc's own AE title (``DicomAet``).
    workdir : Path, optional
        Directory for config, storage, index and log. A temporary directory
        (removed on :meth:`stop`) is used if omitted.
    http_port, dicom_port : int, optional
        Fixed ports; free ones are chosen if omitted (and re-chosen if Orthanc
        fails to start, in case another process took them in the meantime).
    extra_config : mapping, optional
        Keys merged over the generated configuration.
    start_timeout : float
        Seconds to wait for the REST API to answer.
    verbose : bool
        Pass ``--verbose`` to Orthanc (more detail in the log).

    Examples
    --------
    >>> with OrthancServer({"node": ["AINODE", "127.0.0.1", 11112]}) as orthanc:
    ...     orthanc.upload(Path("ct.dcm"))
    """

    def __init__(
        self,
        modalities: Mapping[str, Modality] | None = None,
        aet: str = "ORTHANC",
        workdir: Path | None = None,
        http_port: int | None = None,
        dicom_port: int | None = None,
        extra_config: Mapping[str, Any] | None = None,
        start_timeout: float = 20.0,
        verbose: bool = False,
    ) -> None:
        self.modalities = {k: _jsonable(v) for k, v in (modalities or {}).items()}
        self.aet = aet
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else None
        self._fixed_http_port = http_port
        self._fixed_dicom_port = dicom_port
        self.http_port = http_port or 0
        self.dicom_port = dicom_port or 0
        self.extra_config = dict(extra_config or {})
        self.start_timeout = start_timeout
        self.verbose = verbose
        self.host = LOOPBACK
        self._process: BackgroundProcess | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        """Base URL of the REST API."""
        return f"http://{self.host}:{self.http_port}"

    @property
    def pid(self) -> int | None:
        """PID of the Orthanc process, or None if not running."""
        return self._process.pid if self._process is not None else None

    @property
    def config_path(self) -> Path:
        """Path of the generated JSON configuration."""
        return self._dir / "orthanc.json"

    @property
    def log_path(self) -> Path:
        """Path of Orthanc's log file."""
        return self._dir / "orthanc.log"

    @property
    def _dir(self) -> Path:
        if self.workdir is None:
            raise OrthancError("Orthanc has no working directory yet (call start())")
        return self.workdir

    def config(self) -> dict[str, Any]:
        """Return the configuration written for the current ports and modalities."""
        cfg: dict[str, Any] = {
            "Name": f"test-{self.aet}",
            "StorageDirectory": str(self._dir / "storage"),
            "IndexDirectory": str(self._dir / "index"),
            "Plugins": [],
            "LuaScripts": [],
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "RegisteredUsers": {},
            "HttpDescribeErrors": True,
            "OrthancExplorerEnabled": False,
            "WebDavEnabled": False,
            "DicomServerEnabled": True,
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": False,
            "DicomCheckModalityHost": False,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomModalities": self.modalities,
            "DicomModalitiesInDatabase": False,
            "OrthancPeers": {},
            "DicomScuTimeout": 10,
            "DicomScpTimeout": 30,
            "DicomAssociationCloseDelay": 0,
            "StableAge": 1,
            "LogExportedResources": False,
            "SaveJobs": False,
            "SyncStorageArea": False,
            "HttpTimeout": 10,
        }
        cfg.update(self.extra_config)
        return cfg

    def start(self) -> OrthancServer:
        """Write the config, start Orthanc and wait until ``/system`` answers.

        Returns
        -------
        OrthancServer
            ``self``.

        Raises
        ------
        OrthancError
            If Orthanc exits or does not answer before the deadline; the message
            includes the tail of its log.
        """
        if self._process is not None:
            raise OrthancError(f"Orthanc already running (pid {self.pid})")
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="orthanc-test-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        auto_ports = self._fixed_http_port is None or self._fixed_dicom_port is None
        attempts = 3 if auto_ports else 1
        error: OrthancError | None = None
        for _ in range(attempts):
            self.http_port = self._fixed_http_port or free_port()
            self.dicom_port = self._fixed_dicom_port or free_port()
            try:
                self._start_once()
                return self
            except OrthancError as exc:
                error = exc
                self._stop_process()
        assert error is not None
        self.stop()  # the message already carries the log tail
        raise error

    def _start_once(self) -> None:
        self.config_path.write_text(json.dumps(self.config(), indent=2))
        argv = [ORTHANC_BINARY, f"--logfile={self.log_path}", "--no-jobs"]
        if self.verbose:
            argv.append("--verbose")
        argv.append(str(self.config_path))
        self._process = BackgroundProcess(argv, self._dir / "orthanc.stdout.log", cwd=self._dir)
        self._process.start()
        deadline = time.monotonic() + self.start_timeout
        while True:
            code = self._process.poll()
            if code is not None:
                raise OrthancError(f"Orthanc exited with code {code} during start-up{self._logs()}")
            if port_is_open(self.host, self.http_port):
                try:
                    self.get("/system")
                except OrthancError:
                    pass
                else:
                    if port_is_open(self.host, self.dicom_port):
                        return
            if time.monotonic() > deadline:
                raise OrthancError(
                    f"Orthanc did not answer on {self.url}/system within "
                    f"{self.start_timeout:.0f}s{self._logs()}"
                )
            time.sleep(0.05)

    def _logs(self) -> str:
        parts = []
        for path in (self.log_path, self._dir / "orthanc.stdout.log"):
            text = tail(path).strip()
            if text:
                parts.append(f"\n--- tail of {path} ---\n{text}")
        return "".join(parts)

    def log_tail(self, max_bytes: int = 4000) -> str:
        """Return the tail of Orthanc's log (for assertion messages)."""
        return tail(self.log_path, max_bytes)

    def _stop_process(self) -> None:
        if self._process is not None:
            self._process.stop()
            self._process = None

    def stop(self) -> None:
        """Stop Orthanc by PID (SIGTERM, then SIGKILL) and remove a temp workdir."""
        self._stop_process()
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    teardown = stop

    # ------------------------------------------------------------------ raw REST
    def request(
        self,
        method: str,
        path: str,
        body: bytes | str | Mapping[str, Any] | Sequence[Any] | None = None,
        timeout: float = 30.0,
        content_type: str | None = None,
    ) -> bytes:
        """Send a REST request and return the raw response body.

        Parameters
        ----------
        method : str
            HTTP method.
        path : str
            Path below the base URL, starting with ``/``.
        body : bytes, str, dict or list, optional
            Raw bytes (sent as ``application/dicom`` unless ``content_type`` is
            given), text, or a JSON-serialisable object.
        timeout : float
            Socket timeout in seconds.
        content_type : str, optional
            Overrides the Content-Type header.

        Returns
        -------
        bytes
            The response body.

        Raises
        ------
        OrthancError
            On an HTTP error status (message includes Orthanc's error details) or
            a connection failure.
        """
        data: bytes | None
        if body is None:
            data, ctype = None, None
        elif isinstance(body, bytes):
            data, ctype = body, "application/dicom"
        elif isinstance(body, str):
            data, ctype = body.encode(), "text/plain"
        else:
            data, ctype = json.dumps(body).encode(), "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if content_type or ctype:
            req.add_header("Content-Type", content_type or ctype or "")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", errors="replace")
            raise OrthancError(f"{method} {path} -> HTTP {exc.code}: {detail}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise OrthancError(f"{method} {path} failed: {exc}") from exc

    def get(self, path: str, timeout: float = 30.0) -> Any:
        """GET ``path`` and decode the JSON answer."""
        return json.loads(self.request("GET", path, timeout=timeout))

    def post(self, path: str, body: Any = None, timeout: float = 30.0) -> Any:
        """POST ``body`` to ``path`` and decode the JSON answer (None if empty)."""
        raw = self.request("POST", path, body if body is not None else b"", timeout=timeout)
        return json.loads(raw) if raw.strip() else None

    def put(self, path: str, body: Any, timeout: float = 30.0) -> Any:
        """PUT ``body`` to ``path`` and decode the JSON answer (None if empty)."""
        raw = self.request("PUT", path, body, timeout=timeout)
        return json.loads(raw) if raw.strip() else None

    def delete(self, path: str, timeout: float = 30.0) -> None:
        """DELETE ``path``."""
        self.request("DELETE", path, timeout=timeout)

    # ------------------------------------------------------------------ helpers
    def system(self) -> dict[str, Any]:
        """Return ``/system`` (version, AET, ports, ...)."""
        return self.get("/system")

    def statistics(self) -> dict[str, Any]:
        """Return ``/statistics`` (``CountStudies``, ``CountInstances``, ...)."""
        return self.get("/statistics")

    def upload(self, dicom: Path | str | bytes) -> dict[str, Any]:
        """Upload one DICOM file over REST (``POST /instances``).

        Parameters
        ----------
        dicom : Path, str or bytes
            A file path or the file's bytes.

        Returns
        -------
        dict
            Orthanc's answer: ``ID``, ``Status`` ("Success" / "AlreadyStored"),
            ``ParentStudy``, ``ParentSeries``, ``ParentPatient``, ``Path``.
        """
        data = dicom if isinstance(dicom, bytes) else Path(dicom).read_bytes()
        return self.post("/instances", data)

    def studies(self) -> list[str]:
        """Return the Orthanc IDs of all studies."""
        return self.get("/studies")

    def study_instances(self, study_orthanc_id: str) -> list[dict[str, Any]]:
        """Return the instance records (``ID``, ``MainDicomTags``, ...) of a study."""
        return self.get(f"/studies/{study_orthanc_id}/instances")

    def find_study(self, study_instance_uid: str) -> str | None:
        """Return the Orthanc ID of the study with this StudyInstanceUID, or None."""
        hits = self.post("/tools/lookup", study_instance_uid)
        for hit in hits or []:
            if hit.get("Type") == "Study":
                return str(hit["ID"])
        return None

    def instance_tags(self, instance_id: str) -> dict[str, Any]:
        """Return the simplified tags (keyword -> value) of one instance."""
        return self.get(f"/instances/{instance_id}/simplified-tags")

    def instances_of_study_uid(self, study_uid: str) -> list[dict[str, Any]]:
        """Return every instance of a study with its simplified tags.

        Parameters
        ----------
        study_uid : str
            StudyInstanceUID.

        Returns
        -------
        list of dict
            One dict per instance: ``ID`` (Orthanc ID), ``SOPClassUID``,
            ``SOPInstanceUID``, ``Modality``, ``SeriesInstanceUID`` and ``Tags``
            (all simplified tags). Empty if the study is unknown.
        """
        study_id = self.find_study(study_uid)
        if study_id is None:
            return []
        out = []
        for inst in self.study_instances(study_id):
            tags = self.instance_tags(inst["ID"])
            out.append(
                {
                    "ID": inst["ID"],
                    "SOPClassUID": tags.get("SOPClassUID"),
                    "SOPInstanceUID": tags.get("SOPInstanceUID"),
                    "Modality": tags.get("Modality"),
                    "SeriesInstanceUID": tags.get("SeriesInstanceUID"),
                    "Tags": tags,
                }
            )
        return out

    def download(self, instance_id: str) -> bytes:
        """Return the stored DICOM file of an instance."""
        return self.request("GET", f"/instances/{instance_id}/file")

    def delete_all(self) -> None:
        """Delete every patient (and thus every study/instance) stored."""
        for patient in self.get("/patients"):
            self.delete(f"/patients/{patient}")

    # ------------------------------------------------------------------ modalities
    def add_modality(self, name: str, aet: str, host: str, port: int) -> None:
        """Register (or replace) a DICOM modality at run time (``PUT /modalities``)."""
        self.put(
            f"/modalities/{urllib.parse.quote(name)}", {"AET": aet, "Host": host, "Port": port}
        )
        self.modalities[name] = [aet, host, port]

    def echo(self, modality_name: str, timeout: float = 10.0) -> bool:
        """C-ECHO a configured modality; return whether it answered."""
        try:
            self.post(
                f"/modalities/{urllib.parse.quote(modality_name)}/echo",
                {"Timeout": int(timeout)},
                timeout=timeout + 5,
            )
        except OrthancError:
            return False
        return True

    def store_to_modality(
        self,
        modality_name: str,
        resources: Iterable[str],
        synchronous: bool = True,
        timeout: float = 60.0,
    ) -> dict[str, Any]:
        """C-STORE resources to a configured modality (``POST /modalities/{name}/store``).

        Parameters
        ----------
        modality_name : str
            Key in ``DicomModalities``.
        resources : iterable of str
            Orthanc IDs of patients, studies, series or instances.
        synchronous : bool
            Wait for the transfer (True) or return the job (False).
        timeout : float
            HTTP timeout in seconds.

        Returns
        -------
        dict
            Synchronous: ``Description``, ``FailedInstancesCount``,
            ``InstancesCount``, ``LocalAet``, ``ParentResources``, ``RemoteAet``.
            Asynchronous: ``ID`` and ``Path`` of the job.
        """
        body = {"Resources": list(resources), "Synchronous": synchronous}
        return self.post(
            f"/modalities/{urllib.parse.quote(modality_name)}/store", body, timeout=timeout
        )

    def job(self, job_id: str) -> dict[str, Any]:
        """Return the state of a job (``State`` is "Success", "Failure", "Running", ...)."""
        return self.get(f"/jobs/{job_id}")


def _jsonable(value: Modality) -> Any:
    """Convert a modality entry to something ``json.dumps`` accepts."""
    if isinstance(value, Mapping):
        return dict(value)
    return list(value)
