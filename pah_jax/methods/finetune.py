"""Fine-tuning and joint training: the lower and upper bounds of every table.

finetune: one shared backbone and one stored linear head per task, trained on each task in
  turn with plain cross-entropy; nothing protects old tasks (old heads are frozen, the
  backbone is not), so its forgetting is what the other methods are measured against.
joint: the same model trained once on the union of all tasks (each example through its own
  task's head): the multi-task upper bound. It has no sequence, so only the last row of its
  accuracy matrix is measured and its forgetting is undefined (null). Its batches mix the
  tasks, so it tests with BatchNorm's running statistics (joint.eval_batch_norm, read by
  pah.eval_batch_norm).
"""

import functools

from pah_jax import optim
from pah_jax.methods import base
from pah_jax.methods import heads


def build(setup: base.Setup, joint: bool = False) -> base.Method:
  optimizer = optim.main_optimizer(setup.config.optim, ("backbone", "heads"))
  return base.Method(
      name="joint" if joint else "finetune", metric_names=heads.BASE_METRICS,
      init=functools.partial(heads.init, setup), optimizer=optimizer,
      step=heads.multihead_step(setup, optimizer, joint=joint),
      logits=heads.evaluation_logits(setup), joint=joint)


build_joint = functools.partial(build, joint=True)
