"""Split-CIFAR100 through `load_tasks`, with TFDS's `cifar100` mocked (no download)."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from configs.default import get_config
from pah_jax.data import cifar100
from pah_jax.data import load_tasks
from pah_jax.errors import UserError

N_TRAIN, N_TEST = 1000, 300  # 10 and 3 images per class


def _split_arrays(split):
  """Mock split: image i is filled with i (mod 256) in channel 0 and i // 256 in channel 1,
  label i % 100, so every class is present and each example can be traced."""
  n = N_TRAIN if split == "train" else N_TEST
  ids = np.arange(n)
  images = np.zeros((n, 32, 32, 3), np.uint8)
  images[..., 0] = (ids % 256)[:, None, None]
  images[..., 1] = (ids // 256)[:, None, None]
  images[..., 2] = 1 if split == "test" else 0
  return images, (ids * 37 % 100).astype(np.int64)  # a label order unlike class order


def _as_dataset(self, split, **kwargs):
  del self, kwargs
  images, labels = _split_arrays(str(split))
  return tf.data.Dataset.from_tensor_slices({"image": images, "label": labels})


@pytest.fixture
def mocked_cifar100(tmp_path):
  """config.data for CIFAR-100 whose (mocked) archive sits in the manual directory."""
  manual = tmp_path / "downloads" / "manual"
  manual.mkdir(parents=True)
  # With download=False, preparing needs the archive in place; mocked TFDS never reads it.
  (manual / cifar100.ARCHIVE).write_bytes(b"")
  c = get_config().data
  c.name, c.path, c.download = "cifar100", str(tmp_path), False
  with tfds.testing.mock_data(as_dataset_fn=_as_dataset):
    yield c


def test_split_cifar100_10x10(mocked_cifar100):
  seq = load_tasks(mocked_cifar100, seed=0)
  assert len(seq.tasks) == 10 and seq.num_classes_per_task == 10
  assert seq.image_shape == (32, 32, 3)
  assert seq.mean == (0.5071, 0.4865, 0.4409) and seq.std == (0.2673, 0.2564, 0.2762)
  assert seq.class_order == tuple(range(100))
  for k, t in enumerate(seq.tasks):
    assert t.classes == tuple(range(10 * k, 10 * k + 10))
    assert (len(t.y_train), len(t.y_test)) == (100, 30)
    for split in ("train", "test"):
      x, y = getattr(t, f"x_{split}"), getattr(t, f"y_{split}")
      images, labels = _split_arrays(split)
      ids = x[:, 0, 0, 0].astype(int) + 256 * x[:, 0, 0, 1].astype(int)
      np.testing.assert_array_equal(x, images[ids])
      np.testing.assert_array_equal(np.asarray(t.classes)[y], labels[ids])
      np.testing.assert_array_equal(ids, np.flatnonzero(np.isin(labels, t.classes)))
      np.testing.assert_array_equal(np.bincount(y, minlength=10), [len(y) // 10] * 10)


def test_split_cifar100_random_order_and_subsample(mocked_cifar100):
  mocked_cifar100.class_order = "random"
  mocked_cifar100.max_train_per_task = 50
  mocked_cifar100.max_test_per_task = 20
  mocked_cifar100.normalization = "half"
  seq = load_tasks(mocked_cifar100, seed=3)
  assert seq.class_order == tuple(np.random.default_rng(3).permutation(100))
  assert seq.mean == (0.5,) * 3 and seq.std == (0.5,) * 3
  for k, t in enumerate(seq.tasks):
    assert t.classes == seq.class_order[10 * k:10 * k + 10]
    np.testing.assert_array_equal(np.bincount(t.y_train, minlength=10), [5] * 10)
    np.testing.assert_array_equal(np.bincount(t.y_test, minlength=10), [2] * 10)
  again = load_tasks(mocked_cifar100, seed=3)
  for a, b in zip(seq.tasks, again.tasks):
    np.testing.assert_array_equal(a.x_train, b.x_train)


def test_unprepared_cifar100_fails_fast_without_download(tmp_path):
  c = get_config().data
  c.name, c.path, c.download = "cifar100", str(tmp_path), False
  with pytest.raises(UserError) as info:
    load_tasks(c, seed=0)
  message = str(info.value)
  assert "CIFAR-100 is not prepared in" in message
  assert f"cifar-100-binary.tar.gz is not in {tmp_path}/downloads/manual" in message
  assert "--config.data.download=True" in message
  assert "\n" not in message
