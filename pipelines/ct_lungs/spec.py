"""Registration of ``ct-lungs``: classical body and lung segmentation of chest CT."""

from pipelines.registry import PipelineSpec

SPEC = PipelineSpec(
    name="ct-lungs",
    version="1.0.0",
    description="Body, left and right lung on CT (classical thresholding, no weights)",
    queue="cpu",
    modalities=frozenset({"CT"}),
    entrypoint="pipelines.ct_lungs.pipeline:CtLungsPipeline",
)
