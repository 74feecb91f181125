"""User data as .npz (pah_jax/data/npz.py) through `load_tasks`, and its validation."""

import numpy as np
import pytest

from configs.default import get_config
from pah_jax.data import load_tasks
from pah_jax.errors import UserError


def _config(path, **overrides):
  c = get_config().data
  c.name = "npz"
  c.path = str(path)
  c.num_tasks = 2
  for k, v in overrides.items():
    c[k] = v
  return c


def _arrays(num_classes=4, n_train=40, n_test=12, shape=(5, 6), seed=0):
  rng = np.random.default_rng(seed)
  y_train = np.arange(n_train) % num_classes
  y_test = np.arange(n_test) % num_classes
  return {
      "x_train": rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
      "y_train": y_train.astype(np.int64),
      "x_test": rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
      "y_test": y_test.astype(np.int32),
  }


def _save(tmp_path, arrays, name="data.npz"):
  path = tmp_path / name
  np.savez(path, **arrays)
  return path


def test_grayscale_without_channel_axis(tmp_path):
  arrays = _arrays()
  seq = load_tasks(_config(_save(tmp_path, arrays)), seed=0)
  assert seq.image_shape == (5, 6, 1)
  assert seq.num_classes_per_task == 2
  assert [t.classes for t in seq.tasks] == [(0, 1), (2, 3)]
  t = seq.tasks[1]
  assert t.x_train.shape == (20, 5, 6, 1) and t.x_train.dtype == np.uint8
  mask = np.isin(arrays["y_train"], (2, 3))
  np.testing.assert_array_equal(t.x_train[..., 0], arrays["x_train"][mask])
  np.testing.assert_array_equal(t.y_train, arrays["y_train"][mask] - 2)
  # 'dataset' normalisation of user data: statistics of x_train, in pixel/255.
  x = arrays["x_train"] / 255.0
  np.testing.assert_allclose(seq.mean, [x.mean()], rtol=1e-9)
  np.testing.assert_allclose(seq.std, [x.std()], rtol=1e-9)


def test_pad_to_pads_before_the_statistics_and_class_order_seed_fixes_the_order(tmp_path):
  arrays = _arrays(num_classes=4, shape=(5, 6))
  seq = load_tasks(_config(_save(tmp_path, arrays), pad_to=9, class_order="random", class_order_seed=3), seed=0)
  assert seq.image_shape == (9, 9, 1)
  assert seq.class_order == tuple(np.random.default_rng(3).permutation(4))
  t = seq.tasks[0]
  mask = np.isin(arrays["y_train"], t.classes)
  np.testing.assert_array_equal(t.x_train[:, 2:7, 1:7, 0], arrays["x_train"][mask])
  assert t.x_train.sum(dtype=np.int64) == arrays["x_train"][mask].sum(dtype=np.int64)
  assert t.x_test.shape[1:] == (9, 9, 1)
  # 'dataset' statistics are those of the padded images, which the model sees.
  padded = np.pad(arrays["x_train"], ((0, 0), (2, 2), (1, 2))) / 255.0
  np.testing.assert_allclose(seq.mean, [padded.mean()], rtol=1e-9)
  with pytest.raises(UserError, match="data.pad_to=4 is smaller than the 5x6 images"):
    load_tasks(_config(_save(tmp_path, arrays), pad_to=4), seed=0)


def test_rgb_random_order_and_half_normalisation(tmp_path):
  arrays = _arrays(num_classes=6, shape=(4, 4, 3))
  config = _config(_save(tmp_path, arrays), num_tasks=3, class_order="random",
                   normalization="half", max_train_per_task=4)
  seq = load_tasks(config, seed=2)
  assert seq.image_shape == (4, 4, 3)
  assert seq.mean == (0.5, 0.5, 0.5) and seq.std == (0.5, 0.5, 0.5)
  assert seq.class_order == tuple(np.random.default_rng(2).permutation(6))
  for t in seq.tasks:
    np.testing.assert_array_equal(np.bincount(t.y_train), [2, 2])


