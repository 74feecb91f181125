"""The quadratic penalty EWC and SI share: sum_i importance_i (theta_i - anchor_i)^2."""

import jax
import jax.numpy as jnp


def penalty(params, anchor, importance) -> jax.Array:
  """sum over every parameter of importance * (params - anchor)^2 (pytrees of equal structure)."""
  terms = jax.tree_util.tree_map(lambda p, a, w: jnp.sum(w * jnp.square(p - a)), params, anchor, importance)
  return sum(jax.tree_util.tree_leaves(terms))
