"""Initial values of the learnable prototypes P (paper §3.2).

P holds one (C, s, s, ch) tensor per task, preallocated for all K tasks as (K, C, s, s, ch)
so that shapes never change with the task index. The task embedding is e_k = flatten(P_k)
(see `networks.task_embeddings`). Initial values are computed on the host from the training
data, once per run, deterministically from the seed, so a resumed run recomputes the same.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from pah_jax import images as images_lib


def choose_init_images(train_labels: list[np.ndarray], num_classes: int, seed: int) -> np.ndarray:
  """Index of one random training image per class and task: int array (K, C)."""
  rng = np.random.default_rng([seed, 0x5E3A])
  chosen = np.zeros((len(train_labels), num_classes), np.int64)
  for k, labels in enumerate(train_labels):
    for c in range(num_classes):
      chosen[k, c] = rng.choice(np.flatnonzero(labels == c))
  return chosen


def semantic_prototypes(images: np.ndarray, *, size: int, channels: int, method: str,
                        mean, std) -> np.ndarray:
  """Prototypes from chosen uint8 images (C, H, W, ch_in) -> float32 (C, size, size, channels).

  resize (paper): the whole normalised image resized to size x size (bilinear, antialiased).
  crop (official code): the central size x size crop of the normalised image (rows and columns
  [(H - size) // 2, ... + size): [11:21] for 32x32 and size 10, as the official code), then
  the channel mean, so official prototypes are grey.
  """
  x = np.asarray(images_lib.normalize(images, mean, std))
  c, h, w, _ = x.shape
  if method == "resize":
    x = np.asarray(jax.image.resize(jnp.asarray(x), (c, size, size, x.shape[-1]), "bilinear", antialias=True))
  elif method == "crop":
    if size > h or size > w:
      raise ValueError(f"crop init needs prototype_size <= image size {h}x{w}, got {size}")
    top, left = (h - size) // 2, (w - size) // 2
    x = x[:, top:top + size, left:left + size, :].mean(axis=-1, keepdims=True)
  else:
    raise ValueError(f"unknown semantic init {method!r}")
  return images_lib.adapt_channels(x, channels).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class InitSettings:
  """How the prototypes start (config section pah): `init` semantic | random; for semantic,
  `semantic_init` resize | crop; for random, N(random_mean, random_std)."""

  size: int  # s
  channels: int  # ch of the prototypes (the data's, or 1 for grey)
  init: str = "semantic"
  semantic_init: str = "resize"
  random_mean: float = 0.5
  random_std: float = 0.1

  @classmethod
  def from_config(cls, pah, data_channels: int) -> "InitSettings":
    return cls(size=pah.prototype_size, channels=pah.prototype_channels or data_channels, init=pah.prototype_init,
               semantic_init=pah.semantic_init, random_mean=pah.random_init_mean, random_std=pah.random_init_std)


def initial_prototypes(train_images: list[np.ndarray], train_labels: list[np.ndarray], how: InitSettings, *,
                       num_classes: int, mean, std, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
  """All K tasks' initial prototypes (K, C, s, s, ch) and, for semantic init, the chosen
  training-image indices (K, C) (the official preset removes those images from training)."""
  k = len(train_images)
  if how.init == "random":
    rng = np.random.default_rng([seed, 0xB0B])
    protos = rng.normal(how.random_mean, how.random_std, (k, num_classes, how.size, how.size, how.channels))
    return protos.astype(np.float32), None
  if how.init != "semantic":
    raise ValueError(f"unknown prototype init {how.init!r}")
  chosen = choose_init_images(train_labels, num_classes, seed)
  protos = np.stack([
      semantic_prototypes(train_images[t][chosen[t]], size=how.size, channels=how.channels,
                          method=how.semantic_init, mean=mean, std=std) for t in range(k)])
  return protos, chosen
