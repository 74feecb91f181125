"""PAH's losses (paper eq. 4-6) against values computed by hand."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pah_jax import losses

T = 2.0


def _softmax(x, t):
  z = np.exp((x - x.max(-1, keepdims=True)) / t)
  return z / z.sum(-1, keepdims=True)


def _np_kl(student, teacher, t, direction):
  """Numpy T^2 KL with the official clamp at 1e-10, per row."""
  p_s = np.maximum(_softmax(np.asarray(student, np.float64), t), 1e-10)
  p_t = np.maximum(_softmax(np.asarray(teacher, np.float64), t), 1e-10)
  p, q = (p_t, p_s) if direction == "old_new" else (p_s, p_t)
  return t**2 * np.sum(p * np.log(p / q), axis=-1)


STUDENT = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [-1.0, 4.0, 0.5]], np.float32)
TEACHER = np.array([[3.0, 1.0, 0.0], [1.0, -1.0, 2.0], [0.0, 0.0, 0.0]], np.float32)


# --------------------------------------------------------------------------- distill_kl


def test_distill_kl_closed_form_two_classes():
  """Student (0, 0), teacher (2 ln 3, 0) at T=2: p_s = (1/2, 1/2), p_t = (3/4, 1/4), so
  old_new = 4 (3/4 ln(3/2) + 1/4 ln(1/2)) = ln(27/16) and new_old = 4 (1/2 ln(2/3) + 1/2 ln 2) = 2 ln(4/3)."""
  s = jnp.array([0.0, 0.0])
  t = jnp.array([2 * math.log(3.0), 0.0])
  old_new = losses.distill_kl(s, t, temperature=T, direction="old_new")
  new_old = losses.distill_kl(s, t, temperature=T, direction="new_old")
  assert old_new.shape == () and new_old.shape == ()
  np.testing.assert_allclose(old_new, math.log(27 / 16), rtol=1e-5)
  np.testing.assert_allclose(new_old, 2 * math.log(4 / 3), rtol=1e-5)


@pytest.mark.parametrize("direction", ["old_new", "new_old"])
def test_distill_kl_matches_numpy(direction):
  """Per-example T^2 KL on hand-made 3-class logits equals the numpy formula (T=2)."""
  got = losses.distill_kl(STUDENT, TEACHER, temperature=T, direction=direction)
  assert got.shape == (3,)
  np.testing.assert_allclose(got, _np_kl(STUDENT, TEACHER, T, direction), rtol=1e-5, atol=1e-7)
  assert np.all(np.asarray(got) > 0)


def test_distill_kl_temperature_squared_scaling():
  """At T=1 there is no scaling: the value is the plain KL of the unsoftened distributions."""
  got = losses.distill_kl(STUDENT, TEACHER, temperature=1.0, direction="old_new")
  np.testing.assert_allclose(got, _np_kl(STUDENT, TEACHER, 1.0, "old_new"), rtol=1e-5)
  # T=2 is not T=1 times 4: the softening changes the distributions too.
  assert not np.allclose(losses.distill_kl(STUDENT, TEACHER, temperature=2.0), 4 * got)


def test_distill_kl_zero_when_equal():
  """Teacher == student gives exactly zero for both directions."""
  for direction in losses.KL_DIRECTIONS:
    got = losses.distill_kl(STUDENT, STUDENT, temperature=T, direction=direction)
    np.testing.assert_array_equal(got, np.zeros(3))


def test_distill_kl_direction_swap():
  """KL(old || new) of (s, t) is KL(new || old) of (t, s), and the two directions differ."""
  a = losses.distill_kl(STUDENT, TEACHER, temperature=T, direction="old_new")
  b = losses.distill_kl(TEACHER, STUDENT, temperature=T, direction="new_old")
  np.testing.assert_allclose(a, b, rtol=1e-6)
  c = losses.distill_kl(STUDENT, TEACHER, temperature=T, direction="new_old")
  assert np.all(np.abs(np.asarray(a) - np.asarray(c)) > 1e-3)


def test_distill_kl_clamps_underflow():
  """A student probability that underflows (logit -1000) is clamped at 1e-10: old_new equals
  4 (1/2 ln(1/2 / 1) + 1/2 ln(1/2 / 1e-10)) = 2 (10 ln 10 - 2 ln 2) instead of +inf, and the
  gradient is finite."""
  s = jnp.array([0.0, -1000.0])
  t = jnp.array([0.0, 0.0])
  got = losses.distill_kl(s, t, temperature=T, direction="old_new")
  np.testing.assert_allclose(got, 2 * (10 * math.log(10) - 2 * math.log(2)), rtol=1e-5)
  got_rev = losses.distill_kl(s, t, temperature=T, direction="new_old")
  np.testing.assert_allclose(got_rev, 4 * (math.log(2) + 1e-10 * math.log(2e-10)), rtol=1e-5)
  grad = jax.grad(lambda s: losses.distill_kl(s, t, temperature=T, direction="old_new"))(s)
  assert np.all(np.isfinite(grad))


def test_distill_kl_teacher_gets_no_gradient():
  """Gradient flows to the student only."""
  grad_t = jax.grad(lambda t: jnp.sum(losses.distill_kl(STUDENT, t, temperature=T)))(jnp.asarray(TEACHER))
  np.testing.assert_array_equal(grad_t, np.zeros_like(TEACHER))
  grad_s = jax.grad(lambda s: jnp.sum(losses.distill_kl(s, TEACHER, temperature=T)))(jnp.asarray(STUDENT))
  assert np.all(np.abs(np.asarray(grad_s)).sum(-1) > 0)


def test_distill_kl_rejects_unknown_direction():
  with pytest.raises(ValueError, match="direction"):
    losses.distill_kl(STUDENT, TEACHER, temperature=T, direction="both")


# --------------------------------------------------------------------------- cross_entropy


def test_cross_entropy_hand_value():
  """Logits (2, 0) with label 0 and (0, 0) with label 1: mean of ln(1 + e^-2) and ln 2."""
  got = losses.cross_entropy(jnp.array([[2.0, 0.0], [0.0, 0.0]]), jnp.array([0, 1]))
  np.testing.assert_allclose(got, (math.log1p(math.exp(-2.0)) + math.log(2.0)) / 2, rtol=1e-6)
  np.testing.assert_allclose(got, 0.4100378, rtol=1e-6)


# --------------------------------------------------------------------------- old tasks


def _stacked_logits(k_tasks=4, n=3, c=5, seed=0):
  rng = np.random.default_rng(seed)
  return (jnp.asarray(rng.normal(size=(k_tasks, n, c)), jnp.float32),
          jnp.asarray(rng.normal(size=(k_tasks, n, c)), jnp.float32))


def _old_mask(k, k_tasks=4):
  return jnp.arange(k_tasks) < k


def _distill(student, teacher, mask, reduction="mean", direction="old_new"):
  return losses.distill_old_tasks(student, teacher, mask, temperature=T, direction=direction,
                                  reduction=reduction)


def test_reduce_old_tasks_hand_values():
  """Per-task (1, 2, 3, 4) with tasks 0 and 1 old: mean 1.5, sum 3; k = 0: exactly 0."""
  per_task = jnp.array([1.0, 2.0, 3.0, 4.0])
  assert float(losses.reduce_old_tasks(per_task, _old_mask(2), "mean")) == 1.5
  assert float(losses.reduce_old_tasks(per_task, _old_mask(2), "sum")) == 3.0
  assert float(losses.reduce_old_tasks(per_task, _old_mask(0), "mean")) == 0.0
  assert float(losses.reduce_old_tasks(per_task, _old_mask(0), "sum")) == 0.0
  # An infinite loss on a masked task does not leak into the value.
  assert float(losses.reduce_old_tasks(jnp.array([1.0, jnp.inf]), jnp.array([True, False]))) == 1.0
  with pytest.raises(ValueError, match="reduction"):
    losses.reduce_old_tasks(per_task, _old_mask(2), "max")


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_distill_old_tasks_zero_without_old_task(reduction):
  """k = 0 (first task): L_sm = L_sp = 0.0 exactly, and so is the gradient."""
  s, t = _stacked_logits()
  assert float(_distill(s, t, _old_mask(0), reduction)) == 0.0
  grad = jax.grad(lambda s: _distill(s, t, _old_mask(0), reduction))(s)
  np.testing.assert_array_equal(grad, np.zeros_like(s))


@pytest.mark.parametrize("direction", ["old_new", "new_old"])
def test_distill_old_tasks_matches_numpy(direction):
  """k = 3 of 4 tasks: mean over old tasks of the per-task mean KL over examples."""
  s, t = _stacked_logits()
  per_task = _np_kl(s, t, T, direction).mean(-1)
  np.testing.assert_allclose(_distill(s, t, _old_mask(3), "mean", direction), per_task[:3].mean(), rtol=1e-5)
  np.testing.assert_allclose(_distill(s, t, _old_mask(3), "sum", direction), per_task[:3].sum(), rtol=1e-5)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_distill_old_tasks_ignores_masked_tasks(k):
  """Changing the logits of tasks j >= k (student or teacher) does not change the value, and
  the student gradient is exactly zero there (nonzero on every old task)."""
  s, t = _stacked_logits()
  s2, t2 = _stacked_logits(seed=1)
  s_changed = s.at[k:].set(s2[k:] * 10)
  t_changed = t.at[k:].set(t2[k:] * 10)
  mask = _old_mask(k)
  for reduction in losses.REDUCTIONS:
    base = float(_distill(s, t, mask, reduction))
    assert float(_distill(s_changed, t_changed, mask, reduction)) == base
    grad = jax.grad(lambda s, reduction=reduction: _distill(s, t, mask, reduction))(s)
    np.testing.assert_array_equal(grad[k:], np.zeros_like(grad[k:]))
    assert np.all(np.abs(np.asarray(grad[:k])).sum(axis=(1, 2)) > 0)


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_mean_and_sum_differ_by_number_of_old_tasks(k):
  """sum (official) = k * mean (paper) with k old tasks."""
  s, t = _stacked_logits()
  mean = float(_distill(s, t, _old_mask(k), "mean"))
  total = float(_distill(s, t, _old_mask(k), "sum"))
  assert mean > 0
  np.testing.assert_allclose(total, k * mean, rtol=1e-6)


# --------------------------------------------------------------------------- jit / no jit


class VariantsTest(chex.TestCase):
  """The loss functions give the same values with and without jit."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_distill_kl(self):
    for direction in losses.KL_DIRECTIONS:
      fn = self.variant(lambda s, t, d=direction: losses.distill_kl(s, t, temperature=T, direction=d))
      got = fn(jnp.asarray(STUDENT), jnp.asarray(TEACHER))
      np.testing.assert_allclose(got, _np_kl(STUDENT, TEACHER, T, direction), rtol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_distill_old_tasks(self):
    s, t = _stacked_logits()
    fn = self.variant(lambda s, t, m: _distill(s, t, m, "sum"))
    per_task = _np_kl(s, t, T, "old_new").mean(-1)
    for k in range(5):  # the mask is traced: one compilation serves every k
      np.testing.assert_allclose(fn(s, t, _old_mask(k)), per_task[:k].sum(), rtol=1e-5, atol=1e-7)
