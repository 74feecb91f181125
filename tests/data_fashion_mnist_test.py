"""Fashion-MNIST: IDX parsing, the offline TFDS builder, and the real Debian files."""

import gzip
import os

import numpy as np
import pytest

from configs.default import get_config
from pah_jax.data import fashion_mnist
from pah_jax.data import idx
from pah_jax.data import load_tasks
from pah_jax.data import tfds_util
from pah_jax.errors import UserError
from tests.conftest import idx_bytes
from tests.conftest import write_fashion_mnist_idx


def _config(path="", **overrides):
  c = get_config().data
  c.name = "fashion_mnist"
  c.path = str(path)
  c.num_tasks = 5
  for k, v in overrides.items():
    c[k] = v
  return c


@pytest.fixture
def tfds_cache(tmp_path, monkeypatch):
  """A fresh, private prepared-data cache for one test."""
  monkeypatch.setenv(tfds_util.CACHE_ENV, str(tmp_path / "tfds"))
  return tmp_path / "tfds"


# ----------------------------------------------------------------------------- IDX parser

def test_parse_idx_roundtrip():
  array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
  np.testing.assert_array_equal(idx.parse_idx(idx_bytes(array), ndim=3), array)


@pytest.mark.parametrize("raw,message", [
    (b"\x00\x00\x08", "truncated: 3 bytes"),
    (idx_bytes(np.zeros((2, 3), np.uint8)), "not a uint8 IDX file with 1 dimensions "
     "\\(magic number 0x00000802, expected 0x00000801\\)"),
    (b"\x00\x00\x0d\x01" + idx_bytes(np.zeros(3, np.uint8))[4:],
     "magic number 0x00000d01"),
    (idx_bytes(np.zeros(5, np.uint8))[:-1], "truncated or padded: 4 data bytes"),
])
def test_parse_idx_refuses_corrupt_bytes(raw, message):
  with pytest.raises(UserError, match=message):
    idx.parse_idx(raw, ndim=1)


