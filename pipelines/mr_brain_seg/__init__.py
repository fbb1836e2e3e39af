"""``mr-brain-seg``: brain tumour sub-regions on MR from T1c, T2 and FLAIR (operator weights).

A multi-series pipeline: routing waits until the study holds a series for
each of its three inputs (matched by SeriesDescription), and the worker
resamples T2 and FLAIR onto the T1c grid before inference.  The operator
places a MONAI bundle or TorchScript ``model.ts`` with 3 input channels and
4 output classes (background, necrosis, oedema, enhancing tumour) in
``<models dir>/mr-brain-seg/``.
"""
