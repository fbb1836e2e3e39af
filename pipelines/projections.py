"""Running a pipeline on its input, projection images one by one.

A CR/DX series routinely holds a PA and a lateral view: two images of
different sizes and no shared patient geometry, so they are never stacked.
The pipeline runs on each image (``PipelineInput.images``) and the results
are joined into one result whose findings name their image
(``ClassFinding.image``, ``DetectedFinding.image``): the series gets one SR
with its findings per image, each measurement group referencing its image.
"""

from __future__ import annotations

import dataclasses

from core.errors import PipelineError
from pipelines.base import (
    ClassificationResult,
    DetectionResult,
    Pipeline,
    PipelineInput,
    PipelineResult,
)

__all__ = ["run_pipeline"]


def run_pipeline(pipeline: Pipeline, data: PipelineInput) -> PipelineResult:
    """``pipeline.run(data)``, or for a series of projection images, run on each and joined.

    Raises
    ------
    PipelineError
        The pipeline segments: a SEG of several unrelated radiographs is not
        written (send each image as its own series).
    """
    if not data.images:
        return pipeline.run(data)
    results = []
    for image in data.images:
        result = pipeline.run(image)
        source = image.datasets[0]
        if isinstance(result, ClassificationResult | DetectionResult):
            findings = [dataclasses.replace(item, image=source) for item in result.findings]
            results.append(dataclasses.replace(result, findings=findings))
        else:
            raise PipelineError(
                f"series holds {len(data.images)} projection images; {pipeline.spec.name} "
                "segments, and a segmentation is written for one image only"
            )
    first = results[0]
    joined = [finding for result in results for finding in result.findings]
    notes = {key: value for result in results for key, value in result.notes.items()}
    return dataclasses.replace(first, findings=joined, notes=notes)
