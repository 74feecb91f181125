"""Online Elastic Weight Consolidation (Kirkpatrick et al., PNAS 2017; online form of
Schwarz et al., ICML 2018 "Progress & Compress").

L = CE(current head) + (lambda / 2) sum_i F~_i (theta_i - theta*_i)^2
After task k: F~ <- gamma F~ + F_k, theta* <- theta, where F_k is the diagonal empirical
Fisher, the mean over `ewc.fisher_samples` training examples of the squared per-example
gradient of log p(y | x) (each example through its task's head, BatchNorm as at evaluation).
Config: ewc.strength (lambda), ewc.gamma, ewc.fisher_samples, ewc.fisher_batch.
"""

import functools

import jax
import jax.numpy as jnp
import optax

from pah_jax import optim
from pah_jax.methods import base
from pah_jax.methods import heads
from pah_jax.methods import quadratic

FISHER_STREAM = 4  # PRNG stream of the Fisher sample


def fisher_diagonal(setup: base.Setup, params, batch_stats, images, labels, task_id, chunk: int):
  """Mean over the examples of (d/d theta log p(y | x))^2: the empirical Fisher's diagonal.

  `images` (n, H, W, ch) normalised, n a multiple of `chunk`; per-example gradients come
  from vmap, `chunk` examples at a time.
  """
  bn_batch = setup.nets.eval_batch_stats

  def log_likelihood(p, x, y):
    feats, _ = heads.features(setup, p, batch_stats, x[None], batch_statistics=bn_batch)
    logits = heads.task_logits(p["heads"], feats, task_id)
    return -optax.softmax_cross_entropy_with_integer_labels(logits, y[None])[0]

  per_example = jax.vmap(jax.grad(log_likelihood), in_axes=(None, 0, 0))
  n = images.shape[0]
  xs = images.reshape(n // chunk, chunk, *images.shape[1:])
  ys = labels.reshape(n // chunk, chunk)

  def add_chunk(total, xy):
    grads = per_example(params, *xy)
    return jax.tree_util.tree_map(lambda t, g: t + jnp.sum(jnp.square(g), 0), total, grads), None

  total, _ = jax.lax.scan(add_chunk, base.tree_zeros_like(params), (xs, ys))
  return jax.tree_util.tree_map(lambda t: t / n, total)


def build(setup: base.Setup) -> base.Method:
  cfg = setup.config.ewc
  optimizer = optim.main_optimizer(setup.config.optim, ("backbone", "heads"))
  samples = max(cfg.fisher_batch, cfg.fisher_samples // cfg.fisher_batch * cfg.fisher_batch)

  def regularizer(params, state, batch, feats):
    l_ewc = quadratic.penalty(params, state.extra["anchor"], state.extra["fisher"])
    return 0.5 * cfg.strength * l_ewc, {"loss_ewc": l_ewc}

  def end_task(state, images_u8, labels, num_valid, task_id):
    key = jax.random.fold_in(jax.random.fold_in(state.rng, FISHER_STREAM), task_id)
    idx = jax.random.randint(key, (samples,), 0, num_valid)
    fisher = fisher_diagonal(setup, state.params, state.batch_stats, setup.normalize(images_u8[idx]),
                             labels[idx], task_id, cfg.fisher_batch)
    accumulated = jax.tree_util.tree_map(lambda old, new: cfg.gamma * old + new, state.extra["fisher"], fisher)
    return state.replace(extra={"fisher": accumulated, "anchor": state.params})

  return base.Method(
      name="ewc", metric_names=heads.BASE_METRICS + ("loss_ewc",),
      init=functools.partial(heads.init, setup), optimizer=optimizer,
      step=heads.multihead_step(setup, optimizer, regularizer=regularizer),
      logits=heads.evaluation_logits(setup),
      init_extra=lambda params, batch_stats: {"fisher": base.tree_zeros_like(params), "anchor": params},
      end_task=end_task)
