"""DER++: Dark Experience Replay++ (Buzzega, Boschini, Porrello, Abati & Calderara, NeurIPS 2020).

L = CE(current head) + alpha * MSE(h(x'), z') + beta * CE(h(x''), y'')
(x', z') and (x'', y'') are two independent batches of a reservoir buffer of
`derpp.buffer_size` examples stored with the logits z the model gave them when they were
inserted (each example through its own task's head). Every training batch is offered to the
buffer after the step. Buzzega et al., seq-CIFAR-10, buffer 200: alpha 0.1, beta 0.5.
Config: derpp.buffer_size, derpp.alpha, derpp.beta, derpp.buffer_batch.
"""

import functools

import jax.numpy as jnp

from pah_jax import losses
from pah_jax import optim
from pah_jax.methods import base
from pah_jax.methods import heads
from pah_jax.methods import memory as memory_lib

SAMPLE_STREAM = 5  # PRNG streams: buffer batches, reservoir decisions
INSERT_STREAM = 6


def build(setup: base.Setup) -> base.Method:
  cfg = setup.config.derpp
  optimizer = optim.main_optimizer(setup.config.optim, ("backbone", "heads"))
  b = cfg.buffer_batch

  def regularizer(params, state, batch, feats):
    buffer = state.extra["buffer"]
    idx = base.sample_rows(base.step_key(state, SAMPLE_STREAM), 2 * b, memory_lib.filled(buffer))
    task_ids, labels = base.split_global_labels(buffer["labels"][idx], setup.num_classes)
    # Both buffer batches in one backbone pass of their own (its statistics are discarded).
    buf_feats, _ = heads.features(setup, params, state.batch_stats, setup.normalize(buffer["images"][idx]),
                                  batch_statistics=True)
    logits = heads.example_logits(params["heads"], buf_feats, task_ids)
    l_mse = jnp.mean(jnp.square(logits[:b] - buffer["logits"][idx[:b]]))
    l_ce = losses.cross_entropy(logits[b:], labels[b:])
    used = (buffer["count"] > 0).astype(jnp.float32)  # the very first step has no buffer yet
    l_mse, l_ce = used * l_mse, used * l_ce
    return cfg.alpha * l_mse + cfg.beta * l_ce, {"loss_logits": l_mse, "loss_buffer_ce": l_ce}

  def after_update(state, batch, new_params, grads, logits):
    glob = base.global_labels(batch.labels, batch.task_id, setup.num_classes)
    buffer = memory_lib.reservoir_add(state.extra["buffer"], base.step_key(state, INSERT_STREAM),
                                      batch.raw, glob, logits)
    return {"buffer": buffer}

  return base.Method(
      name="derpp", metric_names=heads.BASE_METRICS + ("loss_logits", "loss_buffer_ce"),
      init=functools.partial(heads.init, setup), optimizer=optimizer,
      step=heads.multihead_step(setup, optimizer, regularizer=regularizer, after_update=after_update),
      logits=heads.evaluation_logits(setup),
      init_extra=lambda params, batch_stats: {
          "buffer": memory_lib.empty(cfg.buffer_size, setup.image_shape, setup.num_classes)})
