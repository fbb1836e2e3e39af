"""A second model's agreement in the TID 1500 SR: Dice, its volume, and a sortable review status."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import highdicom as hd
import pytest

from pipelines.base import PipelineInput, SecondOpinion, SegmentationResult
from pipelines.outputs.provenance import ResultProvenance
from pipelines.outputs.sr import AGREEMENT, MODELS_AGREE, REQUIRES_REVIEW, REVIEW_STATUS
from tests.support.dciodvfy import dciodvfy_available, dciodvfy_errors
from tests.support.sr import write_pair


def _with_opinion(result: SegmentationResult, dice: float) -> SegmentationResult:
    tracking_id = result.segments[0].tracking_id
    opinion = SecondOpinion(
        model="HD-BET 1.1 fold 0", dice=dice, volume_ml=123.4, review_below=0.93
    )
    return dataclasses.replace(result, second_opinions={tracking_id: opinion})


@pytest.mark.parametrize(("dice", "status"), [(0.97, MODELS_AGREE), (0.80, REQUIRES_REVIEW)])
def test_agreement_and_review_status_are_reported(
    ct_input: PipelineInput,
    seg_result: SegmentationResult,
    provenance: ResultProvenance,
    tmp_path: Path,
    dice: float,
    status: object,
) -> None:
    _, sr_path, _ = write_pair(ct_input, _with_opinion(seg_result, dice), provenance, tmp_path)
    if dciodvfy_available():
        assert dciodvfy_errors(sr_path) == []
    report = hd.sr.MeasurementReport.from_sequence(hd.sr.srread(sr_path).content)
    first, *others = report.get_volumetric_roi_measurement_groups()
    (agreement,) = first.get_measurements(name=AGREEMENT)
    assert float(agreement.value) == pytest.approx(dice)
    volumes = [float(m.value) for m in first.get_measurements() if m.name.value == "118565006"]
    assert pytest.approx(123.4) in volumes
    (evaluation,) = first.get_qualitative_evaluations(name=REVIEW_STATUS)
    assert evaluation.value == status
    assert all(not group.get_measurements(name=AGREEMENT) for group in others)
