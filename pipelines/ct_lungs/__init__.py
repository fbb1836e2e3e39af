"""``ct-lungs``: classical body and left/right lung segmentation of chest CT.

Kept import-free so that :mod:`pipelines.registry` can read ``spec.py``
without loading numpy/scipy; the pipeline lives in :mod:`.pipeline`.
"""
