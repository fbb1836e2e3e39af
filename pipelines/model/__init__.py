"""Generic model pipelines: a model file plus ``pipeline.json`` (see :mod:`.config`)."""
