"""The networks every method runs on, and PAH's forward passes, as pure functions.

`Networks` holds the modules: the ResNet-18 backbone every method uses, and, for the
hypernetwork methods (pah, hnet), the hypernetwork. For PAH:
params = {"backbone": ..., "hypernet": ..., "prototypes": (K, C, s, s, ch)}
batch_stats = the backbone's BatchNorm running statistics.

Heads are never stored: theta_j = Upsilon(e_j) with e_j = flatten(P_j) is regenerated from
the prototypes whenever it is needed, for all K tasks at once (the hypernetwork is a batched
MLP over the task axis), and applied to features computed once per image batch.
"""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from pah_jax import images as images_lib
from pah_jax import models


@dataclasses.dataclass(frozen=True)
class Networks:
  """The static (non-parameter) half of the model: modules and sizes."""

  backbone: models.ResNet
  hypernet: models.Hypernetwork | None  # None for the stored-head methods
  num_tasks: int  # K
  num_classes: int  # C, classes per task
  head_bias: bool
  # BatchNorm outside the training forward: "running" statistics or "batch" statistics.
  batch_norm: str
  # Per pass, overriding `batch_norm` where set (config model.{teacher,prototype,eval}_batch_norm).
  teacher_batch_norm: str = ""
  prototype_batch_norm: str = ""
  eval_batch_norm: str = ""

  @property
  def feature_dim(self) -> int:
    return self.backbone.feature_dim

  @property
  def batch_stats_outside_training(self) -> bool:
    return self.batch_norm == "batch"

  def _batch_stats(self, override: str) -> bool:
    return (override or self.batch_norm) == "batch"

  @property
  def teacher_batch_stats(self) -> bool:
    """The frozen old model on the current images."""
    return self._batch_stats(self.teacher_batch_norm)

  @property
  def prototype_batch_stats(self) -> bool:
    """Student and teacher prototype passes f(p | j)."""
    return self._batch_stats(self.prototype_batch_norm)

  @property
  def eval_batch_stats(self) -> bool:
    """Test-set evaluation."""
    return self._batch_stats(self.eval_batch_norm)


_said = set()


def _say_once(line: str) -> None:
  """Prints `line` the first time this process builds networks with it (a run builds them once
  per seed; the benchmark once per row); of a multi-process run, process 0 alone prints."""
  if line not in _said:
    _said.add(line)
    if jax.process_index() == 0:
      print(line, flush=True)


def build_networks(config: ml_collections.ConfigDict, num_tasks: int, num_classes: int, *,
                   hypernet: bool = False) -> Networks:
  """The backbone of config.model, and with `hypernet` the hypernetwork of config.hypernet."""
  m = config.model
  dtype = jnp.bfloat16 if m.dtype == "bfloat16" else jnp.float32
  small_map_convs = models.resolve_small_map_convs(m.small_map_convs)
  _say_once(f"model.small_map_convs: {small_map_convs}"
            + (f" (auto on {jax.default_backend()})" if m.small_map_convs == "auto" else ""))
  backbone = models.ResNet18(width=m.width, stem=m.stem, dtype=dtype, conv_init=m.conv_init,
                             small_map_convs=small_map_convs)
  generator, head_bias = None, False
  if hypernet:
    h = config.hypernet
    head_bias = h.head_bias
    out = num_classes * backbone.feature_dim + (num_classes if head_bias else 0)
    generator = models.Hypernetwork(out_features=out, hidden=h.hidden, layers=h.layers, activation=h.activation,
                                    use_bias=h.use_bias, last_layer_scale=h.last_layer_scale)
  return Networks(backbone, generator, num_tasks, num_classes, head_bias, m.batch_norm, m.teacher_batch_norm,
                  m.prototype_batch_norm, m.eval_batch_norm)


def init_params(nets: Networks, key: jax.Array, prototypes: np.ndarray,
                image_shape: tuple[int, int, int]) -> tuple[dict, dict]:
  """Fresh (params, batch_stats); `prototypes` (K, C, s, s, ch) are the initial P."""
  k_backbone, k_hyper = jax.random.split(key)
  h, w, _ = image_shape
  variables = nets.backbone.init(k_backbone, jnp.zeros((1, h, w, images_lib.BACKBONE_CHANNELS)), train=False)
  prototypes = jnp.asarray(prototypes, jnp.float32)
  hyper = nets.hypernet.init(k_hyper, task_embeddings(prototypes))["params"]
  params = {"backbone": variables["params"], "hypernet": hyper, "prototypes": prototypes}
  return params, variables["batch_stats"]


