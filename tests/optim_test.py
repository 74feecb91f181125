"""Who is updated by what: per-group AdamW and the prototype-only optimiser."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import default
from pah_jax import optim


def _params_and_grads(seed=0):
  """A params pytree with PAH's three groups (nested like real ones) and dense random grads."""
  rng = np.random.default_rng(seed)
  f = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
  params = {"backbone": {"conv1": {"kernel": f(3, 3, 3, 4)}, "bn1": {"scale": f(4), "bias": f(4)}},
            "hypernet": {"in": {"kernel": f(8, 5)}, "out": {"kernel": f(5, 6)}},
            "prototypes": f(3, 2, 4, 4, 1)}
  grads = jax.tree_util.tree_map(lambda p: f(*p.shape), params)
  return params, grads


def _optim_config(**overrides):
  o = default.get_config().optim
  for k, v in overrides.items():
    o[k] = v
  return o


def _leaves_equal(a, b):
  return all(np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def test_param_labels():
  """Every leaf is labelled by its top-level group."""
  params, _ = _params_and_grads()
  labels = optim.param_labels(params)
  assert labels == {"backbone": {"conv1": {"kernel": "backbone"}, "bn1": {"scale": "backbone", "bias": "backbone"}},
                    "hypernet": {"in": {"kernel": "hypernet"}, "out": {"kernel": "hypernet"}},
                    "prototypes": "prototypes"}


def test_prototype_optimizer_freezes_backbone_and_hypernet():
  """One update: backbone and hypernet updates are exactly zero and those leaves bit-identical
  after apply_updates, for several steps; every prototype moves (by about lr on step 1)."""
  params, grads = _params_and_grads()
  config = _optim_config()
  opt = optim.prototype_optimizer(config)
  state = opt.init(params)
  new = params
  for i in range(3):
    updates, state = opt.update(jax.tree_util.tree_map(lambda g, i=i: g * (i + 1), grads), state, new)
    for group in ("backbone", "hypernet"):
      for u in jax.tree_util.tree_leaves(updates[group]):
        np.testing.assert_array_equal(u, np.zeros_like(u))
    if i == 0:
      step = np.abs(np.asarray(updates["prototypes"]))
      assert np.all(step > 0)
      np.testing.assert_allclose(step, config.lr_prototypes, rtol=0.05)
    new = optax.apply_updates(new, updates)
  assert _leaves_equal(new["backbone"], params["backbone"])
  assert _leaves_equal(new["hypernet"], params["hypernet"])
  assert np.all(np.asarray(new["prototypes"]) != np.asarray(params["prototypes"]))


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_main_optimizer_per_group_learning_rates(weight_decay):
  """First AdamW step: update = -lr_g * (g / (|g| + eps) + wd * p) for each group g, i.e. every
  parameter moves by ~lr of its group (backbone 1e-4, hypernet 3e-3, prototypes 2e-2 here)."""
  lrs = {"backbone": 1e-4, "hypernet": 3e-3, "prototypes": 2e-2}
  config = _optim_config(lr_backbone=lrs["backbone"], lr_hypernet=lrs["hypernet"],
                         lr_prototypes=lrs["prototypes"], weight_decay=weight_decay)
  params, grads = _params_and_grads()
  opt = optim.main_optimizer(config)
  updates, _ = opt.update(grads, opt.init(params), params)
  for group, lr in lrs.items():
    for u, g, p in zip(*(jax.tree_util.tree_leaves(t[group]) for t in (updates, grads, params))):
      g, p = np.asarray(g, np.float64), np.asarray(p, np.float64)
      expected = -lr * (g / (np.abs(g) + config.eps) + weight_decay * p)
      np.testing.assert_allclose(u, expected, rtol=1e-5)
      if weight_decay == 0.0:
        np.testing.assert_allclose(np.abs(u), lr, rtol=1e-3)  # |g| >> eps


def test_main_optimizer_default_groups():
  """The default config: backbone 1e-4, hypernet and prototypes 1e-3 (the official AdamW groups)."""
  config = _optim_config(weight_decay=0.0)
  assert optim.learning_rates(config) == {"backbone": 1e-4, "hypernet": 1e-3, "prototypes": 1e-3,
                                         "heads": 1e-3, "embeddings": 1e-3}
  params, grads = _params_and_grads(seed=3)
  opt = optim.main_optimizer(config)
  updates, _ = opt.update(grads, opt.init(params), params)
  assert np.allclose(np.abs(np.asarray(updates["backbone"]["conv1"]["kernel"])), 1e-4, rtol=1e-3)
  assert np.allclose(np.abs(np.asarray(updates["hypernet"]["out"]["kernel"])), 1e-3, rtol=1e-3)
  assert np.allclose(np.abs(np.asarray(updates["prototypes"])), 1e-3, rtol=1e-3)
