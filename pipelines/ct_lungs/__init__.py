"""``ct-lungs``: classical body and left/right lung segmentation of chest CT.

Kept import-free: :mod:`pipelines.registry` reads the ``pipeline.json`` beside
it without loading numpy/scipy; the pipeline lives in :mod:`.pipeline`.
"""
