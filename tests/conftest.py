"""Shared fixtures: a tiny, learnable image classification data set as a user `.npz`."""

import numpy as np
import pytest

from configs import default


def make_npz(path, num_classes=4, train_per_class=48, test_per_class=12, size=12, channels=1, seed=0):
  """Class c is a bright 3x3 square at a class-specific place on a noisy background."""
  rng = np.random.default_rng(seed)

  def split(per_class):
    y = np.repeat(np.arange(num_classes), per_class)
    rng.shuffle(y)
    x = rng.integers(0, 80, (len(y), size, size, channels)).astype(np.uint8)
    for i, c in enumerate(y):
      r, col = divmod(int(c) * 3, size - 3)
      x[i, r:r + 3, col:col + 3] = 255
    return x, y.astype(np.int64)

  x_train, y_train = split(train_per_class)
  x_test, y_test = split(test_per_class)
  np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
  return str(path)


def tiny_config(npz_path, num_tasks=2):
  """PAH at toy scale: a 2-task npz run that takes seconds on a CPU."""
  c = default.get_config()
  c.data.name = "npz"
  c.data.path = npz_path
  c.data.num_tasks = num_tasks
  c.model.width = 0.125
  c.pah.prototype_size = 4
  c.train.epochs = 2
  c.train.batch_size = 16
  c.train.eval_batch_size = 32
  c.train.log_every_steps = 4
  return c


@pytest.fixture
def npz_path(tmp_path):
  return make_npz(tmp_path / "tiny.npz")
