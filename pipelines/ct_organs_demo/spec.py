"""Registration of ``ct-organs-demo``: a small MONAI UNet trained on the project's phantoms."""

from pathlib import Path

from pipelines.registry import PipelineSpec

SPEC = PipelineSpec(
    name="ct-organs-demo",
    version="0.1.0",
    description="DEMO MODEL (synthetic phantoms only): body, lungs, spine, liver on CT",
    queue="gpu",
    modalities=frozenset({"CT"}),
    entrypoint="pipelines.model.pipeline:ModelPipeline",
    kind="segmentation",
    config_path=Path(__file__).parent / "model" / "pipeline.json",
)
