"""Cut a labelled data set into a sequence of class-disjoint tasks.

Pure numpy, no I/O. Every task holds C = num_classes / num_tasks classes of its own;
inside a task, labels are remapped to 0..C-1 in the order of `Task.classes`.
"""

import dataclasses
from typing import NamedTuple

import numpy as np

from pah_jax.errors import UserError

CLASS_ORDERS = ("sequential", "random")


class Arrays(NamedTuple):
  """A whole data set as a source delivers it: uint8 NHWC images, integer labels."""

  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray


@dataclasses.dataclass(frozen=True)
class Task:
  """One task: its images (uint8 NHWC), local labels (int32) and original class ids."""

  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  classes: tuple[int, ...]  # classes[local_label] = original label


def check_task_count(num_tasks: int) -> None:
  """Raises UserError unless `num_tasks` is an integer >= 1."""
  if not _is_int(num_tasks) or num_tasks < 1:
    raise UserError(f"data.num_tasks={num_tasks!r} must be an integer >= 1")


def check_num_tasks(num_classes: int, num_tasks: int) -> int:
  """Returns the classes per task, or raises UserError if the split is impossible."""
  check_task_count(num_tasks)
  if num_classes < num_tasks:
    raise UserError(
        f"data.num_tasks={num_tasks} is more than the {num_classes} classes of the data set"
    )
  if num_classes % num_tasks:
    raise UserError(
        f"data.num_tasks={num_tasks} does not divide the {num_classes} classes of the data "
        f"set into tasks of equal size (choose a divisor of {num_classes})"
    )
  return num_classes // num_tasks


def check_max_per_task(key: str, value: int, classes_per_task: int) -> None:
  """Raises UserError unless `value` is 0 (= all) or leaves >= 1 example per class."""
  if not _is_int(value) or value < 0:
    raise UserError(f"data.{key}={value!r} must be an integer >= 0 (0 = all examples)")
  if 0 < value < classes_per_task:
    raise UserError(
        f"data.{key}={value} is fewer than the {classes_per_task} classes per task; "
        f"use 0 (all) or at least {classes_per_task}"
    )


def class_order(num_classes: int, order: str, seed: int) -> np.ndarray:
  """The class permutation that `split_tasks` cuts into consecutive chunks.

  `sequential` is the natural label order of the paper and the official code (task t =
  classes [tC, (t+1)C)); `random` is a permutation seeded by the run's seed.
  """
  if order == "sequential":
    return np.arange(num_classes)
  if order == "random":
    return np.random.default_rng(seed).permutation(num_classes)
  raise UserError(f"data.class_order={order!r} is unknown; use one of {', '.join(CLASS_ORDERS)}")


def stratified_subsample(
    labels: np.ndarray, classes: tuple[int, ...], max_examples: int, rng: np.random.Generator
) -> np.ndarray:
  """Indices into `labels` of at most floor(max_examples / C) examples per class.

  0 keeps everything; a class with fewer examples keeps all of them. Indices come back
  sorted so the subsample keeps the original relative order of the examples.
  """
  if max_examples == 0:
    return np.flatnonzero(np.isin(labels, classes))
  per_class = max_examples // len(classes)
  chosen = []
  for c in classes:
    members = np.flatnonzero(labels == c)
    if len(members) > per_class:
      members = rng.choice(members, size=per_class, replace=False)
    chosen.append(members)
  return np.sort(np.concatenate(chosen))


def check_pad_to(pad_to) -> None:
  """Raises UserError unless `data.pad_to` is an integer >= 0."""
  if not _is_int(pad_to) or pad_to < 0:
    raise UserError(f"data.pad_to={pad_to!r} must be an integer >= 0 (0 = no padding)")


def pad_images(arrays: Arrays, size: int) -> Arrays:
  """Zero-pads every image to size x size, the original in the middle (an odd margin puts the
  extra row/column at the bottom/right). Pixel value 0 before normalisation: the background of
  MNIST-like data, which is how the authors' code was fed 28x28 images at its 32x32 crop offsets."""
  h, w = arrays.x_train.shape[1:3]
  if size < h or size < w:
    raise UserError(f"data.pad_to={size} is smaller than the {h}x{w} images; use 0 (no padding) or >= {max(h, w)}")
  top, left = (size - h) // 2, (size - w) // 2
  widths = ((0, 0), (top, size - h - top), (left, size - w - left), (0, 0))
  return arrays._replace(x_train=np.pad(arrays.x_train, widths), x_test=np.pad(arrays.x_test, widths))


def split_tasks(
    arrays: Arrays,
    *,
    num_classes: int,
    num_tasks: int,
    order: str,
    seed: int,
    max_train_per_task: int = 0,
    max_test_per_task: int = 0,
    order_seed: int | None = None,
) -> tuple[tuple[Task, ...], tuple[int, ...]]:
  """Splits whole train/test arrays into `num_tasks` tasks.

  Args:
    arrays: uint8 images (N, H, W, C) and integer labels in [0, num_classes).
    num_classes: classes of the whole data set.
    num_tasks: tasks to cut it into (must divide num_classes).
    order: `sequential` or `random` (see `class_order`).
    seed: seeds the subsampling, and the random class order unless `order_seed` is given.
    max_train_per_task, max_test_per_task: 0 = all, else a stratified subsample.
    order_seed: seeds the random class order on its own, so that several seeds share one order.

  Returns:
    The tasks and the full class order they were cut from.
  """
  per_task = check_num_tasks(num_classes, num_tasks)
  check_max_per_task("max_train_per_task", max_train_per_task, per_task)
  check_max_per_task("max_test_per_task", max_test_per_task, per_task)
  permutation = class_order(num_classes, order, seed if order_seed is None else order_seed)
  x_train, y_train, x_test, y_test = arrays
  tasks = []
  for t in range(num_tasks):
    classes = tuple(int(c) for c in permutation[t * per_task:(t + 1) * per_task])
    # One stream per (task, split), independent of the class-order stream, so changing
    # one task's subsample size never changes what another task sees.
    train_rng = np.random.default_rng([seed, t, 0])
    test_rng = np.random.default_rng([seed, t, 1])
    train_idx = stratified_subsample(y_train, classes, max_train_per_task, train_rng)
    test_idx = stratified_subsample(y_test, classes, max_test_per_task, test_rng)
    local = np.full(num_classes, -1, dtype=np.int32)
    local[list(classes)] = np.arange(per_task, dtype=np.int32)
    tasks.append(Task(
        x_train=x_train[train_idx],
        y_train=local[y_train[train_idx]],
        x_test=x_test[test_idx],
        y_test=local[y_test[test_idx]],
        classes=classes,
    ))
  return tuple(tasks), tuple(int(c) for c in permutation)


def _is_int(value) -> bool:
  # bool is an int subclass, but `num_tasks=True` is a config mistake, not 1.
  return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
