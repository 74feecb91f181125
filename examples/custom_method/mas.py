"""Memory Aware Synapses (Aljundi, Babiloni, Elhoseiny, Rohrbach & Tuytelaars, "Memory Aware
Synapses: Learning what (not) to forget", ECCV 2018): a method module that lives outside
pah_jax and uses only its public pieces (`base`, `heads`, `quadratic`).

  L = CE(current head) + lambda sum_i Omega_i (theta_i - theta*_i)^2

Importance (the paper's, with the squared L2 norm of the output): after task k,
  Omega_k,i = mean over examples x of |d ||f(x)||_2^2 / d theta_i|,
with f(x) the outputs (logits) of task k's head on one example, BatchNorm as at evaluation
(model.eval_batch_norm / batch_norm, over that one example when it uses batch statistics).
MAS needs no labels: the gradient is that of the output's norm, not of a loss.

Accumulation over tasks: Omega <- Omega + Omega_k and theta* <- theta after every task (the
paper's sum over tasks, as the authors' code does it: `accumelate_reg_params` adds the new
task's importance to the stored one). The penalty is the paper's, without a factor 1/2.
Only the backbone and the current head train; old heads keep their values (`heads`), so their
terms stay zero, and heads of later tasks have zero importance until they are trained.

Config, section `mas`:
  strength  lambda. Default 1: the authors' code (github.com/rahafaljundi/MAS-Memory-Aware-
            Synapses, MAS.py: "In object recognition it was set to 1").
  samples   training examples of the task the importance averages over, drawn uniformly with
            replacement from the random stream `importance_sample` (`base.task_key`); 0 = every
            training example of the task once, as in the paper. Default 512, the same sample as
            ewc.fisher_samples, so the two importance-based baselines cost the same.
  batch     per-example gradients computed this many at a time (memory: batch x parameters).
Also optim.lr_heads (the heads' AdamW learning rate, `heads.method`).

Run it (from the repository root; see docs/adding_a_method.md):
  PYTHONPATH=examples python -m pah_jax.main --config=examples/custom_method/config.py --workdir=runs/mas

Like every method module this one imports JAX only inside `build` and the functions it calls:
its declaration is read when a config is loaded and checked, before JAX starts.
"""

import ml_collections

from pah_jax.errors import UserError
from pah_jax.methods.registry import Declaration


def mas_config() -> ml_collections.ConfigDict:
  m = ml_collections.ConfigDict()
  m.strength = 1.0  # lambda of L = CE + lambda sum Omega (theta - theta*)^2 (authors' code: 1)
  m.samples = 512  # training examples per task for the importance Omega (0 = all, as the paper)
  m.batch = 32  # per-example gradients computed this many at a time
  return m


def check(config: ml_collections.ConfigDict) -> None:
  """Checks across keys, before JAX starts: a chunk larger than the sample would compute only padding."""
  if config.mas.samples and config.mas.batch > config.mas.samples:
    raise UserError(f"config mas.batch={config.mas.batch} is larger than mas.samples={config.mas.samples}: "
                    "lower mas.batch")


METHOD = Declaration(
    name="mas",
    description="MAS (Aljundi et al. 2018), lambda {mas.strength}",
    sections={"mas": mas_config},
    reads=("optim.lr_heads",),
    ranges={"mas.strength": (0.0, None, False), "mas.samples": (0, None, False), "mas.batch": (1, None, False)},
    check=check,
    streams={"importance_sample": 4},
)


def importance(setup, params, batch_stats, images, weights, task_id, chunk: int):
  """Omega_k: the `weights`-weighted mean over `images` of |d ||f(x)||_2^2 / d theta|, a pytree
  like `params`.

  `images` (n, H, W, ch) normalised, n a multiple of `chunk`; `weights` (n,) 1 for the examples
  averaged over and 0 for padding. f(x) is head `task_id`'s output on the single example x.
  Per-example gradients come from vmap, `chunk` examples at a time.
  """
  import jax
  import jax.numpy as jnp

  from pah_jax.methods import base
  from pah_jax.methods import heads

  bn_batch = setup.nets.eval_batch_stats

  def squared_output_norm(p, x):
    feats, _ = heads.features(setup, p, batch_stats, x[None], batch_statistics=bn_batch)
    outputs = heads.task_logits(p["heads"], feats, task_id).astype(jnp.float32)
    return jnp.sum(jnp.square(outputs))

  per_example = jax.vmap(jax.grad(squared_output_norm), in_axes=(None, 0))
  n = images.shape[0]
  xs = images.reshape(n // chunk, chunk, *images.shape[1:])
  ws = weights.reshape(n // chunk, chunk)

  def add_chunk(total, xw):
    x, w = xw
    grads = per_example(params, x)
    return jax.tree_util.tree_map(lambda t, g: t + jnp.tensordot(w, jnp.abs(g), axes=1), total, grads), None

  total, _ = jax.lax.scan(add_chunk, base.tree_zeros_like(params), (xs, ws))
  count = jnp.maximum(jnp.sum(weights), 1.0)
  return jax.tree_util.tree_map(lambda t: t / count, total)


def build(setup):
  import jax
  import jax.numpy as jnp

  from pah_jax.methods import base
  from pah_jax.methods import heads
  from pah_jax.methods import quadratic

  s = setup.settings("mas")  # frozen values: what the jitted functions below close over

  def regularizer(params, state, batch, feats):
    l_mas = quadratic.penalty(params, state.extra["anchor"], state.extra["omega"])
    return s.strength * l_mas, {"loss_mas": l_mas}

  def sample(state, images_u8, num_valid, task_id):
    """Indices of the examples Omega_k averages over and their weights, padded to chunks of
    `mas.batch` (static sizes: `images_u8` is the task's padded training set)."""
    if s.samples:  # drawn with replacement
      padded = -(-s.samples // s.batch) * s.batch
      key = base.task_key(state, METHOD.streams["importance_sample"], task_id)
      idx = jax.random.randint(key, (padded,), 0, num_valid)
      return idx, (jnp.arange(padded) < s.samples).astype(jnp.float32)
    size = images_u8.shape[0]  # every training example once
    padded = -(-size // s.batch) * s.batch
    positions = jnp.arange(padded)
    return positions % size, (positions < num_valid).astype(jnp.float32)

  def end_task(state, images_u8, labels, num_valid, task_id):
    del labels  # MAS's importance needs no labels
    idx, weights = sample(state, images_u8, num_valid, task_id)
    omega_k = importance(setup, state.params, state.batch_stats, setup.normalize(images_u8[idx]), weights,
                         task_id, s.batch)
    omega = jax.tree_util.tree_map(jnp.add, state.extra["omega"], omega_k)
    return state.replace(extra={"omega": omega, "anchor": state.params})

  return heads.method(
      setup, "mas", metric_names=heads.BASE_METRICS + ("loss_mas",), regularizer=regularizer,
      init_extra=lambda params, batch_stats: {"omega": base.tree_zeros_like(params), "anchor": params},
      end_task=end_task, step_keeps=("omega", "anchor"))
