"""Who is updated by what: every optimiser and freezing policy of PAH, in one place.

- The main update, from L_hm + lambda_sm L_sm, moves backbone, hypernetwork and prototypes,
  each parameter group with its own AdamW learning rate.
- A parameter group may be held for some steps (`keep_group`): PAH's head warm-up holds the
  backbone while a new task's generated head fits it.
- The prototype update, from L_sp, moves ONLY the prototypes: the same parameter labels route
  the backbone and hypernetwork to `optax.set_to_zero()`, so their leaves are bit-identical
  after it. (official preset: this is the authors' second AdamW on the prototypes, fed
  grad(L_hm + lambda_sm L_sm) + grad(L_sp); paper preset: fed lambda_sp grad(L_sp) only.)
"""

import jax
import jax.numpy as jnp
import ml_collections
import optax

PARAM_GROUPS = ("backbone", "hypernet", "prototypes")  # PAH's groups


def param_labels(params: dict) -> dict:
  """Labels every leaf with its top-level group name ("backbone", "hypernet", ...)."""
  return {group: jax.tree_util.tree_map(lambda _, g=group: g, subtree) for group, subtree in params.items()}


def _adamw(optim: ml_collections.ConfigDict, learning_rate: float) -> optax.GradientTransformation:
  return optax.adamw(learning_rate, b1=optim.b1, b2=optim.b2, eps=optim.eps,
                     weight_decay=optim.weight_decay)


def learning_rates(optim: ml_collections.ConfigDict) -> dict[str, float]:
  return {"backbone": optim.lr_backbone, "hypernet": optim.lr_hypernet, "prototypes": optim.lr_prototypes,
          "heads": optim.lr_heads, "embeddings": optim.lr_prototypes}


def main_optimizer(optim: ml_collections.ConfigDict, groups=PARAM_GROUPS) -> optax.GradientTransformation:
  """AdamW with per-group learning rates over the given top-level parameter groups
  (PAH: backbone, hypernetwork and prototypes; baselines: backbone and heads)."""
  rates = learning_rates(optim)
  return optax.multi_transform({g: _adamw(optim, rates[g]) for g in groups}, param_labels)


def prototype_optimizer(optim: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """AdamW on the prototypes; every other group is frozen (its update is exactly zero)."""
  transforms = {g: optax.set_to_zero() for g in PARAM_GROUPS if g != "prototypes"}
  transforms["prototypes"] = _adamw(optim, optim.lr_prototypes)
  return optax.multi_transform(transforms, param_labels)


def keep_group(group: str, keep, old_params, new_params, old_opt_state, new_opt_state):
  """A `main_optimizer` update undone for one parameter group where `keep` (a traced bool): the
  group's parameters and AdamW moments stay exactly as before the update, every other group
  keeps its update. Returns (params, opt_state)."""
  def pick(old, new):
    return jax.tree_util.tree_map(lambda o, n: jnp.where(keep, o, n), old, new)

  params = {**new_params, group: pick(old_params[group], new_params[group])}
  inner = {**new_opt_state.inner_states,
           group: pick(old_opt_state.inner_states[group], new_opt_state.inner_states[group])}
  return params, new_opt_state._replace(inner_states=inner)
