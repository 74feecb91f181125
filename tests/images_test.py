"""On-device image handling: normalisation, channel repetition, crop-and-flip augmentation."""

import jax
import numpy as np

from pah_jax import images


def test_normalize_and_channels():
  x = np.array([[[[0], [255]]]], np.uint8)  # (1, 1, 2, 1)
  out = np.asarray(images.normalize(x, (0.5,), (0.25,)))
  np.testing.assert_allclose(out[..., 0], [[[-2.0, 2.0]]], rtol=1e-6)
  assert images.to_backbone_channels(out).shape == (1, 1, 2, 3)
  np.testing.assert_array_equal(images.adapt_channels(np.ones((2, 4, 4, 3)) * [1, 2, 3], 1)[..., 0], 2.0)


def test_random_crop_flip_is_a_shifted_or_mirrored_window_of_the_padded_image():
  rng = np.random.default_rng(0)
  x = rng.integers(1, 255, (16, 8, 8, 3)).astype(np.uint8)
  out = np.asarray(images.random_crop_flip(jax.random.key(0), x, padding=2))
  assert out.shape == x.shape and out.dtype == x.dtype
  padded = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
  flips = 0
  for i in range(len(x)):
    windows = [padded[i, r:r + 8, c:c + 8] for r in range(5) for c in range(5)]
    plain = any(np.array_equal(out[i], w) for w in windows)
    mirrored = any(np.array_equal(out[i], w[:, ::-1]) for w in windows)
    assert plain or mirrored
    flips += mirrored and not plain
  assert 0 < flips < len(x)  # both outcomes occur
  again = np.asarray(images.random_crop_flip(jax.random.key(0), x, padding=2))
  np.testing.assert_array_equal(out, again)  # same key, same augmentation (exact resume)