def test_read_idx_refuses_truncated_gzip_and_missing_file(tmp_path):
  good = gzip.compress(idx_bytes(np.zeros(1000, np.uint8)))
  (tmp_path / "cut.gz").write_bytes(good[:len(good) // 2])
  with pytest.raises(UserError, match="cut.gz is corrupt or truncated"):
    idx.read_idx(str(tmp_path / "cut.gz"), ndim=1)
  (tmp_path / "plain.gz").write_bytes(idx_bytes(np.zeros(3, np.uint8)))  # not gzipped
  with pytest.raises(UserError, match="plain.gz is corrupt or truncated"):
    idx.read_idx(str(tmp_path / "plain.gz"), ndim=1)
  with pytest.raises(UserError, match="does not exist"):
    idx.read_idx(str(tmp_path / "absent.gz"), ndim=1)


# ------------------------------------------------------------- builder on small IDX files

def test_builder_on_small_idx_files(tmp_path, tfds_cache):
  data = write_fashion_mnist_idx(tmp_path)
  seq = load_tasks(_config(tmp_path), seed=0)
  assert seq.image_shape == (28, 28, 1)
  assert seq.mean == (0.2860,) and seq.std == (0.3530,)
  assert (tfds_cache / "fashion_mnist_idx" / "1.0.0" / "dataset_info.json").is_file()
  for t, classes in zip(seq.tasks, [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]):
    assert t.classes == classes
    for x, y, (images, labels) in ((t.x_train, t.y_train, data["train"]),
                                   (t.x_test, t.y_test, data["t10k"])):
      mask = np.isin(labels, classes)
      # The IDX order survives preparing (TFDS would shuffle without disable_shuffling).
      np.testing.assert_array_equal(x[..., 0], images[mask])
      np.testing.assert_array_equal(y, labels[mask] - classes[0])


def test_builder_reads_uncompressed_idx_files(tmp_path, tfds_cache):
  data = write_fashion_mnist_idx(tmp_path, n_train=10, n_test=10)
  for name in os.listdir(tmp_path):
    if name.endswith(".gz"):
      raw = gzip.decompress((tmp_path / name).read_bytes())
      (tmp_path / name[:-3]).write_bytes(raw)
      os.remove(tmp_path / name)
  seq = load_tasks(_config(tmp_path, num_tasks=1), seed=0)
  np.testing.assert_array_equal(seq.tasks[0].x_train[..., 0], data["train"][0])


def test_prepared_copy_is_reused_without_the_idx_files(tmp_path, tfds_cache):
  idx_dir = tmp_path / "idx"
  idx_dir.mkdir()
  data = write_fashion_mnist_idx(idx_dir)
  first = load_tasks(_config(idx_dir), seed=0)
  for name in os.listdir(idx_dir):
    os.remove(idx_dir / name)
  second = load_tasks(_config(idx_dir), seed=0)
  for a, b in zip(first.tasks, second.tasks):
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
  assert sum(len(t.y_train) for t in second.tasks) == len(data["train"][1])


def test_cache_dir_default_and_override(tmp_path, monkeypatch):
  monkeypatch.delenv(tfds_util.CACHE_ENV, raising=False)
  monkeypatch.setenv("HOME", str(tmp_path))
  assert tfds_util.cache_dir() == str(tmp_path / ".cache" / "pah_jax" / "tfds")
  monkeypatch.setenv(tfds_util.CACHE_ENV, str(tmp_path / "elsewhere"))
  assert tfds_util.cache_dir() == str(tmp_path / "elsewhere")


def test_refuses_missing_files(tmp_path, tfds_cache):
  write_fashion_mnist_idx(tmp_path)
  os.remove(tmp_path / "t10k-labels-idx1-ubyte.gz")
  os.remove(tmp_path / "train-images-idx3-ubyte.gz")
  with pytest.raises(UserError, match="IDX file\\(s\\) train-images-idx3-ubyte.gz, "
                     "t10k-labels-idx1-ubyte.gz not found in .*apt install "
                     "dataset-fashion-mnist.*data.download=True"):
    load_tasks(_config(tmp_path), seed=0)
  with pytest.raises(UserError, match="not found in"):
    load_tasks(_config(tmp_path / "absent"), seed=0)


@pytest.mark.parametrize("damage,message", [
    (lambda d: (d / "t10k-images-idx3-ubyte.gz").write_bytes(
        (d / "t10k-images-idx3-ubyte.gz").read_bytes()[:100]), "is corrupt or truncated"),
    (lambda d: (d / "train-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(np.zeros((2, 2), np.uint8)))), "magic number"),
    (lambda d: (d / "train-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(np.zeros(29, np.uint8)))), "30 images but .* 29 labels"),
    (lambda d: (d / "train-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(np.full(30, 10, np.uint8)))), "holds label 10"),
])
def test_refuses_corrupt_files(tmp_path, tfds_cache, damage, message):
  write_fashion_mnist_idx(tmp_path)
  damage(tmp_path)
  with pytest.raises(UserError, match=message):
    load_tasks(_config(tmp_path), seed=0)
  # Nothing half-prepared is left behind to be reused by the next run.
  assert not (tfds_cache / "fashion_mnist_idx" / "1.0.0").exists()


# ------------------------------------------------------------------- the real data set

def _read_raw(prefix):
  directory = fashion_mnist.DEBIAN_DIR
  with gzip.open(os.path.join(directory, f"{prefix}-images-idx3-ubyte.gz")) as f:
    images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
  with gzip.open(os.path.join(directory, f"{prefix}-labels-idx1-ubyte.gz")) as f:
    labels = np.frombuffer(f.read(), np.uint8, offset=8)
  return images, labels


def _prepared_files(cache):
  """Every file under the TFDS cache with its modification time and size."""
  found = {}
  for root, _, names in os.walk(cache):
    for name in names:
      st = os.stat(os.path.join(root, name))
      found[os.path.relpath(os.path.join(root, name), cache)] = (st.st_mtime_ns, st.st_size)
  return found


@pytest.fixture(scope="module")
def real_fashion_mnist(tmp_path_factory):
  """Split-FashionMNIST 5x2 loaded twice (prepare, then reuse) from the Debian files; the cache's
  files after each load."""
  assert os.path.isdir(fashion_mnist.DEBIAN_DIR), (
      f"{fashion_mnist.DEBIAN_DIR} is missing: apt install dataset-fashion-mnist")
  cache = tmp_path_factory.mktemp("tfds")
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv(tfds_util.CACHE_ENV, str(cache))
    files = []
    for _ in range(2):
      seq = load_tasks(_config(), seed=0)
      files.append(_prepared_files(cache))
  return seq, files


@pytest.mark.slow
def test_real_fashion_mnist_5x2(real_fashion_mnist):
  seq, _ = real_fashion_mnist
  assert len(seq.tasks) == 5 and seq.num_classes_per_task == 2
  assert seq.image_shape == (28, 28, 1)
  assert [(len(t.y_train), len(t.y_test)) for t in seq.tasks] == [(12000, 2000)] * 5
  assert sum(len(t.y_train) for t in seq.tasks) == 60000
  assert sum(len(t.y_test) for t in seq.tasks) == 10000
  for split, prefix in (("train", "train"), ("test", "t10k")):
    images, labels = _read_raw(prefix)
    for t in seq.tasks:
      mask = np.isin(labels, t.classes)
      np.testing.assert_array_equal(getattr(t, f"x_{split}")[..., 0], images[mask])
      np.testing.assert_array_equal(getattr(t, f"y_{split}"), labels[mask] - t.classes[0])


@pytest.mark.slow
def test_real_fashion_mnist_second_load_reuses_prepared_copy(real_fashion_mnist):
  _, (after_first, after_second) = real_fashion_mnist
  # The second call only reads the prepared TFRecords: nothing is written or rewritten.
  assert any(name.endswith(tuple(f"-of-{n:05d}" for n in range(1, 100))) or "tfrecord" in name
             for name in after_first), sorted(after_first)
  assert after_second == after_first
