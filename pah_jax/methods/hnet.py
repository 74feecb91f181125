"""hnet: PAH without prototypes. The same hypernetwork and the same L_hm + lambda_sm L_sm
(`pah.main_phase`), but the task code is a learned embedding vector, drawn as PAH's random
prototype init N(pah.random_init_mean, pah.random_init_std): what PAH minus its prototypes
achieves. Optionally von Oswald et al. (ICLR 2020)'s output regulariser
beta * mean_{j<k} ||Upsilon(e_j) - Upsilon*(e*_j)||^2 (hnet.output_reg, 0 = off): PAH's
`pah.head_drift`, weighted by hnet.output_reg in place of pah.lambda_hd.

TrainState.extra: the model frozen at the end of the previous task (`old_params`,
`old_batch_stats`) and the tasks' initial embeddings (`init_codes`).
Config: section `hnet`; reads PAH's sections `pah` and `hypernet`, optim.lr_hypernet and
optim.lr_prototypes (the embeddings' learning rate).
"""

import ml_collections

from pah_jax.methods import pah
from pah_jax.methods.registry import Declaration

METRICS = ("loss", "loss_hm", "loss_sm", "loss_output_reg", "train_accuracy")


def hnet_config() -> ml_collections.ConfigDict:
  n = ml_collections.ConfigDict()
  n.embedding_dim = 0  # 0 = the size of PAH's flattened prototypes (C*s*s*ch): same hypernetwork
  n.output_reg = 0.0  # von Oswald et al. 2020's beta: keep old heads' generated weights (0 = PAH minus prototypes)
  return n


METHOD = Declaration(
    name="hnet",
    description="hypernetwork + learned task embedding (PAH without prototypes)",
    sections={"hnet": hnet_config},
    reads=("pah", "hypernet", "optim.lr_hypernet", "optim.lr_prototypes"),
    ranges={"hnet.embedding_dim": (0, None, False), "hnet.output_reg": (0.0, None, False)},
)


def embedding_dim(config, image_shape, num_classes: int) -> int:
  """hnet's embedding size: hnet.embedding_dim, or (0) that of PAH's flattened prototypes."""
  p = config.pah
  return config.hnet.embedding_dim or num_classes * p.prototype_size**2 * (p.prototype_channels or image_shape[-1])


def build(setup):
  import jax.numpy as jnp
  import numpy as np

  from pah_jax import optim
  from pah_jax.methods import base

  config, nets = setup.config, pah.hypernet_networks(setup)
  # hnet's name for PAH's L_hd weight is von Oswald et al.'s beta, hnet.output_reg.
  s = setup.settings("pah").replace(lambda_hd=config.hnet.output_reg)
  dim = embedding_dim(config, setup.image_shape, setup.num_classes)
  rng = np.random.default_rng([config.seed, 0xE3B])
  init_embeddings = (s.random_init_mean + s.random_init_std * rng.standard_normal((setup.num_tasks, dim))
                     ).astype(np.float32)
  main_opt = optim.main_optimizer(config.optim, ("backbone", "hypernet", "embeddings"))

  def step(state, batch):
    (loss, (batch_stats, l_hm, l_sm, l_hd, accuracy)), grads = pah.main_phase(nets, s, state, batch.images,
                                                                             batch.labels, batch.task_id)
    params, opt_state = base.apply_optimizer(main_opt, state.params, grads, state.opt_state)
    metrics = {"loss": loss, "loss_hm": l_hm, "loss_sm": l_sm, "loss_output_reg": l_hd,
               "train_accuracy": accuracy}
    return state.replace(params=params, batch_stats=batch_stats, opt_state=opt_state), metrics

  return base.Method(
      name="hnet", metric_names=METRICS,
      init=lambda key: pah.init_params(nets, key, jnp.asarray(init_embeddings), setup.image_shape),
      optimizer=main_opt, step=step, logits=pah.evaluation_logits(nets),
      init_extra=lambda params, batch_stats: {"old_params": params, "old_batch_stats": batch_stats,
                                              "init_codes": jnp.asarray(init_embeddings)},
      begin_task=pah.make_begin_task(nets, prototype_logits=False), end_task=pah.end_task,
      step_keeps=("old_params", "old_batch_stats", "init_codes"))
