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


# The first row and column of the official code's crop, whatever the image size.
OFFICIAL_CROP_ORIGIN = 11


def crop_origin(position: str, extent: int, size: int) -> int:
  """First row (or column) of a size x size crop of an image `extent` pixels high (wide)."""
  if position == "center":
    return (extent - size) // 2
  if position == "official":
    return OFFICIAL_CROP_ORIGIN
  raise ValueError(f"unknown crop position {position!r}")


def semantic_prototypes(images: np.ndarray, *, size: int, channels: int, method: str,
                        mean, std, crop_position: str = "center") -> np.ndarray:
  """Prototypes from chosen uint8 images (C, H, W, ch_in) -> float32 (C, size, size, channels).

  resize (paper): the whole normalised image resized to size x size (bilinear, antialiased).
  crop (official code): a size x size crop of the normalised image, then the channel mean, so
  official prototypes are grey. `crop_position` center cuts rows and columns
  [(H - size) // 2, ... + size); official cuts [11, 11 + size) at every image size, as the
  authors' code does: the same [11:21] on 32x32 images with size 10, off-centre on 28x28 ones.
  """
  x = np.asarray(images_lib.normalize(images, mean, std))
  c, h, w, _ = x.shape
  if method == "resize":
    x = np.asarray(jax.image.resize(jnp.asarray(x), (c, size, size, x.shape[-1]), "bilinear", antialias=True))
  elif method == "crop":
    top, left = crop_origin(crop_position, h, size), crop_origin(crop_position, w, size)
    if top + size > h or left + size > w:
      raise ValueError(f"a {size}x{size} crop at rows {top}, columns {left} leaves the {h}x{w} image")
    x = x[:, top:top + size, left:left + size, :].mean(axis=-1, keepdims=True)
  else:
    raise ValueError(f"unknown semantic init {method!r}")
  return images_lib.adapt_channels(x, channels).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class InitSettings:
  """How the prototypes start (config section pah): `init` semantic | random; for semantic,
  `semantic_init` resize | crop (at `crop_position`); for random, N(random_mean, random_std)."""

  size: int  # s
  channels: int  # ch of the prototypes (the data's, or 1 for grey)
  init: str = "semantic"
  semantic_init: str = "resize"
  crop_position: str = "center"
  random_mean: float = 0.5
  random_std: float = 0.1

  @classmethod
  def from_config(cls, pah, data_channels: int) -> "InitSettings":
    return cls(size=pah.prototype_size, channels=pah.prototype_channels or data_channels, init=pah.prototype_init,
               semantic_init=pah.semantic_init, crop_position=pah.crop_position,
               random_mean=pah.random_init_mean, random_std=pah.random_init_std)


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
                          method=how.semantic_init, mean=mean, std=std,
                          crop_position=how.crop_position) for t in range(k)])
  return protos, chosen
