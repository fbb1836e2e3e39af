"""``ct-organs-demo``: a demonstration MONAI UNet trained by ``ainode train-demo`` on phantoms.

The weights (``model/model.ts``) are the output of :mod:`.train` with the
seed recorded in ``model/metrics.json``; they have only ever seen synthetic
phantoms and must not be used on patients.
"""
