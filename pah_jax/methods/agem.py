"""Averaged Gradient Episodic Memory (Chaudhry, Ranzato, Rohrbach & Elhoseiny, ICLR 2019).

Each step computes the task gradient g and a reference gradient g_ref on a random batch of
the episodic memory (examples of earlier tasks, each through its own head). If g . g_ref < 0
the update uses g - (g . g_ref / g_ref . g_ref) g_ref, the closest gradient that does not
increase the memory loss to first order; otherwise g itself. The memory holds
`agem.memory_size` examples split equally over the tasks, filled when a task ends.
Config: section `agem` (memory_size, memory_batch), optim.lr_heads.
"""

import ml_collections

from pah_jax.errors import UserError
from pah_jax.methods.registry import Declaration


def agem_config() -> ml_collections.ConfigDict:
  a = ml_collections.ConfigDict()
  a.memory_size = 200  # episodic memory, split equally over the tasks (examples, uint8)
  a.memory_batch = 64  # memory examples per reference gradient
  return a


def check(config: ml_collections.ConfigDict) -> None:
  if config.agem.memory_size < config.data.num_tasks:
    raise UserError(f"config agem.memory_size={config.agem.memory_size} must be at least data.num_tasks="
                    f"{config.data.num_tasks}: the memory holds an equal share of every task")


METHOD = Declaration(
    name="agem",
    description="A-GEM (Chaudhry et al. 2019), memory {agem.memory_size}",
    sections={"agem": agem_config},
    reads=("optim.lr_heads",),
    ranges={"agem.memory_size": (1, None, False), "agem.memory_batch": (1, None, False)},
    check=check,
    streams={"memory_batch": 5, "memory_fill": 6},
)


def project(grads, reference):
  """A-GEM's projection: grads if grads . reference >= 0, else grads minus its component
  along reference."""
  import jax
  import jax.numpy as jnp

  from pah_jax.methods import base

  dot, ref_sq = base.tree_dot(grads, reference), base.tree_dot(reference, reference)
  scale = jnp.where(dot < 0, dot / jnp.maximum(ref_sq, 1e-12), 0.0)
  return jax.tree_util.tree_map(lambda g, r: g - scale * r, grads, reference)


def build(setup):
  import jax
  import jax.numpy as jnp

  from pah_jax import losses
  from pah_jax.methods import base
  from pah_jax.methods import heads
  from pah_jax.methods import memory as memory_lib

  s = setup.settings("agem")

  def memory_loss(params, state, images_u8, glob):
    task_ids, labels = base.split_global_labels(glob, setup.num_classes)
    feats, _ = heads.features(setup, params, state.batch_stats, setup.normalize(images_u8), batch_statistics=True)
    return losses.cross_entropy(heads.example_logits(params["heads"], feats, task_ids), labels)

  def transform_grads(state, batch, grads):
    memory = state.extra["memory"]
    idx = base.sample_rows(base.step_key(state, METHOD.streams["memory_batch"]), s.memory_batch, memory["count"])

    reference = jax.grad(memory_loss)(state.params, state, memory["images"][idx], memory["labels"][idx])
    # No memory before the first task ends: the reference pass then sees empty slots and is
    # ignored. Computed anyway rather than under lax.cond, whose branches XLA's CPU backend
    # runs an order of magnitude slower when they hold convolutions.
    reference = jax.tree_util.tree_map(lambda r: jnp.where(memory["count"] > 0, r, 0.0), reference)
    return project(grads, reference)

  def end_task(state, images_u8, labels, num_valid, task_id):
    key = base.task_key(state, METHOD.streams["memory_fill"], task_id)
    memory = memory_lib.add_task(state.extra["memory"], key, images_u8, labels, num_valid, task_id,
                                 setup.num_tasks, setup.num_classes)
    return state.replace(extra={"memory": memory})

  if memory_lib.slots_per_task(s.memory_size, setup.num_tasks) < 1:
    raise UserError("config agem.memory_size must be at least data.num_tasks")
  return heads.method(
      setup, "agem", transform_grads=transform_grads,
      init_extra=lambda params, batch_stats: {"memory": memory_lib.empty(s.memory_size, setup.image_shape)},
      end_task=end_task, step_keeps=("memory",))
