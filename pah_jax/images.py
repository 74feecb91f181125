"""On-device image handling: uint8 -> normalised float, channel adaptation, augmentation.

Task data stays on the device as uint8 (4x smaller than float32); these run inside the
jitted steps.
"""

import jax
import jax.numpy as jnp
import numpy as np

BACKBONE_CHANNELS = 3  # the backbone always takes RGB so pretrained weights fit


def normalize(images: jax.Array, mean, std) -> jax.Array:
  """uint8 (..., H, W, C) -> float32 (x / 255 - mean) / std, per channel."""
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  return (images.astype(jnp.float32) / 255.0 - mean) / std


def to_backbone_channels(images: jax.Array) -> jax.Array:
  """Repeats a single (grey) channel to the backbone's 3, as the official code does."""
  if images.shape[-1] == BACKBONE_CHANNELS:
    return images
  if images.shape[-1] != 1:
    raise ValueError(f"images need 1 or {BACKBONE_CHANNELS} channels, got {images.shape[-1]}")
  return jnp.repeat(images, BACKBONE_CHANNELS, axis=-1)


def adapt_channels(images: np.ndarray, channels: int) -> np.ndarray:
  """Host-side: grey -> RGB by repetition, RGB -> grey by channel mean (official crop init)."""
  have = images.shape[-1]
  if have == channels:
    return images
  if channels == 1:
    return images.mean(axis=-1, keepdims=True)
  if have == 1:
    return np.repeat(images, channels, axis=-1)
  raise ValueError(f"cannot turn {have} channels into {channels}")


def random_crop_flip(key: jax.Array, images: jax.Array, padding: int = 4) -> jax.Array:
  """Per-image random crop after zero padding, and random horizontal flip (B, H, W, C)."""
  b, h, w, _ = images.shape
  k_crop, k_flip = jax.random.split(key)
  padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  offsets = jax.random.randint(k_crop, (b, 2), 0, 2 * padding + 1)

  def crop(img, off):
    return jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, img.shape[-1]))

  cropped = jax.vmap(crop)(padded, offsets)
  flip = jax.random.bernoulli(k_flip, 0.5, (b, 1, 1, 1))
  return jnp.where(flip, cropped[:, :, ::-1, :], cropped)
