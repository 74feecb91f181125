"""Host-side data: a data set named by `config.data`, cut into class-disjoint tasks.

`load_tasks(config.data, seed)` is the one entry point. Images stay uint8 NHWC with their
native channels; the model normalises with `TaskSequence.mean` / `.std`. Sources, one
module each: `cifar100`, `tiny_imagenet`, `fashion_mnist` (TFDS) and `npz` (user file).
"""

import dataclasses
import importlib

import numpy as np

from pah_jax.data import normalization as normalization_lib
from pah_jax.data import splits
from pah_jax.data import tfds_util
from pah_jax.data.splits import Arrays
from pah_jax.data.splits import Task
from pah_jax.errors import UserError

__all__ = ["Task", "TaskSequence", "load_tasks", "NUM_CLASSES"]

# Classes of each named data set (None: known only once the file is read), so a bad
# num_tasks fails before anything slow is imported or read.
NUM_CLASSES = {"cifar100": 100, "tiny_imagenet": 200, "fashion_mnist": 10, "npz": None}


@dataclasses.dataclass(frozen=True)
class TaskSequence:
  """The tasks of a run, in training order, and what the model needs to know about them."""

  tasks: tuple[Task, ...]
  num_classes_per_task: int
  image_shape: tuple[int, int, int]  # (H, W, C)
  mean: tuple[float, ...]  # per channel, in units of pixel/255
  std: tuple[float, ...]
  class_order: tuple[int, ...]  # the full class permutation the tasks were cut from


def load_tasks(data_config, seed: int) -> TaskSequence:
  """Loads `data_config.name` and splits it into `data_config.num_tasks` tasks.

  Args:
    data_config: the `config.data` ConfigDict (name, path, num_tasks, class_order,
      max_train_per_task, max_test_per_task, normalization, download, pad_to,
      class_order_seed).
    seed: the run's seed; orders classes (`class_order=random`, unless `class_order_seed`
      >= 0 does) and picks subsamples.

  Raises:
    UserError: a bad config value, or data that is missing or malformed.
  """
  check_config(data_config, seed)
  name = data_config.name
  if name == "npz":
    arrays, num_classes = importlib.import_module("pah_jax.data.npz").load(data_config.path)
  else:
    with tfds_util.quiet_native_logs():
      arrays = importlib.import_module(f"pah_jax.data.{name}").load(data_config)
    num_classes = NUM_CLASSES[name]
  _check_labels(arrays, num_classes, name)
  if data_config.pad_to:
    arrays = splits.pad_images(arrays, data_config.pad_to)
  tasks, order = splits.split_tasks(
      arrays,
      num_classes=num_classes,
      num_tasks=data_config.num_tasks,
      order=data_config.class_order,
      seed=seed,
      max_train_per_task=data_config.max_train_per_task,
      max_test_per_task=data_config.max_test_per_task,
      order_seed=None if data_config.class_order_seed < 0 else data_config.class_order_seed,
  )
  mean, std = normalization_lib.normalization(
      name, data_config.normalization, arrays.x_train
  )
  return TaskSequence(
      tasks=tasks,
      num_classes_per_task=num_classes // data_config.num_tasks,
      image_shape=tuple(int(s) for s in arrays.x_train.shape[1:]),
      mean=tuple(mean),
      std=tuple(std),
      class_order=order,
  )


def check_config(data_config, seed) -> None:
  """Every check that needs no file, so mistakes surface in milliseconds."""
  name = data_config.name
  if name not in NUM_CLASSES:
    raise UserError(f"data.name={name!r} is unknown; use one of {', '.join(NUM_CLASSES)}")
  if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
    raise UserError(f"seed={seed!r} must be an integer >= 0")
  if data_config.class_order not in splits.CLASS_ORDERS:
    raise UserError(
        f"data.class_order={data_config.class_order!r} is unknown; "
        f"use one of {', '.join(splits.CLASS_ORDERS)}"
    )
  normalization_lib.check_mode(data_config.normalization)
  splits.check_pad_to(data_config.pad_to)
  order_seed = data_config.class_order_seed
  if not isinstance(order_seed, (int, np.integer)) or isinstance(order_seed, bool) or order_seed < -1:
    raise UserError(f"data.class_order_seed={order_seed!r} must be an integer >= 0, or -1 (the run's seed)")
  if not isinstance(data_config.download, bool):
    raise UserError(f"data.download={data_config.download!r} must be True or False")
  if not isinstance(data_config.path, str):
    raise UserError(f"data.path={data_config.path!r} must be a string")
  num_classes = NUM_CLASSES[name]
  if num_classes is None:  # npz: the classes are known once the file is read
    splits.check_task_count(data_config.num_tasks)
    per_task = 1
  else:
    per_task = splits.check_num_tasks(num_classes, data_config.num_tasks)
  splits.check_max_per_task("max_train_per_task", data_config.max_train_per_task, per_task)
  splits.check_max_per_task("max_test_per_task", data_config.max_test_per_task, per_task)


def _check_labels(arrays: Arrays, num_classes: int, name: str) -> None:
  # A source bug or a corrupt prepared copy would otherwise surface as an index error.
  for y in (arrays.y_train, arrays.y_test):
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
      raise UserError(
          f"{name} labels span {y.min()}..{y.max()}, outside 0..{num_classes - 1}; "
          "delete the prepared copy and prepare it again"
      )
