"""Shared fixtures: a tiny, learnable image classification data set as a user `.npz`."""

import contextlib
import gzip
import importlib.metadata
import os
import platform

import numpy as np
import pytest

from configs import default
from experiments.benchmark import cpu_model


def pytest_report_header(config):  # pylint: disable=unused-argument
  """Which stack and CPU a run used: float results and tolerances depend on both."""
  versions = []
  for name in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "chex", "numpy", "tensorflow-cpu",
               "tensorflow-datasets"):
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
      versions.append(f"{name} {importlib.metadata.version(name)}")
  return [f"python {platform.python_version()}; {', '.join(versions)}", f"cpu: {cpu_model()} ({os.cpu_count()} cores)"]


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


def idx_bytes(array):
  header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">i4").tobytes()
  return header + np.ascontiguousarray(array, np.uint8).tobytes()


def write_fashion_mnist_idx(directory, n_train=30, n_test=20, seed=0):
  """Four small gzipped IDX files in the original names; returns the arrays written."""
  rng = np.random.default_rng(seed)
  data = {}
  for prefix, n in (("train", n_train), ("t10k", n_test)):
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) * 7 % 10).astype(np.uint8)  # every class, shuffled
    for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
      with gzip.open(os.path.join(directory, f"{prefix}-{kind}-ubyte.gz"), "wb") as f:
        f.write(idx_bytes(array))
    data[prefix] = (images, labels)
  return data


@pytest.fixture
def npz_path(tmp_path):
  return make_npz(tmp_path / "tiny.npz")
