"""Initial prototypes: semantic (resize / crop) and random init."""

import numpy as np
import pytest

from pah_jax import images as images_lib
from pah_jax import prototypes

MEAN = (0.5, 0.4, 0.3)
STD = (0.25, 0.2, 0.3)


def _tasks(k=2, c=3, n=12, size=32, ch=3, seed=0):
  """K tasks of n uint8 images with shuffled task-local labels, every class present."""
  rng = np.random.default_rng(seed)
  xs = [rng.integers(0, 256, (n, size, size, ch), dtype=np.uint8) for _ in range(k)]
  ys = [rng.permutation(np.arange(n) % c) for _ in range(k)]
  return xs, ys


def _init(xs, ys, **kw):
  how = dict(size=8, channels=3, init="semantic", semantic_init="resize", crop_position="center", random_mean=0.5,
             random_std=0.1)
  rest = dict(num_classes=3, mean=MEAN, std=STD, seed=0)
  how.update((k, v) for k, v in kw.items() if k in how)
  rest.update((k, v) for k, v in kw.items() if k in rest)
  return prototypes.initial_prototypes(xs, ys, prototypes.InitSettings(**how), **rest)


def test_choose_init_images_picks_the_right_class():
  """chosen[t, c] is the index of an image of class c in task t, deterministic in the seed."""
  _, ys = _tasks(k=3, c=4, n=40)
  chosen = prototypes.choose_init_images(ys, 4, seed=7)
  assert chosen.shape == (3, 4)
  for t in range(3):
    for c in range(4):
      assert ys[t][chosen[t, c]] == c
  np.testing.assert_array_equal(chosen, prototypes.choose_init_images(ys, 4, seed=7))
  others = [prototypes.choose_init_images(ys, 4, seed=s) for s in range(8)]
  assert any(not np.array_equal(o, chosen) for o in others)  # 10 candidates per class: seeds matter


