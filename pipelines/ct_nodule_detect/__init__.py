"""``ct-nodule-detect``: lung nodule detection on CT (operator-supplied weights).

The network maps the windowed CT to one nodule probability per voxel
(sigmoid); every connected region above the threshold is a finding.  The
operator places TorchScript weights in ``<models dir>/ct-nodule-detect/``.
"""
