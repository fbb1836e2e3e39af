"""``cxr-classify``: chest radiograph findings with a MONAI DenseNet-121 (operator weights).

No weights ship with the node.  The operator places either TorchScript
(``model.ts``, any network with the configured inputs and outputs) or a
DenseNet-121 state dict (``model.pt``, MONAI ``DenseNet121(spatial_dims=2,
in_channels=1, out_channels=4)``) in ``<models dir>/cxr-classify/``.
"""