def test_resize_init_same_size_is_the_normalised_image():
  """Semantic resize init with s = image size: P[t, c] is exactly the normalised chosen image."""
  xs, ys = _tasks(size=8)
  protos, chosen = _init(xs, ys, size=8)
  assert protos.shape == (2, 3, 8, 8, 3) and protos.dtype == np.float32
  assert chosen.shape == (2, 3)
  for t in range(2):
    for c in range(3):
      assert ys[t][chosen[t, c]] == c
      image = xs[t][chosen[t, c]].astype(np.float32) / 255.0
      expected = (image - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
      np.testing.assert_allclose(protos[t, c], expected, rtol=1e-6, atol=1e-6)


def test_resize_init_downsamples():
  """32x32 -> 10x10: a constant image stays that constant; a non-constant one has the mean of
  its normalised image (antialiased bilinear averages, up to the border)."""
  xs, ys = _tasks(size=32)
  xs[0][:] = 200
  protos, chosen = _init(xs, ys, size=10)
  assert protos.shape == (2, 3, 10, 10, 3)
  const = (200 / 255.0 - np.array(MEAN)) / np.array(STD)
  np.testing.assert_allclose(protos[0], np.broadcast_to(const, (3, 10, 10, 3)), rtol=1e-5)
  image = np.asarray(images_lib.normalize(xs[1][chosen[1, 0]], MEAN, STD))
  np.testing.assert_allclose(protos[1, 0].mean(axis=(0, 1)), image.mean(axis=(0, 1)), atol=0.05)


def test_crop_init_is_grey_centre_crop():
  """Official crop init at s=10 on 32x32: the normalised image's [11:21, 11:21] crop, mean over
  RGB, one channel."""
  xs, ys = _tasks(size=32)
  protos, chosen = _init(xs, ys, size=10, channels=1, semantic_init="crop")
  assert protos.shape == (2, 3, 10, 10, 1)
  for t in range(2):
    for c in range(3):
      image = (xs[t][chosen[t, c]].astype(np.float64) / 255.0 - np.array(MEAN)) / np.array(STD)
      expected = image[11:21, 11:21, :].mean(axis=-1, keepdims=True)
      np.testing.assert_allclose(protos[t, c], expected, rtol=1e-5, atol=1e-6)


def test_official_crop_position_is_rows_11_onwards_at_every_size():
  """crop_position=official cuts [11:11+s] as the authors' code: on 32x32 with s=10 the centre
  crop itself, on 28x28 off-centre (the centre is [9:19]); a crop that would leave the image is
  refused."""
  xs32, ys32 = _tasks(size=32)
  centre = _init(xs32, ys32, size=10, channels=1, semantic_init="crop")[0]
  official = _init(xs32, ys32, size=10, channels=1, semantic_init="crop", crop_position="official")[0]
  np.testing.assert_array_equal(official, centre)
  xs, ys = _tasks(size=28)
  protos, chosen = _init(xs, ys, size=10, channels=1, semantic_init="crop", crop_position="official")
  centred = _init(xs, ys, size=10, channels=1, semantic_init="crop")[0]
  for t in range(2):
    for c in range(3):
      image = (xs[t][chosen[t, c]].astype(np.float64) / 255.0 - np.array(MEAN)) / np.array(STD)
      np.testing.assert_allclose(protos[t, c], image[11:21, 11:21].mean(-1, keepdims=True), rtol=1e-5, atol=1e-6)
      np.testing.assert_allclose(centred[t, c], image[9:19, 9:19].mean(-1, keepdims=True), rtol=1e-5, atol=1e-6)
  assert prototypes.crop_origin("center", 28, 10) == 9 and prototypes.crop_origin("official", 28, 10) == 11
  with pytest.raises(ValueError, match="leaves the 28x28 image"):
    _init(xs, ys, size=18, channels=1, semantic_init="crop", crop_position="official")
  _init(xs, ys, size=18, channels=1, semantic_init="crop")  # centred, 18 fits in 28


def test_crop_init_larger_than_image_raises():
  xs, ys = _tasks(size=8)
  with pytest.raises(ValueError, match="crop"):
    _init(xs, ys, size=10, channels=1, semantic_init="crop")


def test_grey_images_repeated_to_three_channels():
  """Grey (Fashion-MNIST-like) images with 3 prototype channels: the grey value repeated."""
  xs, ys = _tasks(size=8, ch=1)
  protos, chosen = _init(xs, ys, size=8, channels=3, mean=(0.3,), std=(0.4,))
  assert protos.shape == (2, 3, 8, 8, 3)
  grey = (xs[1][chosen[1, 2]].astype(np.float32) / 255.0 - 0.3) / 0.4
  np.testing.assert_allclose(protos[1, 2], np.repeat(grey, 3, axis=-1), rtol=1e-5, atol=1e-6)


def test_random_init_statistics():
  """Random init (official nn.Embedding-like): N(mean, std), shape (K, C, s, s, ch), no chosen images."""
  xs, ys = _tasks(k=3, c=3)
  protos, chosen = _init(xs, ys, init="random", size=20, random_mean=0.5, random_std=0.1)
  assert chosen is None
  assert protos.shape == (3, 3, 20, 20, 3) and protos.dtype == np.float32
  np.testing.assert_allclose(protos.mean(), 0.5, atol=0.005)
  np.testing.assert_allclose(protos.std(), 0.1, rtol=0.03)
  again, _ = _init(xs, ys, init="random", size=20)
  np.testing.assert_array_equal(protos, again)
  other, _ = _init(xs, ys, init="random", size=20, random_mean=-1.0, random_std=2.0, seed=1)
  np.testing.assert_allclose(other.mean(), -1.0, atol=0.1)
  np.testing.assert_allclose(other.std(), 2.0, rtol=0.03)


def test_unknown_init_raises():
  xs, ys = _tasks()
  with pytest.raises(ValueError):
    _init(xs, ys, init="zeros")
  with pytest.raises(ValueError):
    _init(xs, ys, semantic_init="blur")
