"""What the node reads before running anything: name, version, queue, code and weights."""

from pathlib import Path

from pipelines.spec import PipelineSpec

SPEC = PipelineSpec(
    name="example-bone",
    version="0.1.0",
    description="Bone on CT above a threshold (example plugin)",
    queue="cpu",
    modalities=frozenset({"CT"}),
    entrypoint="ainode_example_pipeline.pipeline:ExampleBonePipeline",
    weights="ainode_example_pipeline.spec:weight_files",
)


def weight_files() -> dict[str, Path]:
    """The weights shipped in this package (hashed by ``ainode pipelines``)."""
    return {"weights.json": Path(__file__).with_name("weights.json")}
