"""Learning without Forgetting (Li & Hoiem, ECCV 2016 / TPAMI 2017), task-incremental.

L = CE(current head) + alpha * (1/(k-1)) sum_{j<k} T^2 KL(old_j(x) || new_j(x))
The old model (backbone and heads, frozen at the end of the previous task) labels the current
images through every old head; the new model's old heads must keep those soft answers.
Li & Hoiem: T = 2, lambda_o (alpha) = 1. Here the old heads stay frozen (the original also
fine-tunes them), so the distillation acts on the shared backbone; it is averaged over old
tasks so alpha keeps its meaning as tasks accumulate. Config: section `lwf`, optim.lr_heads.
"""

import ml_collections

from pah_jax.methods.registry import Declaration


def lwf_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.alpha = 1.0  # Li & Hoiem 2017: lambda_o = 1
  c.temperature = 2.0  # Li & Hoiem 2017: T = 2
  return c


METHOD = Declaration(
    name="lwf",
    description="LwF (Li & Hoiem 2017)",
    sections={"lwf": lwf_config},
    reads=("optim.lr_heads",),
    ranges={"lwf.alpha": (0.0, None, False), "lwf.temperature": (0.0, None, True)},
)


def build(setup):
  import jax
  import jax.numpy as jnp

  from pah_jax import losses
  from pah_jax.methods import heads

  s, nets = setup.settings("lwf"), setup.nets

  def regularizer(params, state, batch, feats):
    old = state.extra
    teacher_feats, _ = heads.features(setup, old["params"], old["batch_stats"], batch.images,
                                      batch_statistics=nets.teacher_batch_stats)
    teacher = heads.all_logits(old["params"]["heads"], jax.lax.stop_gradient(teacher_feats))
    student = heads.all_logits(params["heads"], feats)
    old_mask = jnp.arange(setup.num_tasks) < batch.task_id
    l_kd = losses.distill_old_tasks(student, teacher, old_mask, temperature=s.temperature,
                                    direction="old_new", reduction="mean")
    return s.alpha * l_kd, {"loss_distill": l_kd}

  def end_task(state, images_u8, labels, num_valid, task_id):
    return state.replace(extra={"params": state.params, "batch_stats": state.batch_stats})

  return heads.method(
      setup, "lwf", metric_names=heads.BASE_METRICS + ("loss_distill",), regularizer=regularizer,
      init_extra=lambda params, batch_stats: {"params": params, "batch_stats": batch_stats},
      end_task=end_task, step_keeps=("params", "batch_stats"))
