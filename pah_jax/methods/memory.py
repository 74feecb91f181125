"""Replay memories for the rehearsal baselines, as fixed-size device arrays in the train state.

Examples are stored as uint8 images with global labels (task * C + label), so every stored
example is scored by its own task's head. Shapes never change, so steps compile once.
- `episodic`: A-GEM's memory, an equal share of slots per task, filled at the end of a task.
- `reservoir`: DER++'s buffer, reservoir sampling over the whole stream (Vitter 1985): the
  n-th example seen is kept with probability size / n, so the buffer is a uniform sample of
  everything seen, with the logits the model gave it when it was inserted.
"""

import jax
import jax.numpy as jnp


def empty(size: int, image_shape, num_classes: int = 0) -> dict:
  memory = {"images": jnp.zeros((size,) + tuple(image_shape), jnp.uint8),
            "labels": jnp.zeros((size,), jnp.int32), "count": jnp.zeros((), jnp.int32)}
  if num_classes:
    memory["logits"] = jnp.zeros((size, num_classes), jnp.float32)
  return memory


def slots_per_task(size: int, num_tasks: int) -> int:
  return size // num_tasks


def add_task(memory: dict, key, images_u8, labels, num_valid, task_id, num_tasks: int, num_classes: int) -> dict:
  """Episodic memory: task `task_id`'s share of slots gets a random sample (without replacement)
  of its first `num_valid` examples. `count` = filled slots, tasks 0..task_id."""
  per_task = slots_per_task(memory["labels"].shape[0], num_tasks)
  scores = jnp.where(jnp.arange(labels.shape[0]) < num_valid, jax.random.uniform(key, labels.shape), 2.0)
  chosen = jnp.argsort(scores)[:per_task]
  start = task_id * per_task
  images = jax.lax.dynamic_update_slice_in_dim(memory["images"], images_u8[chosen], start, axis=0)
  glob = task_id * num_classes + labels[chosen].astype(jnp.int32)
  stored = jax.lax.dynamic_update_slice_in_dim(memory["labels"], glob, start, axis=0)
  return {**memory, "images": images, "labels": stored, "count": jnp.asarray((task_id + 1) * per_task, jnp.int32)}


def reservoir_add(memory: dict, key, images_u8, labels, logits) -> dict:
  """Reservoir sampling of a batch into the buffer; `count` = examples seen so far."""
  size = memory["labels"].shape[0]
  keys = jax.random.split(key, labels.shape[0])

  def insert(mem, example):
    k, x, y, z = example
    seen = mem["count"]
    slot = jnp.where(seen < size, seen, jax.random.randint(k, (), 0, seen + 1))
    keep = slot < size
    slot = jnp.minimum(slot, size - 1)
    new = {"images": mem["images"].at[slot].set(jnp.where(keep, x, mem["images"][slot])),
           "labels": mem["labels"].at[slot].set(jnp.where(keep, y, mem["labels"][slot])),
           "logits": mem["logits"].at[slot].set(jnp.where(keep, z, mem["logits"][slot])),
           "count": seen + 1}
    return new, None

  memory, _ = jax.lax.scan(insert, memory, (keys, images_u8, labels.astype(jnp.int32), logits.astype(jnp.float32)))
  return memory


def filled(memory: dict) -> jax.Array:
  """How many slots hold an example."""
  return jnp.minimum(memory["count"], memory["labels"].shape[0])
