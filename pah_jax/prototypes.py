"""Initial values of the learnable prototypes P (paper §3.2).

P holds one (C, s, s, ch) tensor per task, preallocated for all K tasks as (K, C, s, s, ch)
so that shapes never change with the task index. The task embedding is e_k = flatten(P_k)
(see `pah.task_embeddings`). Initial values are computed on the host from the training
data, once per run, deterministically from the seed, so a resumed run recomputes the same.
"""

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


def initial_prototypes(train_images: list[np.ndarray], train_labels: list[np.ndarray], *,
                       num_classes: int, size: int, channels: int, init: str, semantic_init: str,
                       mean, std, random_mean: float, random_std: float,
                       seed: int) -> tuple[np.ndarray, np.ndarray | None]:
  """All K tasks' initial prototypes (K, C, s, s, ch) and, for semantic init, the chosen
  training-image indices (K, C) (the official preset removes those images from training)."""
  k = len(train_images)
  if init == "random":
    rng = np.random.default_rng([seed, 0xB0B])
    protos = rng.normal(random_mean, random_std, (k, num_classes, size, size, channels))
    return protos.astype(np.float32), None
  if init != "semantic":
    raise ValueError(f"unknown prototype init {init!r}")
  chosen = choose_init_images(train_labels, num_classes, seed)
  protos = np.stack([
      semantic_prototypes(train_images[t][chosen[t]], size=size, channels=channels,
                          method=semantic_init, mean=mean, std=std) for t in range(k)])
  return protos, chosen
