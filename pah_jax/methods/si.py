"""Synaptic Intelligence (Zenke, Poole & Ganguli, ICML 2017).

L = CE(current head) + c sum_i Omega_i (theta_i - theta*_i)^2
During a task every step adds -g_i * delta_theta_i to the path integral omega_i, with g the
gradient of the task loss alone (the penalty's own gradient is removed, as in the authors'
code). After task k: Omega += omega / ((theta_end - theta_start)^2 + xi), omega <- 0,
theta* <- theta_end. A parameter that never moves (a frozen old head) accumulates nothing.
Zenke et al. used c = 0.1 and xi = 0.1 on split CIFAR. Config: section `si` (strength = c,
damping = xi), optim.lr_heads.
"""

import ml_collections

from pah_jax.methods.registry import Declaration


def si_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.strength = 0.1  # c of Zenke et al. 2017 (penalty c sum Omega (theta - theta*)^2)
  c.damping = 0.1  # xi of Zenke et al. 2017
  return c


METHOD = Declaration(
    name="si",
    description="SI (Zenke et al. 2017)",
    sections={"si": si_config},
    reads=("optim.lr_heads",),
    ranges={"si.strength": (0.0, None, False), "si.damping": (0.0, None, True)},
)


def build(setup):
  import jax
  import jax.numpy as jnp

  from pah_jax.methods import base
  from pah_jax.methods import heads
  from pah_jax.methods import quadratic

  s = setup.settings("si")
  tmap = jax.tree_util.tree_map

  def regularizer(params, state, batch, feats):
    l_si = quadratic.penalty(params, state.extra["anchor"], state.extra["omega"])
    return s.strength * l_si, {"loss_si": l_si}

  def after_update(state, batch, new_params, grads, logits):
    extra = state.extra
    # Gradient of the task loss alone: the penalty's gradient is 2 c Omega (theta - theta*).
    task_grads = tmap(lambda g, w, p, a: g - 2.0 * s.strength * w * (p - a),
                      grads, extra["omega"], state.params, extra["anchor"])
    path = tmap(lambda w, g, new, old: w - g * (new - old), extra["path"], task_grads, new_params, state.params)
    return {**extra, "path": path}

  def begin_task(state, task_id):
    return state.replace(extra={**state.extra, "start": state.params, "path": base.tree_zeros_like(state.params)})

  def end_task(state, images_u8, labels, num_valid, task_id):
    extra = state.extra
    omega = tmap(lambda o, w, p, st: o + w / (jnp.square(p - st) + s.damping),
                 extra["omega"], extra["path"], state.params, extra["start"])
    return state.replace(extra={"omega": omega, "path": base.tree_zeros_like(state.params),
                                "anchor": state.params, "start": state.params})

  def init_extra(params, batch_stats):
    zeros = base.tree_zeros_like(params)
    return {"omega": zeros, "path": zeros, "anchor": params, "start": params}

  return heads.method(
      setup, "si", metric_names=heads.BASE_METRICS + ("loss_si",), regularizer=regularizer,
      after_update=after_update, init_extra=init_extra, begin_task=begin_task, end_task=end_task,
      step_keeps=("omega", "anchor", "start"))
