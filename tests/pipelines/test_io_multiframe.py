"""Enhanced multi-frame CT and MR (one file, per-frame functional groups) as pipeline input."""

from __future__ import annotations

import copy
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from core.errors import PipelineError
from pipelines.io import add_companions, load_input, load_projection, load_series
from pipelines.outputs.sources import result_sources
from pipelines.phantom import generate_ct_phantom
from tests.support.radiograph import make_radiograph
from tests.support.real_data import real_images
from tests.support.stacks import enhanced_ct


def _save(dataset: pydicom.Dataset, folder: Path) -> Path:
    path = folder / "enhanced.dcm"
    dataset.save_as(path, enforce_file_format=True)
    return path


def test_enhanced_ct_gives_the_volume_of_its_slices(tmp_path: Path) -> None:
    slices = generate_ct_phantom(slices=12, rows=32, columns=32, pixel_spacing=6.0).datasets
    data = load_input([_save(enhanced_ct(slices), tmp_path)])
    reference = load_series(slices)
    assert len(data.datasets) == 1 and int(data.datasets[0].NumberOfFrames) == 12
    np.testing.assert_allclose(data.volume.affine, reference.volume.affine, atol=1e-6)
    np.testing.assert_array_equal(data.volume.array, reference.volume.array)  # HU: rescaled


def test_real_mr_as_enhanced_multiframe(tmp_path: Path) -> None:
    """The Siemens sagittal T1's 35 slices converted to one Legacy Converted Enhanced MR."""
    slices = [pydicom.dcmread(path) for path in real_images("mr-t1-2d-sag-supine")]
    enhanced = hd.legacy.LegacyConvertedEnhancedMRImage(
        result_sources(slices).datasets,  # its headers repaired as the writers get them
        series_instance_uid=generate_uid(entropy_srcs=["enhanced-mr-series"]),
        series_number=99,
        sop_instance_uid=generate_uid(entropy_srcs=["enhanced-mr-instance"]),
        instance_number=1,
    )
    data = load_input([_save(enhanced, tmp_path)])
    reference = load_series(slices)
    np.testing.assert_allclose(data.volume.affine, reference.volume.affine, atol=1e-4)
    np.testing.assert_allclose(data.volume.array, reference.volume.array)


def test_multiframe_without_functional_groups_is_named(tmp_path: Path) -> None:
    ds = copy.deepcopy(generate_ct_phantom(slices=3, rows=16, columns=16).datasets[0])
    ds.NumberOfFrames = 3
    ds.PixelData = ds.PixelData * 3
    with pytest.raises(PipelineError) as raised:
        load_input([_save(ds, tmp_path)])
    assert str(raised.value) == (
        f"instance {ds.SOPInstanceUID} (CT) holds 3 frames without per-frame functional "
        "groups (no plane position per frame): not a volume"
    )


def test_enhanced_without_frame_of_reference_is_named(tmp_path: Path) -> None:
    slices = generate_ct_phantom(slices=4, rows=16, columns=16).datasets
    enhanced = enhanced_ct(slices)
    del enhanced.FrameOfReferenceUID
    with pytest.raises(PipelineError) as raised:
        load_input([_save(enhanced, tmp_path)])
    assert str(raised.value) == (
        f"enhanced multi-frame instance {enhanced.SOPInstanceUID} has no FrameOfReferenceUID"
    )


def test_multiframe_projection_is_named() -> None:
    ds = make_radiograph(size=16)
    ds.NumberOfFrames = 2
    ds.PixelData = ds.PixelData * 2
    with pytest.raises(
        PipelineError, match=r"is a multi-frame projection \(2 frames, e\.g\. a cine\)"
    ):
        load_projection([ds])


def test_enhanced_companion_series_is_resampled_onto_the_primary(tmp_path: Path) -> None:
    """A multi-series pipeline's further series may come as one enhanced instance."""
    slices = generate_ct_phantom(slices=12, rows=32, columns=32, pixel_spacing=6.0).datasets
    primary = load_series(slices)
    data = add_companions(primary, [[_save(enhanced_ct(slices), tmp_path)]])
    (companion,) = data.companions
    np.testing.assert_allclose(companion, primary.volume.array, atol=1e-3)
