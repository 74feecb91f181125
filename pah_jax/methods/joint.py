"""Joint training: the multi-task upper bound of every table.

The fine-tuning model (`heads`) trained once on the union of all tasks, each example through
its own task's head. It has no sequence, so only the last row of its accuracy matrix is
measured and its forgetting is undefined (null). Its batches mix the tasks, so by default it
tests with BatchNorm's running statistics (joint.eval_batch_norm).
Config: section `joint`, optim.lr_heads.
"""

import ml_collections

from pah_jax.methods.registry import Declaration


def joint_config() -> ml_collections.ConfigDict:
  j = ml_collections.ConfigDict()
  # joint trains on batches that mix every task, so BatchNorm's batch statistics at test time
  # (one task's images per batch) are not what it trained under: test with the running
  # statistics of its mixed batches (docs/methods.md). "" = as model.eval_batch_norm / batch_norm.
  j.eval_batch_norm = "running"
  return j


METHOD = Declaration(
    name="joint",
    description="joint training on all tasks (upper bound)",
    sections={"joint": joint_config},
    reads=("optim.lr_heads",),
    choices={"joint.eval_batch_norm": ("", "running", "batch")},
)


def build(setup):
  from pah_jax.methods import heads

  return heads.method(setup, "joint", joint=True, eval_batch_norm=setup.config.joint.eval_batch_norm)
