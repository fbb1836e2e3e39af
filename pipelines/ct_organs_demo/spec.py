"""Registration of ``ct-organs-demo``: a small MONAI UNet trained on the project's phantoms.

Identity, labels and pre-processing are in ``model/pipeline.json``; the
weights ``model/model.ts`` ship with the code.
"""

from pathlib import Path

from pipelines.registry import model_spec

_MODEL_DIR = Path(__file__).parent / "model"

SPEC = model_spec(_MODEL_DIR / "pipeline.json", weights_dir=_MODEL_DIR)
