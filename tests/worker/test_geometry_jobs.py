"""Segmentation jobs on real-world geometry: near-equal orientations, gantry tilt, multi-frame.

``fixture-tissue-bands`` (TEST FIXTURE network) segments soft tissue and bone
by intensity band; what is checked is that each job succeeds, that its SEG
lies on the source images (frames of a multi-frame source) and passes
dciodvfy, and that the SR's volumes are those of the SEG on the true geometry.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from sqlalchemy.orm import Session, sessionmaker

from core.db.models import Job, utcnow
from core.routing import RoutingRule
from pipelines.phantom import generate_ct_phantom
from scheduler.dispatch import Dispatcher
from tests.support.dciodvfy import dciodvfy_available, dciodvfy_errors
from tests.support.model_fixtures import write_tissue_bands_model
from tests.support.real_data import real_images
from tests.support.sr import assert_frames_on_source_slices
from tests.support.stacks import enhanced_ct, jitter_orientation
from worker.runtime import WorkerRuntime
from worker.tasks.inference import JobOutcome, execute_job

from .conftest import RecordingApp, SpoolStudy


def _segment(
    make_settings,
    tmp_path: Path,
    spool_study: SpoolStudy,
    factory: sessionmaker[Session],
    series: list[pydicom.Dataset],
) -> tuple[Path, Path]:
    """Run the tissue-bands job on ``series``; its SEG and SR files, dciodvfy-checked."""
    pipeline = write_tissue_bands_model(tmp_path / "models")
    rule = RoutingRule(name="bands", pipeline=pipeline, modality=frozenset({"CT"}))
    settings = make_settings(models_dir=tmp_path / "models", routing_rules=[rule])
    study_id = spool_study(series)
    later = utcnow() + timedelta(seconds=settings.stability_seconds + 1)
    outcome = Dispatcher(RecordingApp(), factory, settings).route_study(study_id, later)
    assert outcome is not None
    (job_id,) = outcome.new_job_ids
    result = execute_job(WorkerRuntime.from_settings(settings), job_id)
    with factory() as session:
        job = session.get_one(Job, job_id)
        assert result == JobOutcome.SUCCEEDED, job.error
        paths = {item.kind: Path(item.path) for item in job.results}
    if dciodvfy_available():
        assert dciodvfy_errors(paths["seg"]) == []
        assert dciodvfy_errors(paths["sr"]) == []
    return paths["seg"], paths["sr"]


def _volumes(sr_path: Path) -> list[float]:
    report = hd.sr.MeasurementReport.from_sequence(hd.sr.srread(sr_path).content)
    return [
        float(group.get_measurements(name=pydicom.sr.codedict.codes.SCT.Volume)[0].value)
        for group in report.get_volumetric_roi_measurement_groups()
    ]


def test_near_equal_orientations_job_succeeds(
    make_settings, tmp_path: Path, spool_study: SpoolStudy, session_factory
) -> None:
    """The GE 3D T1 case ended as "internal error (ValueError)" with nothing sent."""
    slices = jitter_orientation(
        generate_ct_phantom(slices=40, rows=48, columns=48, pixel_spacing=6.0).datasets
    )
    seg_path, _ = _segment(make_settings, tmp_path, spool_study, session_factory, slices)
    seg = hd.seg.segread(seg_path)
    assert {
        s.ReferencedSOPInstanceUID
        for s in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    } <= {ds.SOPInstanceUID for ds in slices}


def test_enhanced_multiframe_job_references_frames(
    make_settings, tmp_path: Path, spool_study: SpoolStudy, session_factory
) -> None:
    slices = generate_ct_phantom(slices=16, rows=48, columns=48, pixel_spacing=6.0).datasets
    enhanced = enhanced_ct(slices)
    seg_path, _ = _segment(make_settings, tmp_path, spool_study, session_factory, [enhanced])
    seg = hd.seg.segread(seg_path)
    references = [
        item.DerivationImageSequence[0].SourceImageSequence[0]
        for item in seg.PerFrameFunctionalGroupsSequence
    ]
    assert {ref.ReferencedSOPInstanceUID for ref in references} == {enhanced.SOPInstanceUID}
    assert all(1 <= int(ref.ReferencedFrameNumber) <= 16 for ref in references)


def test_real_gantry_tilted_head_ct_job(
    make_settings, tmp_path: Path, spool_study: SpoolStudy, session_factory
) -> None:
    """Philips head phantom, tilt -18.5 degrees: SEG frames on each tilted slice, true volumes."""
    slices = [pydicom.dcmread(path) for path in real_images("ct-head-phantom-gantry-tilt")]
    seg_path, sr_path = _segment(make_settings, tmp_path, spool_study, session_factory, slices)
    seg = hd.seg.segread(seg_path)
    sources = assert_frames_on_source_slices(seg, slices)
    spacing = [float(v) for v in slices[0].PixelSpacing]
    voxel_ml = spacing[0] * spacing[1] * 2.5 * np.cos(np.deg2rad(18.5)) / 1000
    segment_voxels = [
        int(np.count_nonzero(seg.get_pixels_by_source_instance(sources, segment_numbers=[n])))
        for n in (1, 2)
    ]
    np.testing.assert_allclose(_volumes(sr_path), np.array(segment_voxels) * voxel_ml, rtol=1e-4)
