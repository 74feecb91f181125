"""What every continual-learning method provides to the shared task loop (`pah_jax.train`).

A method module's `build(setup: Setup) -> Method` (see `registry`) returns a handful of pure
functions over one `TrainState` pytree. The loop owns data
order, augmentation, normalisation, sharding, checkpoints, evaluation and metrics; a method
owns its parameters, its optimiser, its loss and whatever it carries between steps and tasks
(`TrainState.extra`: a frozen teacher, importance weights, a replay buffer, ...).
"""

from collections.abc import Callable
import dataclasses
from typing import Any
from typing import NamedTuple

import flax
import jax
import jax.numpy as jnp
import optax

from pah_jax import images as images_lib
from pah_jax import networks


@flax.struct.dataclass
class TrainState:
  """Everything that changes during a run, as one pytree (checkpointed whole)."""

  step: jax.Array  # global step over the whole task sequence
  params: Any  # the method's parameters, grouped by top-level key (optimiser groups)
  batch_stats: Any  # BatchNorm running statistics, updated by the training batches only
  opt_state: Any  # the main optimiser's state
  extra: Any  # the method's own state: teacher, importances, buffers (a dict, maybe empty)
  rng: jax.Array  # root PRNG key of the run


class Batch(NamedTuple):
  """One training batch as a method's step sees it."""

  images: jax.Array  # normalised float images, augmented when train.augment is on
  raw: jax.Array  # the same examples as stored: uint8, not augmented (for replay buffers)
  labels: jax.Array  # task-local labels 0..C-1 (joint training: task * C + label)
  task_id: jax.Array  # the current task (traced int)


@dataclasses.dataclass(frozen=True)
class Method:
  """A continual-learning method as the task loop drives it.

  init(key) -> (params, batch_stats): fresh parameters (jittable).
  step(state, batch) -> (state, metrics): one update; `state.step` is advanced by the loop.
  logits(params, batch_stats, images, task_id, batch_statistics) -> (N, C): task-`task_id`
    predictions for evaluation.
  begin_task(state, task_id) / end_task(state, images_u8, labels, num_valid, task_id): run once
    around each task (jitted by the loop; `images_u8` are the task's padded training arrays,
    the first `num_valid` real). Like `step` they close over nothing that differs between
    runs of one config (seed, data): what a run needs lives in its state, so runs of several
    seeds at once (`train.train_seeds`) share one compile of each.
  """

  name: str
  metric_names: tuple[str, ...]
  init: Callable
  optimizer: optax.GradientTransformation
  step: Callable
  logits: Callable
  init_extra: Callable = lambda params, batch_stats: {}
  begin_task: Callable | None = None
  end_task: Callable | None = None
  # Trains once on the union of all tasks (labels task * C + label) and is scored after it.
  joint: bool = False
  # Per task, indices of training examples the method took out of the training set (PAH's
  # official prototype init removes the image each prototype is cut from); None = none.
  removed_from_training: list | None = None
  # Test-time BatchNorm ("running" | "batch"), overriding model.eval_batch_norm / batch_norm
  # ("" = as configured): joint training, whose batches mix the tasks.
  eval_batch_norm: str = ""
  # What a training step may change, for the conformance tests (tests/methods_conformance_test.py):
  # trainable(params, task_id) -> a pytree like params of bool arrays, True where a step of
  # task `task_id` may change the entry (default: everywhere); step_keeps: the keys of
  # TrainState.extra no step changes (a frozen teacher, anchors, importances).
  trainable: Callable | None = None
  step_keeps: tuple[str, ...] = ()
  # Named pieces of the step for profiling (experiments/benchmark.py): name -> f(state, batch).
  phases: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Setup:
  """What a method's builder gets: the config and the sizes and statistics of the task sequence."""

  config: Any  # ml_collections.ConfigDict: read while building, never inside a jitted function
  nets: networks.Networks  # the backbone module and the BatchNorm settings (no hypernetwork)
  num_tasks: int  # K
  num_classes: int  # C per task
  image_shape: tuple  # (H, W, channels) of the stored images
  mean: tuple
  std: tuple
  tasks: Any = None  # the data_lib.TaskSequence (host arrays), for data-dependent initialisation

  def normalize(self, images_u8: jax.Array) -> jax.Array:
    return images_lib.normalize(images_u8, self.mean, self.std)

  def settings(self, section: str) -> "Settings":
    """Config section `section` as a frozen, hashable object: what a step closes over."""
    return settings(self.config[section])


def settings(section) -> "Settings":
  """A config section (ConfigDict or dict) as frozen settings: attribute access, hashable,
  no ConfigDict inside a jitted function."""
  values = section.to_dict() if hasattr(section, "to_dict") else dict(section)
  return Settings(tuple(sorted(values.items())))


@dataclasses.dataclass(frozen=True)
class Settings:
  """Frozen key/value settings (see `settings`)."""

  items: tuple

  def __getattr__(self, name: str):
    for key, value in self.items:
      if key == name:
        return value
    raise AttributeError(name)

  def replace(self, **changes) -> "Settings":
    return Settings(tuple(sorted({**dict(self.items), **changes}.items())))


# --------------------------------------------------------------------------- shared pieces


def init_backbone(setup: Setup, key: jax.Array):
  """Fresh backbone parameters and running statistics for images of `setup.image_shape`."""
  h, w, _ = setup.image_shape
  variables = setup.nets.backbone.init(key, jnp.zeros((1, h, w, images_lib.BACKBONE_CHANNELS)), train=False)
  return variables["params"], variables["batch_stats"]


def apply_optimizer(optimizer: optax.GradientTransformation, params, grads, opt_state):
  updates, opt_state = optimizer.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def step_key(state: TrainState, stream: int) -> jax.Array:
  """A PRNG key for this step from a method's own random stream (a number it declares in
  `Declaration.streams`, above the loop's `registry.LOOP_STREAMS`)."""
  return jax.random.fold_in(jax.random.fold_in(state.rng, stream), state.step)


def task_key(state: TrainState, stream: int, task_id) -> jax.Array:
  """A PRNG key for task `task_id` from a method's own random stream (work around a task)."""
  return jax.random.fold_in(jax.random.fold_in(state.rng, stream), task_id)


def tree_dot(a, b) -> jax.Array:
  return sum(jnp.vdot(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def tree_zeros_like(tree):
  return jax.tree_util.tree_map(jnp.zeros_like, tree)


def global_labels(labels: jax.Array, task_ids: jax.Array, num_classes: int) -> jax.Array:
  return task_ids * num_classes + labels


def split_global_labels(labels: jax.Array, num_classes: int) -> tuple[jax.Array, jax.Array]:
  """(task ids, task-local labels) of labels written as task * C + label."""
  return labels // num_classes, labels % num_classes


def sample_rows(key: jax.Array, count: int, num_filled: jax.Array) -> jax.Array:
  """`count` indices drawn uniformly with replacement from [0, num_filled) (0 when empty)."""
  return jax.random.randint(key, (count,), 0, jnp.maximum(num_filled, 1))
