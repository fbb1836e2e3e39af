"""Fixtures for worker tests: a phantom study already in the spool and the database."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset, dcmread
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from dicom_node.recording.received import ReceivedInstance
from dicom_node.recording.recorder import InstanceRecorder
from dicom_node.store.c_store import checked_header
from dicom_node.store.receive import ReceiveFile
from dicom_node.store.spool import InstanceSpool
from pipelines.phantom import PhantomStudy, generate_ct_phantom, write_phantom
from worker.runtime import WorkerRuntime


@dataclass
class RecordingApp:
    """Stands in for the Celery app where a test checks what would be enqueued."""

    sent: list[tuple[str, list[Any], str | None]] = field(default_factory=list)

    def send_task(self, name: str, args: list[Any], queue: str | None = None, **_: Any) -> None:
        self.sent.append((name, args, queue))


@pytest.fixture
def recording_app() -> RecordingApp:
    """A fake app that records ``send_task`` calls instead of publishing them."""
    return RecordingApp()


@pytest.fixture(scope="session")
def small_phantom() -> PhantomStudy:
    """A small chest phantom (24 slices of 64 x 64, 6 mm pixels) for fast worker tests."""
    return generate_ct_phantom(
        slices=24,
        rows=64,
        columns=64,
        pixel_spacing=6.0,
        slice_thickness=6.0,
        patient_name="SECRET^PATIENT",
    )


SpoolStudy = Callable[..., int]


@pytest.fixture
def spool_study(
    settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path
) -> SpoolStudy:
    """``spool_study(study, skip=())``: store files as the SCP would; returns the study id.

    ``study`` is a phantom or a list of datasets of one series (e.g. a radiograph).
    """
    spool = InstanceSpool(settings.incoming_dir)
    recorder = InstanceRecorder(session_factory)

    def write(study: PhantomStudy | list[Dataset]) -> list[Path]:
        if isinstance(study, PhantomStudy):
            return write_phantom(study, tmp_path / f"received-{study.series_instance_uid[-8:]}")
        folder = tmp_path / f"received-{study[0].SeriesInstanceUID[-8:]}"
        folder.mkdir(parents=True, exist_ok=True)
        for index, dataset in enumerate(study):
            dataset.save_as(folder / f"{index}.dcm", enforce_file_format=True)
        return [folder / f"{index}.dcm" for index in range(len(study))]

    def store(study: PhantomStudy | list[Dataset], skip: tuple[int, ...] = ()) -> int:
        study_id = -1
        for index, path in enumerate(write(study)):
            if index in skip:
                continue
            ds = dcmread(path, stop_before_pixels=True)
            received = ReceiveFile(path.parent, path.read_bytes())
            try:
                stored = spool.commit(
                    received,
                    spool.relative_path(
                        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
                    ),
                )
            finally:
                # As the SCP does after each instance: one descriptor per instance otherwise
                # stays open, and past 1024 of them pynetdicom's select() fails the next
                # association (a silent "Association Aborted").
                received.discard()
            study_id = recorder.record(
                ReceivedInstance(
                    study_uid=ds.StudyInstanceUID,
                    series_uid=ds.SeriesInstanceUID,
                    sop_instance_uid=ds.SOPInstanceUID,
                    sop_class_uid=ds.SOPClassUID,
                    transfer_syntax_uid=ds.file_meta.TransferSyntaxUID,
                    modality=ds.Modality,
                    body_part=ds.get("BodyPartExamined"),
                    series_description=ds.get("SeriesDescription"),
                    calling_ae="TESTSCU",
                    path=str(stored.relative_path),
                    size_bytes=stored.size_bytes,
                    identifiers=checked_header(
                        path, b"", path.stat().st_size, None, None
                    ).identifiers,
                )
            )
        return study_id

    return store


@pytest.fixture
def runtime(settings: Settings, session_factory: sessionmaker[Session]) -> WorkerRuntime:
    """A worker runtime on the test database and spool."""
    return WorkerRuntime.from_settings(settings)
