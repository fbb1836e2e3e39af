"""Registration of ``cxr-classify``: configuration here, weights in the models directory."""

from pathlib import Path

from pipelines.registry import model_spec

SPEC = model_spec(Path(__file__).parent / "pipeline.json", weights_dir=None)
