"""Averaged Gradient Episodic Memory (Chaudhry, Ranzato, Rohrbach & Elhoseiny, ICLR 2019).

Each step computes the task gradient g and a reference gradient g_ref on a random batch of
the episodic memory (examples of earlier tasks, each through its own head). If g . g_ref < 0
the update uses g - (g . g_ref / g_ref . g_ref) g_ref, the closest gradient that does not
increase the memory loss to first order; otherwise g itself. The memory holds
`agem.memory_size` examples split equally over the tasks, filled when a task ends.
Config: agem.memory_size, agem.memory_batch.
"""

import functools

import jax
import jax.numpy as jnp

from pah_jax import losses
from pah_jax import optim
from pah_jax.methods import base
from pah_jax.methods import heads
from pah_jax.methods import memory as memory_lib

MEMORY_STREAM = 5  # PRNG streams: memory batches, memory filling
FILL_STREAM = 6


def project(grads, reference):
  """A-GEM's projection: grads if grads . reference >= 0, else grads minus its component
  along reference."""
  dot, ref_sq = base.tree_dot(grads, reference), base.tree_dot(reference, reference)
  scale = jnp.where(dot < 0, dot / jnp.maximum(ref_sq, 1e-12), 0.0)
  return jax.tree_util.tree_map(lambda g, r: g - scale * r, grads, reference)


def build(setup: base.Setup) -> base.Method:
  cfg = setup.config.agem
  optimizer = optim.main_optimizer(setup.config.optim, ("backbone", "heads"))

  def memory_loss(params, state, images_u8, glob):
    task_ids, labels = base.split_global_labels(glob, setup.num_classes)
    feats, _ = heads.features(setup, params, state.batch_stats, setup.normalize(images_u8), batch_statistics=True)
    return losses.cross_entropy(heads.example_logits(params["heads"], feats, task_ids), labels)

  def transform_grads(state, batch, grads):
    memory = state.extra["memory"]
    idx = base.sample_rows(base.step_key(state, MEMORY_STREAM), cfg.memory_batch, memory["count"])

    reference = jax.grad(memory_loss)(state.params, state, memory["images"][idx], memory["labels"][idx])
    # No memory before the first task ends: the reference pass then sees empty slots and is
    # ignored. Computed anyway rather than under lax.cond, whose branches XLA's CPU backend
    # runs ~20x slower when they hold convolutions (8.4 s versus 0.4 s per step, 2 cores).
    reference = jax.tree_util.tree_map(lambda r: jnp.where(memory["count"] > 0, r, 0.0), reference)
    return project(grads, reference)

  def end_task(state, images_u8, labels, num_valid, task_id):
    key = jax.random.fold_in(jax.random.fold_in(state.rng, FILL_STREAM), task_id)
    memory = memory_lib.add_task(state.extra["memory"], key, images_u8, labels, num_valid, task_id,
                                 setup.num_tasks, setup.num_classes)
    return state.replace(extra={"memory": memory})

  if memory_lib.slots_per_task(cfg.memory_size, setup.num_tasks) < 1:
    raise ValueError("agem.memory_size must be at least data.num_tasks")
  return base.Method(
      name="agem", metric_names=heads.BASE_METRICS,
      init=functools.partial(heads.init, setup), optimizer=optimizer,
      step=heads.multihead_step(setup, optimizer, transform_grads=transform_grads),
      logits=heads.evaluation_logits(setup),
      init_extra=lambda params, batch_stats: {"memory": memory_lib.empty(cfg.memory_size, setup.image_shape)},
      end_task=end_task)