def test_rgb_dataset_statistics_per_channel(tmp_path):
  arrays = _arrays(shape=(3, 3, 3))
  arrays["x_train"][..., 2] = 255  # a constant channel: std would be 0
  seq = load_tasks(_config(_save(tmp_path, arrays)), seed=0)
  x = arrays["x_train"].reshape(-1, 3) / 255.0
  np.testing.assert_allclose(seq.mean, x.mean(0), rtol=1e-9)
  np.testing.assert_allclose(seq.std[:2], x.std(0)[:2], rtol=1e-9)
  assert seq.std[2] == 1.0  # guarded against division by zero


def _broken(change):
  arrays = _arrays()
  change(arrays)
  return arrays


@pytest.mark.parametrize("arrays,message", [
    (_broken(lambda a: a.pop("y_test")), "lacks array\\(s\\) y_test"),
    (_broken(lambda a: a.update(x_train=a["x_train"].astype(np.float32))),
     "x_train has dtype float32; images must be uint8"),
    (_broken(lambda a: a.update(y_train=a["y_train"].astype(np.float64))),
     "y_train has dtype float64; labels must be integers"),
    (_broken(lambda a: a.update(x_test=a["x_test"][:, :, :, None, None])),
     "x_test has shape .*expected \\(N, H, W\\) or \\(N, H, W, C\\)"),
    (_broken(lambda a: a.update(x_train=np.repeat(a["x_train"][..., None], 2, -1))),
     "C = 1 or 3"),
    (_broken(lambda a: a.update(y_train=a["y_train"][:, None])),
     "y_train has shape \\(40, 1\\); expected \\(N,\\)"),
    (_broken(lambda a: a.update(y_train=a["y_train"][:-1])),
     "x_train holds 40 images but y_train 39 labels"),
    (_broken(lambda a: a.update(x_test=a["x_test"][:, :4])),
     "train images are \\(5, 6, 1\\) but test images \\(4, 6, 1\\)"),
    (_broken(lambda a: a["y_train"].__setitem__(0, -1)), "y_train holds negative labels"),
    (_broken(lambda a: a["y_test"].__setitem__(0, 4)),
     "y_test holds label 4, which y_train never uses"),
    (_broken(lambda a: a["y_train"].__setitem__(a["y_train"] == 2, 0)),
     "class\\(es\\) 2 have no training example"),
    (_broken(lambda a: a.update(x_test=a["x_test"][:0], y_test=a["y_test"][:0])),
     "the test split is empty"),
])
def test_refuses_malformed_npz(tmp_path, arrays, message):
  with pytest.raises(UserError, match=message) as info:
    load_tasks(_config(_save(tmp_path, arrays)), seed=0)
  assert "\n" not in str(info.value)


def test_refuses_missing_or_unreadable_file(tmp_path):
  with pytest.raises(UserError, match="is not a file"):
    load_tasks(_config(tmp_path / "absent.npz"), seed=0)
  with pytest.raises(UserError, match="needs data.path set to a .npz file"):
    load_tasks(_config(""), seed=0)
  (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
  with pytest.raises(UserError, match="is not a readable .npz file"):
    load_tasks(_config(tmp_path / "junk.npz"), seed=0)
  pickled = _arrays()
  pickled["y_train"] = pickled["y_train"].astype(object)
  with pytest.raises(UserError, match="is not a readable .npz file"):
    load_tasks(_config(_save(tmp_path, pickled)), seed=0)


def test_refuses_task_count_that_does_not_fit_the_classes(tmp_path):
  path = _save(tmp_path, _arrays(num_classes=4))
  with pytest.raises(UserError, match="num_tasks=3 does not divide the 4 classes"):
    load_tasks(_config(path, num_tasks=3), seed=0)
  with pytest.raises(UserError, match="num_tasks=8 is more than the 4 classes"):
    load_tasks(_config(path, num_tasks=8), seed=0)
  with pytest.raises(UserError, match="max_test_per_task=1 is fewer than the 2 classes"):
    load_tasks(_config(path, max_test_per_task=1), seed=0)
