"""``mr-brain`` on real scanners' T1 series: volume, deepbet's own result, SEG geometry.

deepbet is run as its authors run it (``BrainExtraction.run`` on a NIfTI
made from the same voxels, nibabel from deepbet's own dependencies), and the
node's pipeline must reproduce its mask to Dice >= 0.99.  The SEG built from
the result is read back and compared voxel by voxel with the mask on each
source image.  Skipped with the reason where the real data are absent.
"""

from __future__ import annotations

import io

import highdicom as hd
import numpy as np
import pytest

from core.uids import ResultUIDs
from pipelines.base import PipelineInput
from pipelines.io import load_series
from pipelines.mr_brain.pipeline import MrBrainPipeline
from pipelines.mr_brain.weights import deepbet_weights
from pipelines.outputs.agreement import dice, mask_on_source_images, seg_mask_on_source_images
from pipelines.registry import get_spec
from tests.support.real_data import real_images
from worker.results import build_result_objects

nibabel = pytest.importorskip("nibabel", reason="nibabel comes with the [brain] extra")
deepbet = pytest.importorskip("deepbet", reason="deepbet comes with the [brain] extra")

T1_SERIES = ("mr-t1w-3d-studyforrest", "mr-t1-2d-sag-supine")


@pytest.fixture(scope="module")
def pipeline() -> MrBrainPipeline:
    built = MrBrainPipeline(deepbet_weights(), "cpu")
    built.spec = get_spec("mr-brain")
    return built


def _deepbet_mask(data: PipelineInput) -> tuple[np.ndarray, float]:
    """deepbet's own mask (volume axes) and TIV (mL) for the voxels of ``data``."""
    ras_affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(data.volume.affine)
    image = nibabel.Nifti1Image(np.asarray(data.volume.array, np.float32), ras_affine)
    _, mask, tiv = deepbet.BrainExtraction(no_gpu=True).run(image)
    return np.asarray(mask.dataobj).astype(bool), float(tiv)


@pytest.mark.parametrize("case", T1_SERIES)
def test_brain_volume_and_deepbet_reproduced(case: str, pipeline: MrBrainPipeline) -> None:
    data = load_series(real_images(case))
    assert pipeline.domain.violations(data.datasets) == []
    (mask,) = pipeline.run(data).masks
    volume_ml = np.count_nonzero(mask) * data.voxel_volume_ml
    assert 1000 <= volume_ml <= 1900
    reference, tiv = _deepbet_mask(data)
    assert dice(mask, reference) >= 0.99
    assert volume_ml == pytest.approx(tiv, rel=0.01)


def test_seg_lies_on_the_source_images_voxel_by_voxel(pipeline: MrBrainPipeline) -> None:
    data = load_series(real_images("mr-t1-2d-sag-supine"))
    result = pipeline.run(data)
    uids = ResultUIDs.for_job(
        study_uid=data.datasets[0].StudyInstanceUID,
        series_uid=data.datasets[0].SeriesInstanceUID,
        pipeline="mr-brain",
        version=pipeline.spec.version,
        key="test",
    )
    built = build_result_objects(
        pipeline, data, result, uids, ae_title="AINODE", outside_domain=False
    )
    seg_object = next(item for item in built.objects if item.kind == "seg")
    buffer = io.BytesIO()
    seg_object.dataset.save_as(buffer, enforce_file_format=True)
    buffer.seek(0)
    seg = hd.seg.segread(buffer)
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "12738006"
    from_seg = seg_mask_on_source_images(seg, data.datasets, segment_number=1)
    expected = mask_on_source_images(data.volume, result.masks[0], data.datasets)
    assert dice(from_seg, expected) >= 0.99
    assert np.array_equal(from_seg, expected)
