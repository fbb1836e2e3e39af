"""Invalid patient/study values from the source: repaired or left out, results pass dciodvfy."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from pydicom import Dataset, dcmread
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.sr.codedict import codes
from pydicom.tag import Tag

from core.uids import ResultUIDs
from pipelines.base import (
    ClassFinding,
    ClassificationResult,
    PipelineInput,
    PipelineResult,
    SegmentationResult,
    SegmentDefinition,
)
from pipelines.io import load_projection, load_series
from pipelines.outputs.sources import repaired_header, result_sources
from pipelines.phantom import PhantomStudy, write_phantom
from pipelines.registry import load_pipeline
from tests.support.bad_values import EXPECTED_CHANGES, with_invalid_values
from tests.support.dciodvfy import dciodvfy_available, dciodvfy_errors
from tests.support.radiograph import make_radiograph
from tests.support.real_data import real_images
from worker.results import BuiltResults, build_result_objects


def _raw(keyword: str, value: bytes) -> Dataset:
    dataset = Dataset()
    tag = Tag(tag_for_keyword(keyword))
    padded = value + b" " if len(value) % 2 else value
    dataset[tag] = RawDataElement(tag, dictionary_VR(tag), len(padded), padded, 0, False, True)
    return dataset


@pytest.mark.parametrize(
    ("keyword", "sent", "kept"),
    [
        ("PatientAge", b"42", "042Y"),
        ("PatientAge", b"5y", "005Y"),
        ("PatientAge", b"3 M", "003M"),
        ("PatientAge", b"forty", None),
        ("PatientBirthDate", b"1970.01.31", "19700131"),
        ("PatientBirthDate", b"19701340", ""),
        ("StudyDate", b"2025/02/03", "20250203"),
        ("StudyTime", b"08:15", "0815"),
        ("PatientSex", b"female", "F"),
        ("PatientSex", b"U", ""),
        ("PatientWeight", b"70kg", None),
        ("PatientSize", b"1.7500000000000001", "1.75"),
        ("AccessionNumber", b"A" * 20, ""),
        ("PatientName", b"Bono", "Bono^"),
        ("ReferringPhysicianName", b"Kildare", "Kildare^"),
    ],
)
def test_each_invalid_value_is_repaired_emptied_or_left_out(
    keyword: str, sent: bytes, kept: str | None
) -> None:
    source = _raw(keyword, sent)
    header, changes = repaired_header(source)
    assert len(changes) == 1 and changes[0].startswith(keyword)
    if kept is None:
        assert keyword not in header and changes[0].startswith(f"{keyword} left out")
    else:
        assert str(header[keyword].value or "") == kept
    assert sent.decode() not in " ".join(changes)  # the values (PHI) stay out of the events
    assert source.get_item(Tag(tag_for_keyword(keyword))).value.rstrip() == sent  # untouched


def test_valid_header_is_passed_through_unchanged(phantom: PhantomStudy) -> None:
    dataset = phantom.datasets[0]
    dataset_with_code = copy.deepcopy(dataset)
    dataset_with_code.PatientAge = "042Y"
    dataset_with_code.ProcedureCodeSequence = [
        hd.sr.CodedConcept.from_code(codes.LN.CTUnspecifiedBodyRegion)
    ]
    for source in (dataset, dataset_with_code):
        header, changes = repaired_header(source)
        assert header is source and changes == []
    assert result_sources(phantom.datasets).note is None


def _built(data: PipelineInput, result: PipelineResult) -> BuiltResults:
    """The job's result objects as the worker builds them (identity of ``ct-lungs``)."""
    source = data.datasets[0]
    uids = ResultUIDs.for_job(
        study_uid=source.StudyInstanceUID,
        series_uid=source.SeriesInstanceUID,
        pipeline="ct-lungs",
        version="1.0.0",
        key=source.SeriesInstanceUID,
    )
    pipeline = load_pipeline("ct-lungs")
    return build_result_objects(
        pipeline, data, result, uids, ae_title="AINODE", outside_domain=False
    )


