"""Task splitting (pah_jax/data/splits.py): disjoint tasks, exact remaps, seeded subsamples."""

import numpy as np
import pytest

from pah_jax.data import splits
from pah_jax.errors import UserError


def _data(num_classes=10, seed=0, n_train=400, n_test=100):
  """Labelled toy arrays whose image i spells its own index, so examples can be traced."""
  rng = np.random.default_rng(seed)
  # Every class present, sizes uneven so per-class logic is exercised.
  y_train = np.concatenate([np.arange(num_classes), rng.integers(0, num_classes, n_train)])
  y_test = np.concatenate([np.arange(num_classes), rng.integers(0, num_classes, n_test)])
  return splits.Arrays(_ids_as_images(len(y_train)), y_train, _ids_as_images(len(y_test)),
                       y_test)


def _ids_as_images(n):
  ids = np.arange(n)
  x = np.zeros((n, 1, 2, 1), np.uint8)
  x[:, 0, 0, 0] = ids % 256
  x[:, 0, 1, 0] = ids // 256
  return x


def _ids(x):
  return x[:, 0, 0, 0].astype(int) + 256 * x[:, 0, 1, 0].astype(int)


def _split(arrays, num_classes=10, num_tasks=5, order="sequential", seed=0, **kw):
  return splits.split_tasks(
      arrays, num_classes=num_classes, num_tasks=num_tasks, order=order, seed=seed, **kw
  )


def test_sequential_tasks_are_consecutive_class_chunks():
  tasks, order = _split(_data())
  assert order == tuple(range(10))
  assert [t.classes for t in tasks] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]


@pytest.mark.parametrize("order", ["sequential", "random"])
@pytest.mark.parametrize("num_classes,num_tasks", [(10, 5), (10, 1), (10, 10), (100, 10),
                                                   (200, 20)])
def test_tasks_disjoint_and_cover_all_classes(order, num_classes, num_tasks):
  arrays = _data(num_classes, n_train=3 * num_classes, n_test=num_classes)
  tasks, class_order = _split(arrays, num_classes, num_tasks, order, seed=3)
  per_task = num_classes // num_tasks
  all_classes = [c for t in tasks for c in t.classes]
  assert len(tasks) == num_tasks
  assert all(len(t.classes) == per_task for t in tasks)
  assert sorted(all_classes) == list(range(num_classes))  # disjoint and covering
  assert tuple(all_classes) == class_order
  # Every example lands in exactly one task.
  assert sum(len(t.y_train) for t in tasks) == len(arrays.y_train)
  assert sum(len(t.y_test) for t in tasks) == len(arrays.y_test)
  all_ids = np.concatenate([_ids(t.x_train) for t in tasks])
  assert sorted(all_ids) == list(range(len(arrays.y_train)))


def test_labels_remapped_exactly_and_original_order_kept():
  arrays = _data()
  tasks, _ = _split(arrays, order="random", seed=7)
  for t in tasks:
    for x, y, y_orig in ((t.x_train, t.y_train, arrays.y_train),
                         (t.x_test, t.y_test, arrays.y_test)):
      assert x.dtype == np.uint8 and y.dtype == np.int32
      ids = _ids(x)
      # classes[local label] is the original label of that very example.
      np.testing.assert_array_equal(np.asarray(t.classes)[y], y_orig[ids])
      np.testing.assert_array_equal(ids, np.flatnonzero(np.isin(y_orig, t.classes)))
      assert set(y.tolist()) == set(range(len(t.classes)))


def test_random_order_is_seeded():
  arrays = _data(100, n_train=200, n_test=100)
  _, order_a = _split(arrays, 100, 10, "random", seed=0)
  _, order_b = _split(arrays, 100, 10, "random", seed=0)
  _, order_c = _split(arrays, 100, 10, "random", seed=1)
  assert order_a == order_b
  assert order_a != order_c
  assert order_a == tuple(np.random.default_rng(0).permutation(100))
  assert sorted(order_c) == list(range(100))


def test_class_order_seed_fixes_one_order_for_every_seed():
  """order_seed orders the classes on its own: every run seed gets the same order, while the
  subsamples still follow the run seed."""
  arrays = _data(10, n_train=400)
  tasks_a, order_a = _split(arrays, order="random", seed=0, order_seed=7, max_train_per_task=10)
  tasks_b, order_b = _split(arrays, order="random", seed=1, order_seed=7, max_train_per_task=10)
  assert order_a == order_b == tuple(np.random.default_rng(7).permutation(10))
  assert any(not np.array_equal(_ids(a.x_train), _ids(b.x_train)) for a, b in zip(tasks_a, tasks_b))
  assert _split(arrays, order="random", seed=7)[1] == order_a


