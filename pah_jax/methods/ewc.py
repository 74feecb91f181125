"""Online Elastic Weight Consolidation (Kirkpatrick et al., PNAS 2017; online form of
Schwarz et al., ICML 2018 "Progress & Compress").

L = CE(current head) + (lambda / 2) sum_i F~_i (theta_i - theta*_i)^2
After task k: F~ <- gamma F~ + F_k, theta* <- theta, where F_k is the diagonal empirical
Fisher, the mean over `ewc.fisher_samples` training examples of the squared per-example
gradient of log p(y | x) (each example through its task's head, BatchNorm as at evaluation).
Config: section `ewc` (strength = lambda, gamma, fisher_samples, fisher_batch), optim.lr_heads.
"""

import ml_collections

from pah_jax.methods.registry import Declaration


def ewc_config() -> ml_collections.ConfigDict:
  e = ml_collections.ConfigDict()
  e.strength = 100.0  # lambda of the quadratic penalty (lambda / 2) sum F (theta - theta*)^2
  e.gamma = 1.0  # online EWC's decay of the accumulated Fisher (Schwarz et al. 2018)
  e.fisher_samples = 512  # training examples per task for the empirical Fisher diagonal
  e.fisher_batch = 32  # per-example gradients computed this many at a time
  return e


METHOD = Declaration(
    name="ewc",
    description="online EWC (Schwarz et al. 2018)",
    sections={"ewc": ewc_config},
    reads=("optim.lr_heads",),
    ranges={"ewc.strength": (0.0, None, False), "ewc.gamma": (0.0, 1.0, False),
            "ewc.fisher_samples": (1, None, False), "ewc.fisher_batch": (1, None, False)},
    streams={"fisher_sample": 4},
)


def fisher_diagonal(setup, params, batch_stats, images, labels, task_id, chunk: int):
  """Mean over the examples of (d/d theta log p(y | x))^2: the empirical Fisher's diagonal.

  `images` (n, H, W, ch) normalised, n a multiple of `chunk`; per-example gradients come
  from vmap, `chunk` examples at a time.
  """
  import jax
  import jax.numpy as jnp
  import optax

  from pah_jax.methods import base
  from pah_jax.methods import heads

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


def build(setup):
  import jax

  from pah_jax.methods import base
  from pah_jax.methods import heads
  from pah_jax.methods import quadratic

  s = setup.settings("ewc")
  samples = max(s.fisher_batch, s.fisher_samples // s.fisher_batch * s.fisher_batch)

  def regularizer(params, state, batch, feats):
    l_ewc = quadratic.penalty(params, state.extra["anchor"], state.extra["fisher"])
    return 0.5 * s.strength * l_ewc, {"loss_ewc": l_ewc}

  def end_task(state, images_u8, labels, num_valid, task_id):
    key = base.task_key(state, METHOD.streams["fisher_sample"], task_id)
    idx = jax.random.randint(key, (samples,), 0, num_valid)
    fisher = fisher_diagonal(setup, state.params, state.batch_stats, setup.normalize(images_u8[idx]),
                             labels[idx], task_id, s.fisher_batch)
    accumulated = jax.tree_util.tree_map(lambda old, new: s.gamma * old + new, state.extra["fisher"], fisher)
    return state.replace(extra={"fisher": accumulated, "anchor": state.params})

  return heads.method(
      setup, "ewc", metric_names=heads.BASE_METRICS + ("loss_ewc",), regularizer=regularizer,
      init_extra=lambda params, batch_stats: {"fisher": base.tree_zeros_like(params), "anchor": params},
      end_task=end_task, step_keeps=("fisher", "anchor"))
