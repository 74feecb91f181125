"""The losses of PAH (paper eq. 4-6) as pure functions of logits.

L_total = L_hm + lambda_sm * L_sm + lambda_sp * L_sp                         (eq. 6)
  L_hm: cross-entropy of f(x | k) on the current task's labels.
  L_sm: distillation of the old model's f_{k-1}(x | j) into f_k(x | j), j < k  (eq. 4)
  L_sp: the same distillation on the prototypes P_j of every old task j < k   (eq. 5)

Old tasks are selected with a boolean mask over the K preallocated tasks, so every shape
is independent of the current task index k and a jitted step compiles once per run.
"""

import jax
import jax.numpy as jnp
import optax

KL_DIRECTIONS = ("old_new", "new_old")
REDUCTIONS = ("mean", "sum")


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """L_hm: mean softmax cross-entropy over the batch; `labels` are task-local ints."""
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels))


def distill_kl(student_logits: jax.Array, teacher_logits: jax.Array, *, temperature: float,
               direction: str = "old_new", eps: float = 1e-10) -> jax.Array:
  """Temperature-softened KL divergence per example, scaled by T^2 (eq. 4-5).

  With p_t = softmax(teacher / T), p_s = softmax(student / T), both clamped below at `eps`
  as in the official code:
    old_new (paper):    T^2 * sum_c p_t log(p_t / p_s)   = T^2 KL(old || new)
    new_old (official): T^2 * sum_c p_s log(p_s / p_t)   = T^2 KL(new || old)
  Returns an array of shape `logits.shape[:-1]` (reduce it yourself). The teacher gets no
  gradient.
  """
  if direction not in KL_DIRECTIONS:
    raise ValueError(f"direction must be one of {KL_DIRECTIONS}, got {direction!r}")
  teacher_logits = jax.lax.stop_gradient(teacher_logits)
  p_s = jnp.clip(jax.nn.softmax(student_logits.astype(jnp.float32) / temperature, axis=-1), eps)
  p_t = jnp.clip(jax.nn.softmax(teacher_logits.astype(jnp.float32) / temperature, axis=-1), eps)
  p, q = (p_t, p_s) if direction == "old_new" else (p_s, p_t)
  return temperature**2 * jnp.sum(p * (jnp.log(p) - jnp.log(q)), axis=-1)


def reduce_old_tasks(per_task: jax.Array, old_mask: jax.Array, reduction: str = "mean") -> jax.Array:
  """Combines per-task losses (K,) over the old tasks j < k selected by `old_mask` (K,) bool.

  mean (paper): 1/(k-1) sum_{j<k} l_j; sum (official code): sum_{j<k} l_j. Exactly 0 when
  no task is old (k = 0); masked entries contribute neither value nor gradient.
  """
  if reduction not in REDUCTIONS:
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
  total = jnp.sum(jnp.where(old_mask, per_task, 0.0))
  if reduction == "sum":
    return total
  return total / jnp.maximum(jnp.sum(old_mask), 1)


def distill_old_tasks(student_logits: jax.Array, teacher_logits: jax.Array, old_mask: jax.Array, *,
                      temperature: float, direction: str, reduction: str) -> jax.Array:
  """L_sm (eq. 4) or L_sp (eq. 5) from stacked per-task logits of shape (K, N, C).

  Each old task's KL is averaged over its N examples (images for L_sm, the C prototypes for
  L_sp), then the tasks are combined by `reduce_old_tasks`.
  """
  per_example = distill_kl(student_logits, teacher_logits, temperature=temperature, direction=direction)
  return reduce_old_tasks(jnp.mean(per_example, axis=-1), old_mask, reduction)