def test_pad_images_puts_the_original_in_the_middle_on_zeros():
  rng = np.random.default_rng(0)
  arrays = splits.Arrays(rng.integers(1, 256, (4, 28, 28, 1), dtype=np.uint8), np.arange(4),
                         rng.integers(1, 256, (2, 28, 28, 1), dtype=np.uint8), np.arange(2))
  padded = splits.pad_images(arrays, 32)
  for name in ("x_train", "x_test"):
    x, original = getattr(padded, name), getattr(arrays, name)
    assert x.shape == (len(original), 32, 32, 1) and x.dtype == np.uint8
    np.testing.assert_array_equal(x[:, 2:30, 2:30], original)
    assert x.sum(dtype=np.int64) == original.sum(dtype=np.int64)  # the border is all zeros
  np.testing.assert_array_equal(padded.y_train, arrays.y_train)
  odd = splits.pad_images(arrays, 31)
  np.testing.assert_array_equal(odd.x_train[:, 1:29, 1:29], arrays.x_train)
  np.testing.assert_array_equal(splits.pad_images(arrays, 28).x_train, arrays.x_train)
  with pytest.raises(UserError, match="smaller than the 28x28 images"):
    splits.pad_images(arrays, 27)


def test_subsample_stratified_exact_counts():
  arrays = _data(10, n_train=2000, n_test=500)
  # 5 tasks of 2 classes: 101 -> floor(101/2) = 50 per class, 21 -> 10 per class.
  tasks, _ = _split(arrays, max_train_per_task=101, max_test_per_task=21)
  for t in tasks:
    np.testing.assert_array_equal(np.bincount(t.y_train, minlength=2), [50, 50])
    np.testing.assert_array_equal(np.bincount(t.y_test, minlength=2), [10, 10])
    ids = _ids(t.x_train)
    assert np.all(np.diff(ids) > 0)  # original relative order kept
    np.testing.assert_array_equal(np.asarray(t.classes)[t.y_train], arrays.y_train[ids])


def test_subsample_deterministic_and_seeded():
  arrays = _data(10, n_train=2000, n_test=500)
  ids = lambda tasks: [_ids(t.x_train).tolist() for t in tasks]
  a, _ = _split(arrays, seed=4, max_train_per_task=40)
  b, _ = _split(arrays, seed=4, max_train_per_task=40)
  c, _ = _split(arrays, seed=5, max_train_per_task=40)
  assert ids(a) == ids(b)
  assert ids(a) != ids(c)


def test_subsample_larger_than_available_keeps_everything():
  arrays = splits.Arrays(_ids_as_images(6), np.array([0, 0, 0, 1, 2, 3]),
                         _ids_as_images(4), np.array([0, 1, 2, 3]))
  tasks, _ = _split(arrays, 4, 2, max_train_per_task=10, max_test_per_task=1000)
  # 5 per class wanted; class 0 has 3, class 1 has 1: all kept, no error.
  np.testing.assert_array_equal(_ids(tasks[0].x_train), [0, 1, 2, 3])
  np.testing.assert_array_equal(tasks[0].y_train, [0, 0, 0, 1])
  np.testing.assert_array_equal(_ids(tasks[1].x_test), [2, 3])


def test_subsample_function_directly():
  labels = np.array([5, 3, 5, 5, 3, 9, 5, 3])
  rng = np.random.default_rng(0)
  idx = splits.stratified_subsample(labels, (5, 3), 4, rng)
  assert np.all(np.diff(idx) > 0)
  np.testing.assert_array_equal(np.sort(labels[idx]), [3, 3, 5, 5])
  np.testing.assert_array_equal(splits.stratified_subsample(labels, (5, 3), 0, rng),
                                [0, 1, 2, 3, 4, 6, 7])


@pytest.mark.parametrize("num_classes,num_tasks,message", [
    (10, 3, "does not divide the 10 classes"),
    (100, 7, "does not divide the 100 classes"),
    (10, 0, "must be an integer >= 1"),
    (10, -2, "must be an integer >= 1"),
    (10, 2.0, "must be an integer >= 1"),
    (10, True, "must be an integer >= 1"),
    (4, 8, "more than the 4 classes"),
])
def test_refuses_bad_num_tasks(num_classes, num_tasks, message):
  with pytest.raises(UserError, match=message):
    splits.check_num_tasks(num_classes, num_tasks)


def test_refuses_unknown_class_order():
  with pytest.raises(UserError, match="data.class_order='shuffled' is unknown"):
    _split(_data(), order="shuffled")


@pytest.mark.parametrize("key", ["max_train_per_task", "max_test_per_task"])
@pytest.mark.parametrize("value,message", [
    (-1, "must be an integer >= 0"),
    (1, "fewer than the 2 classes per task"),
    (1.5, "must be an integer >= 0"),
])
def test_refuses_bad_max_per_task(key, value, message):
  with pytest.raises(UserError, match=f"data.{key}={value}.*{message}"):
    _split(_data(), **{key: value})


def test_max_equal_to_classes_per_task_gives_one_per_class():
  tasks, _ = _split(_data(), max_train_per_task=2, max_test_per_task=3)
  for t in tasks:
    np.testing.assert_array_equal(np.sort(t.y_train), [0, 1])
    np.testing.assert_array_equal(np.sort(t.y_test), [0, 1])