@pytest.fixture(scope="module")
def invalid_series(phantom: PhantomStudy, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The phantom written with real-world invalid patient/study values, read back as received."""
    study = copy.deepcopy(phantom)
    for dataset in study.datasets:
        with_invalid_values(dataset)
    return write_phantom(study, tmp_path_factory.mktemp("invalid-values"))


def test_one_component_patient_name_reaches_no_warning(
    phantom: PhantomStudy, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """highdicom warns of a one-component name by quoting it; the caret keeps it out of logs."""
    study = copy.deepcopy(phantom)
    for dataset in study.datasets:
        dataset.PatientName = "Oddname"
    data = load_series(write_phantom(study, tmp_path_factory.mktemp("one-component-name")))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        built = _built(data, load_pipeline("ct-lungs").run(data))
    assert [str(item.dataset.PatientName) for item in built.objects] == ["Oddname^"] * 2
    assert not [str(w.message) for w in caught if "Oddname" in str(w.message)]


# pydicom warns of the source values that are too long: they are the input this test repairs
@pytest.mark.filterwarnings("ignore:The value length .* exceeds the maximum length")
def test_seg_and_sr_from_invalid_source_values_pass_dciodvfy(
    invalid_series: list[Path], tmp_path: Path
) -> None:
    data = load_series(invalid_series)
    built = _built(data, load_pipeline("ct-lungs").run(data))
    assert built.note is not None
    assert set(
        built.note.removeprefix("source attributes made valid for the results: ").split(", ")
    ) == (EXPECTED_CHANGES)
    assert [item.kind for item in built.objects] == ["seg", "sr"]
    for item in built.objects:
        path = tmp_path / item.file_name
        item.dataset.save_as(path, enforce_file_format=True)
        written = dcmread(path)
        assert (written.PatientAge, written.PatientSex) == ("042Y", "M")
        assert (written.StudyDate, written.StudyTime) == ("20250101", "120000")
        assert "ProcedureCodeSequence" not in written and "PatientWeight" not in written
        if dciodvfy_available():
            assert dciodvfy_errors(path) == []


def test_classification_sr_from_invalid_source_values_passes_dciodvfy(tmp_path: Path) -> None:
    data = load_projection([with_invalid_values(make_radiograph(seed=21))])
    result = ClassificationResult(
        findings=[
            ClassFinding(
                label="Pneumothorax",
                finding=codes.SCT.Pneumothorax,
                category=codes.SCT.ClinicalFinding,
                probability=0.1,
                present=False,
            )
        ],
        threshold=0.5,
    )
    built = _built(data, result)
    assert built.note is not None and "PatientAge repaired (AS)" in built.note
    path = tmp_path / "sr.dcm"
    built.objects[0].dataset.save_as(path, enforce_file_format=True)
    assert dcmread(path).PatientAge == "042Y"
    if dciodvfy_available():
        assert dciodvfy_errors(path) == []


def test_every_source_is_repaired_and_each_change_named_once(invalid_series: list[Path]) -> None:
    datasets = load_series(invalid_series).datasets
    sources = result_sources(datasets)
    assert set(sources.changes) == EXPECTED_CHANGES and len(sources.changes) == len(
        EXPECTED_CHANGES
    )
    assert [str(ds.PatientAge) for ds in sources.datasets] == ["042Y"] * len(datasets)
    assert {ds.SOPInstanceUID for ds in sources.datasets} == {ds.SOPInstanceUID for ds in datasets}


def test_real_mr_with_a_bare_patient_age_and_name_gives_valid_seg_and_sr(tmp_path: Path) -> None:
    data = load_series(real_images("mr-t1w-3d-studyforrest"))  # PatientAge "42", a bare name
    head = SegmentDefinition("Head", codes.SCT.AnatomicalStructure, codes.SCT.Head, "head")
    mask = data.volume.array > np.percentile(data.volume.array, 80)
    built = _built(data, SegmentationResult(segments=[head], masks=[mask]))
    assert built.note == (
        "source attributes made valid for the results: "
        "PatientName repaired (family name made explicit), PatientAge repaired (AS)"
    )
    for item in built.objects:
        path = tmp_path / item.file_name
        item.dataset.save_as(path, enforce_file_format=True)
        assert dcmread(path).PatientAge == "042Y"
        if dciodvfy_available():
            assert dciodvfy_errors(path) == []
