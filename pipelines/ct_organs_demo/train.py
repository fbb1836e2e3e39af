"""Train the ``ct-organs-demo`` UNet on generated phantoms (``ainode train-demo``).

Reproducible from its seed: phantoms, initial weights and batch order all
derive from it, and training runs single-process on the CPU with
deterministic algorithms.  Training cases use phantom seeds
``seed * 1000 + 0 .. train_cases - 1`` at three pixel spacings; held-out
cases use seeds ``seed * 1000 + 500 ..``, never seen in training, and are
scored through exactly the pre/post-processing the pipeline uses
(:func:`pipelines.model.inference.predict_dense`).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipelines.io import load_series
from pipelines.model.config import ModelConfig, load_model_config, sha256_of
from pipelines.model.inference import normalise, predict_dense
from pipelines.phantom import generate_ct_phantom

__all__ = [
    "MODEL_DIR",
    "TrainReport",
    "build_network",
    "dice_scores",
    "make_case",
    "tensors_sha256",
    "train_demo",
]

#: Folder of the shipped configuration and weights.
MODEL_DIR = Path(__file__).parent / "model"
#: Network input size at the model spacing (5 mm): 160 x 320 x 320 mm.
_SHAPE = (32, 64, 64)
#: Pixel spacings (mm) of the training phantoms; the field of view stays the same.
_SPACINGS = (2.0, 2.5, 3.0)


@dataclass
class TrainReport:
    """What one training run did and how well the result segments held-out phantoms."""

    seed: int
    steps: int
    train_cases: int
    heldout_cases: int
    seconds: float
    dice: dict[str, float]
    weights_sha256: str
    weights_bytes: int
    tensors_sha256: str


def build_network() -> torch.nn.Module:
    """The demo UNet: 3D, 1 input channel, 6 classes (air + 5 phantom labels)."""
    from monai.networks.nets import UNet

    return UNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=6,
        channels=(8, 16, 32, 64),
        strides=(2, 2, 2),
        num_res_units=2,
    )


def make_case(seed: int, pixel_spacing: float = 2.5) -> tuple[np.ndarray, np.ndarray, tuple]:
    """HU volume, label map and spacing of one phantom, loaded like a received series."""
    study = generate_ct_phantom(
        slices=round(160 / pixel_spacing),
        rows=round(320 / pixel_spacing),
        columns=round(320 / pixel_spacing),
        pixel_spacing=pixel_spacing,
        slice_thickness=pixel_spacing,
        seed=seed,
    )
    data = load_series(study.datasets)
    return data.volume.array, study.labels, tuple(float(s) for s in data.volume.spacing)


def _fit(tensor: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Zero-pad or centre-crop the spatial axes of ``(N, C, ...)`` to ``shape``."""
    for axis, size in enumerate(shape, start=2):
        excess = tensor.shape[axis] - size
        if excess > 0:
            tensor = tensor.narrow(axis, excess // 2, size)
        elif excess < 0:
            pad = [0, 0] * (tensor.ndim - axis - 1) + [-excess // 2, -excess - (-excess // 2)]
            tensor = F.pad(tensor, pad)
    return tensor


def _training_tensors(
    hu: np.ndarray, labels: np.ndarray, spacing: tuple, config: ModelConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Input and target at the model spacing, as the pipeline resamples its input."""
    target = config.input.spacing or spacing
    size = [max(1, round(n * s / t)) for n, s, t in zip(hu.shape, spacing, target, strict=True)]
    x = torch.from_numpy(normalise(hu, config.input.window))[None, None]
    x = F.interpolate(x, size=size, mode="trilinear", align_corners=False)
    y = torch.from_numpy(labels.astype(np.float32))[None, None]
    y = F.interpolate(y, size=size, mode="nearest")
    return _fit(x, _SHAPE)[0], _fit(y, _SHAPE)[0].long()


def tensors_sha256(network: torch.nn.Module) -> str:
    """SHA-256 over the network's parameters and buffers (names and bytes, sorted by name).

    Re-running the training reproduces the tensors bit for bit, but not the
    TorchScript file: its serialization id and the order of some scripted
    constants change from save to save.  This digest is what identifies the
    trained weights across runs.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(network.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def dice_scores(
    probabilities: np.ndarray, labels: np.ndarray, config: ModelConfig
) -> dict[str, float]:
    """Dice per configured segment (unions of classes) of the argmax prediction."""
    predicted = probabilities.argmax(axis=0)
    scores = {}
    for label in config.labels:
        truth = np.isin(labels, label.values)
        guess = np.isin(predicted, label.values)
        total = truth.sum() + guess.sum()
        scores[label.label] = float(2 * (truth & guess).sum() / total) if total else 1.0
    return scores


def evaluate(network: torch.nn.Module, config: ModelConfig, seeds: list[int]) -> dict[str, float]:
    """Mean Dice per segment over held-out phantoms of ``seeds`` (2.5 mm, as received)."""
    network.eval()
    totals: dict[str, list[float]] = {}
    for seed in seeds:
        hu, labels, spacing = make_case(seed)
        probabilities = predict_dense(network, hu[None], spacing, config, torch.device("cpu"))
        for name, value in dice_scores(probabilities, labels, config).items():
            totals.setdefault(name, []).append(value)
    return {name: round(float(np.mean(values)), 4) for name, values in totals.items()}


def train_demo(
    output_dir: Path = MODEL_DIR,
    *,
    seed: int = 0,
    steps: int = 1500,
    train_cases: int = 24,
    heldout_cases: int = 6,
    batch_size: int = 3,
    threads: int = 2,
) -> TrainReport:
    """Train the demo UNet and write ``model.ts`` and ``metrics.json`` to ``output_dir``.

    Parameters
    ----------
    output_dir:
        Must hold the pipeline's ``pipeline.json`` (the shipped one by default).
    seed:
        Seeds phantoms, weights and batch order.
    steps, train_cases, heldout_cases, batch_size:
        Optimiser steps, training phantoms, held-out phantoms, cases per step.
    threads:
        CPU threads for torch.

    Returns
    -------
    TrainReport
        Also written as ``metrics.json`` next to the weights.
    """
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        return _train(output_dir, seed, steps, train_cases, heldout_cases, batch_size, threads)
    finally:
        torch.use_deterministic_algorithms(deterministic)


def _train(
    output_dir: Path,
    seed: int,
    steps: int,
    train_cases: int,
    heldout_cases: int,
    batch_size: int,
    threads: int,
) -> TrainReport:
    """The training run of :func:`train_demo` (deterministic algorithms already on)."""
    start = time.perf_counter()
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    config = load_model_config(output_dir / "pipeline.json")
    rng = np.random.default_rng(seed)
    pairs = [
        _training_tensors(*make_case(seed * 1000 + i, _SPACINGS[i % len(_SPACINGS)]), config)
        for i in range(train_cases)
    ]
    inputs = torch.stack([x for x, _ in pairs])
    targets = torch.stack([y for _, y in pairs])

    from monai.losses import DiceCELoss

    network = build_network()
    loss_function = DiceCELoss(to_onehot_y=True, softmax=True)
    optimiser = torch.optim.Adam(network.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=steps)
    network.train()
    for _ in range(steps):
        batch = torch.from_numpy(rng.choice(train_cases, size=batch_size, replace=False))
        optimiser.zero_grad()
        loss = loss_function(network(inputs[batch]), targets[batch])
        loss.backward()
        optimiser.step()
        schedule.step()

    network.eval()
    weights = output_dir / "model.ts"
    torch.jit.script(network).save(str(weights))
    heldout = [seed * 1000 + 500 + i for i in range(heldout_cases)]
    scripted = torch.jit.load(str(weights))
    dice = evaluate(scripted, config, heldout)
    report = TrainReport(
        seed=seed,
        steps=steps,
        train_cases=train_cases,
        heldout_cases=heldout_cases,
        seconds=round(time.perf_counter() - start, 1),
        dice=dice,
        weights_sha256=sha256_of(weights),
        weights_bytes=weights.stat().st_size,
        tensors_sha256=tensors_sha256(scripted),
    )
    (output_dir / "metrics.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    return report