def task_embeddings(prototypes: jax.Array) -> jax.Array:
  """e_k = flatten(P_k), class-major: (K, C, s, s, ch) -> (K, C*s*s*ch)."""
  return prototypes.reshape(prototypes.shape[0], -1)


def generate_heads(nets: Networks, hypernet_params, prototypes: jax.Array):
  """theta_k = Upsilon(e_k) for every task: weights (K, C, D) and biases (K, C) or None.
  `prototypes` (K, C, s, s, ch), or any (K, ...) task codes (hnet's embeddings (K, E))."""
  flat = nets.hypernet.apply({"params": hypernet_params}, task_embeddings(prototypes))
  k, c, d = prototypes.shape[0], nets.num_classes, nets.feature_dim
  weights = flat[:, :c * d].reshape(k, c, d)
  bias = flat[:, c * d:] if nets.head_bias else None
  return weights, bias


def apply_heads(features: jax.Array, weights: jax.Array, bias) -> jax.Array:
  """Every head on the same features: (N, D) x (K, C, D) -> logits (K, N, C)."""
  logits = jnp.einsum("nd,kcd->knc", features, weights)
  return logits if bias is None else logits + bias[:, None, :]


def backbone_features(nets: Networks, backbone_params, batch_stats, images: jax.Array, *,
                      batch_statistics: bool):
  """beta_theta(x) -> (features (N, D), batch_stats after the pass).

  With batch_statistics=True BatchNorm normalises with the batch's own statistics and the
  returned running statistics include this batch; callers keep them only for the current
  model's training batch (never for prototype or teacher passes: those statistics would drift
  away from the images that running-statistics evaluation sees).
  """
  images = images_lib.to_backbone_channels(images)
  variables = {"params": backbone_params, "batch_stats": batch_stats}
  if batch_statistics:
    features, updates = nets.backbone.apply(variables, images, train=True, mutable=["batch_stats"])
    return features, updates["batch_stats"]
  return nets.backbone.apply(variables, images, train=False), batch_stats


def task_codes(params) -> jax.Array:
  """What the hypernetwork reads per task: PAH's prototypes P, or hnet's learned embeddings."""
  return params["prototypes"] if "prototypes" in params else params["embeddings"]


def image_logits(nets: Networks, params, batch_stats, images: jax.Array, *, batch_statistics: bool):
  """f(x | j) for all K tasks from ONE backbone pass: (K, N, C), and the new batch_stats."""
  features, new_stats = backbone_features(nets, params["backbone"], batch_stats, images,
                                          batch_statistics=batch_statistics)
  weights, bias = generate_heads(nets, params["hypernet"], task_codes(params))
  return apply_heads(features, weights, bias), new_stats


def task_logits(nets: Networks, params, batch_stats, images: jax.Array, task_id, *,
                batch_statistics: bool) -> jax.Array:
  """f(x | task_id): (N, C), for evaluation. Only that task's head is applied."""
  features, _ = backbone_features(nets, params["backbone"], batch_stats, images,
                                  batch_statistics=batch_statistics)
  weights, bias = generate_heads(nets, params["hypernet"], task_codes(params))
  logits = features @ weights[task_id].T
  return logits if bias is None else logits + bias[task_id]


def prototype_logits(nets: Networks, params, batch_stats, *, batch_statistics: bool) -> jax.Array:
  """f(p | j) for every task j: its C prototypes through the backbone as images, then through
  the head generated from the same e_j. Returns (K, C, C); row c of [j] is prototype c.

  Prototypes are fed at their native s x s size as batches of their own (never mixed with
  image batches). With batch statistics each task's C prototypes form one batch, as the
  official code's per-task `pass_prototypes`; running statistics are never updated here.
  """
  protos = params["prototypes"]
  if batch_statistics:
    features = jax.vmap(
        lambda p: backbone_features(nets, params["backbone"], batch_stats, p, batch_statistics=True)[0]
    )(protos)
  else:
    k, c = protos.shape[:2]
    flat, _ = backbone_features(nets, params["backbone"], batch_stats, protos.reshape(k * c, *protos.shape[2:]),
                                batch_statistics=False)
    features = flat.reshape(k, c, -1)
  weights, bias = generate_heads(nets, params["hypernet"], protos)
  logits = jnp.einsum("kpd,kcd->kpc", features, weights)
  return logits if bias is None else logits + bias[:, None, :]
