"""DER++: Dark Experience Replay++ (Buzzega, Boschini, Porrello, Abati & Calderara, NeurIPS 2020).

L = CE(current head) + alpha * MSE(h(x'), z') + beta * CE(h(x''), y'')
(x', z') and (x'', y'') are two independent batches of a reservoir buffer of
`derpp.buffer_size` examples stored with the logits z the model gave them when they were
inserted (each example through its own task's head). Every training batch is offered to the
buffer after the step. Buzzega et al., seq-CIFAR-10, buffer 200: alpha 0.1, beta 0.5.
Config: section `derpp` (buffer_size, alpha, beta, buffer_batch), optim.lr_heads.
"""

import ml_collections

from pah_jax.methods.registry import Declaration


def derpp_config() -> ml_collections.ConfigDict:
  r = ml_collections.ConfigDict()
  r.buffer_size = 200  # reservoir buffer (examples, with their logits), as the paper's DER row
  r.alpha = 0.1  # logit-matching weight (Buzzega et al. 2020, seq-CIFAR-10, buffer 200)
  r.beta = 0.5  # buffer cross-entropy weight (same source)
  r.buffer_batch = 64  # buffer examples per term and step
  return r


METHOD = Declaration(
    name="derpp",
    description="DER++ (Buzzega et al. 2020), buffer {derpp.buffer_size}",
    sections={"derpp": derpp_config},
    reads=("optim.lr_heads",),
    ranges={"derpp.buffer_size": (1, None, False), "derpp.alpha": (0.0, None, False),
            "derpp.beta": (0.0, None, False), "derpp.buffer_batch": (1, None, False)},
    streams={"buffer_batch": 5, "buffer_insert": 6},
)


def build(setup):
  import jax.numpy as jnp

  from pah_jax import losses
  from pah_jax.methods import base
  from pah_jax.methods import heads
  from pah_jax.methods import memory as memory_lib

  s = setup.settings("derpp")
  b = s.buffer_batch

  def regularizer(params, state, batch, feats):
    buffer = state.extra["buffer"]
    idx = base.sample_rows(base.step_key(state, METHOD.streams["buffer_batch"]), 2 * b, memory_lib.filled(buffer))
    task_ids, labels = base.split_global_labels(buffer["labels"][idx], setup.num_classes)
    # Both buffer batches in one backbone pass of their own (its statistics are discarded).
    buf_feats, _ = heads.features(setup, params, state.batch_stats, setup.normalize(buffer["images"][idx]),
                                  batch_statistics=True)
    logits = heads.example_logits(params["heads"], buf_feats, task_ids)
    l_mse = jnp.mean(jnp.square(logits[:b] - buffer["logits"][idx[:b]]))
    l_ce = losses.cross_entropy(logits[b:], labels[b:])
    used = (buffer["count"] > 0).astype(jnp.float32)  # the very first step has no buffer yet
    l_mse, l_ce = used * l_mse, used * l_ce
    return s.alpha * l_mse + s.beta * l_ce, {"loss_logits": l_mse, "loss_buffer_ce": l_ce}

  def after_update(state, batch, new_params, grads, logits):
    glob = base.global_labels(batch.labels, batch.task_id, setup.num_classes)
    buffer = memory_lib.reservoir_add(state.extra["buffer"], base.step_key(state, METHOD.streams["buffer_insert"]),
                                      batch.raw, glob, logits)
    return {"buffer": buffer}

  return heads.method(
      setup, "derpp", metric_names=heads.BASE_METRICS + ("loss_logits", "loss_buffer_ce"),
      regularizer=regularizer, after_update=after_update,
      init_extra=lambda params, batch_stats: {
          "buffer": memory_lib.empty(s.buffer_size, setup.image_shape, setup.num_classes)})
