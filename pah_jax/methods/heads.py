"""Stored per-task linear heads on a shared backbone: the model of every baseline but PAH/hnet.

params = {"backbone": ..., "heads": {"kernel": (K, D, C), "bias": (K, C)}}

Task-incremental: task j is always scored by head j. Only the current task's head may change
while a task trains (`keep_old_heads`): the other heads get no gradient from the current
task's loss, but AdamW's momentum and weight decay would still move them.
"""

import functools

import jax
import jax.numpy as jnp

from pah_jax import losses
from pah_jax import networks
from pah_jax import optim
from pah_jax.methods import base


def init(setup: base.Setup, key: jax.Array):
  """Fresh backbone and K heads (LeCun-normal kernels as flax.linen.Dense, zero biases)."""
  k_backbone, k_heads = jax.random.split(key)
  backbone, batch_stats = base.init_backbone(setup, k_backbone)
  d, k, c = setup.nets.feature_dim, setup.num_tasks, setup.num_classes
  kernel = jax.nn.initializers.lecun_normal(in_axis=-2, out_axis=-1, batch_axis=(0,))(k_heads, (k, d, c))
  heads = {"kernel": kernel, "bias": jnp.zeros((k, c), jnp.float32)}
  return {"backbone": backbone, "heads": heads}, batch_stats


def features(setup: base.Setup, params, batch_stats, images, *, batch_statistics: bool):
  return networks.backbone_features(setup.nets, params["backbone"], batch_stats, images,
                                    batch_statistics=batch_statistics)


def all_logits(heads, feats: jax.Array) -> jax.Array:
  """Every head on the same features: (N, D) -> (K, N, C)."""
  return jnp.einsum("nd,kdc->knc", feats, heads["kernel"].astype(feats.dtype)) + heads["bias"][:, None, :]


def task_logits(heads, feats: jax.Array, task_id) -> jax.Array:
  """Head `task_id` on the features: (N, C)."""
  return feats @ heads["kernel"][task_id].astype(feats.dtype) + heads["bias"][task_id]


def example_logits(heads, feats: jax.Array, task_ids: jax.Array) -> jax.Array:
  """Each example through its own task's head (mixed-task batches: joint, replay): (N, C)."""
  kernel = heads["kernel"][task_ids].astype(feats.dtype)  # (N, D, C)
  return jnp.einsum("nd,ndc->nc", feats, kernel) + heads["bias"][task_ids]


def keep_old_heads(new_params, old_params, task_id):
  """new_params with every head but `task_id`'s put back to its value in old_params."""
  k = new_params["heads"]["bias"].shape[0]
  current = jnp.arange(k) == task_id

  def pick(new, old):
    return jnp.where(current.reshape((k,) + (1,) * (new.ndim - 1)), new, old)

  heads = jax.tree_util.tree_map(pick, new_params["heads"], old_params["heads"])
  return {**new_params, "heads": heads}


def evaluation_logits(setup: base.Setup):
  """Method.logits for a stored-heads model."""

  def logits(params, batch_stats, images, task_id, batch_statistics):
    feats, _ = features(setup, params, batch_stats, images, batch_statistics=batch_statistics)
    return task_logits(params["heads"], feats, task_id)

  return logits


BASE_METRICS = ("loss", "loss_ce", "train_accuracy")


def multihead_step(setup: base.Setup, optimizer, *, joint: bool = False, regularizer=None,
                   transform_grads=None, after_update=None):
  """The train step shared by the stored-heads methods: cross-entropy of the current task's
  head (joint: each example's own head) plus an optional method term.

  regularizer(params, state, batch, feats) -> (value, {metric: value}): added to the loss.
  transform_grads(state, batch, grads) -> grads: e.g. A-GEM's projection.
  after_update(state, batch, new_params, grads, logits) -> extra: e.g. SI's path integral,
    DER++'s buffer insertion (`logits` are the current batch's, before the update).
  Old heads are put back after the update, except in joint training.
  """

  def loss_fn(params, state: base.TrainState, batch: base.Batch):
    feats, stats = features(setup, params, state.batch_stats, batch.images, batch_statistics=True)
    if joint:
      task_ids, labels = base.split_global_labels(batch.labels, setup.num_classes)
      logits = example_logits(params["heads"], feats, task_ids)
    else:
      labels = batch.labels
      logits = task_logits(params["heads"], feats, batch.task_id)
    ce = losses.cross_entropy(logits, labels)
    reg, reg_metrics = regularizer(params, state, batch, feats) if regularizer else (0.0, {})
    accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
    metrics = {"loss": ce + reg, "loss_ce": ce, "train_accuracy": accuracy, **reg_metrics}
    return ce + reg, (stats, logits, metrics)

  def step(state: base.TrainState, batch: base.Batch):
    (_, (stats, logits, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, state, batch)
    if transform_grads is not None:
      grads = transform_grads(state, batch, grads)
    params, opt_state = base.apply_optimizer(optimizer, state.params, grads, state.opt_state)
    if not joint:
      params = keep_old_heads(params, state.params, batch.task_id)
    extra = state.extra
    if after_update is not None:
      extra = after_update(state, batch, params, grads, jax.lax.stop_gradient(logits))
    return state.replace(params=params, batch_stats=stats, opt_state=opt_state, extra=extra), metrics

  return step


def trainable(params, task_id):
  """What a step of task `task_id` may change: the backbone and that task's head (Method.trainable)."""
  k = params["heads"]["bias"].shape[0]
  current = jnp.arange(k) == task_id

  def mask(x):
    return jnp.broadcast_to(current.reshape((k,) + (1,) * (x.ndim - 1)), x.shape)

  return {"backbone": jax.tree_util.tree_map(lambda x: jnp.ones(x.shape, bool), params["backbone"]),
          "heads": jax.tree_util.tree_map(mask, params["heads"])}


def method(setup: base.Setup, name: str, *, metric_names=BASE_METRICS, joint: bool = False, regularizer=None,
           transform_grads=None, after_update=None, **fields) -> base.Method:
  """A stored-heads method: backbone and heads trained by AdamW (optim.lr_backbone,
  optim.lr_heads) with `multihead_step`; `fields` are the Method's other fields (init_extra,
  begin_task, end_task, step_keeps, ...)."""
  optimizer = optim.main_optimizer(setup.config.optim, ("backbone", "heads"))
  step = multihead_step(setup, optimizer, joint=joint, regularizer=regularizer, transform_grads=transform_grads,
                        after_update=after_update)
  return base.Method(name=name, metric_names=metric_names, init=functools.partial(init, setup),
                     optimizer=optimizer, step=step, logits=evaluation_logits(setup), joint=joint,
                     trainable=None if joint else trainable, **fields)
