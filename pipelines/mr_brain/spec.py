"""Registration of ``mr-brain``: a code pipeline on deepbet's weights (``[brain]`` extra)."""

from pipelines.registry import PipelineSpec

SPEC = PipelineSpec(
    name="mr-brain",
    version="1.0.0",
    description="Brain mask and volume on T1-weighted head MR (deepbet 1.0.2 networks)",
    queue="cpu",
    modalities=frozenset({"MR"}),
    entrypoint="pipelines.mr_brain.pipeline:MrBrainPipeline",
    weights="pipelines.mr_brain.weights:mr_brain_weights",
)
