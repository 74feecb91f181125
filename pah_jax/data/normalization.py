"""Per-channel mean/std (in units of pixel/255) that the model subtracts and divides by.

`dataset` uses each data set's customary constants (computed from its training images);
`half` is mean 0.5, std 0.5 per channel, as the official code normalises.
"""

import numpy as np

from pah_jax.errors import UserError

MODES = ("dataset", "half")

# Training-set statistics, as published with each benchmark.
DATASET_STATS = {
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "tiny_imagenet": ((0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821)),
}


def check_mode(mode: str) -> None:
  if mode not in MODES:
    raise UserError(f"data.normalization={mode!r} is unknown; use one of {', '.join(MODES)}")


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """Mean and std per channel of uint8 NHWC images, in units of pixel/255."""
  channels = images.shape[-1]
  # Sum in chunks of float64 so a large uint8 array is never copied whole to float.
  total = np.zeros(channels)
  total_sq = np.zeros(channels)
  flat = images.reshape(-1, channels)
  for start in range(0, len(flat), 1 << 22):
    chunk = flat[start:start + (1 << 22)].astype(np.float64) / 255.0
    total += chunk.sum(axis=0)
    total_sq += np.square(chunk).sum(axis=0)
  count = max(len(flat), 1)
  mean = total / count
  std = np.sqrt(np.maximum(total_sq / count - np.square(mean), 0.0))
  # A constant channel would divide by zero downstream.
  std = np.where(std > 0, std, 1.0)
  return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def normalization(
    name: str, mode: str, x_train: np.ndarray
) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """The (mean, std) of data set `name` under normalisation `mode`.

  Data sets without published constants (user `.npz`) get statistics of `x_train`.
  """
  check_mode(mode)
  channels = x_train.shape[-1]
  if mode == "half":
    return (0.5,) * channels, (0.5,) * channels
  if name in DATASET_STATS:
    return DATASET_STATS[name]
  return channel_stats(x_train)
