"""PAH's forward passes, L_sp's gradient and BatchNorm hygiene.

Batched computations (all tasks' heads or logits at once) are compared with per-task ones:
the same function with sums in another order, within tests/tolerance.py's one-evaluation
bound (1e-5 relative); where BatchNorm normalises a handful of prototypes with their own
batch statistics, which rounding perturbs, 1e-4 to 1e-3.

Tiny networks throughout: ResNet-18 at width 0.125 (D = 64), K = 3 tasks of C = 2 classes,
4x4 prototypes, 16x16 images. Real parameters come from `train.create_state` (which calls
`networks.init_params`) once per session.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from pah_jax import images as images_lib
from pah_jax import losses
from pah_jax import networks
from pah_jax import optim
from pah_jax import train
from pah_jax.methods import base
from pah_jax.methods import pah as pah_method

K, C, S = 3, 2, 4
D = 64  # 512 * 0.125
IMAGE_SHAPE = (16, 16, 3)
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
# LLVM optimisation off: compiling these tiny programs is what costs time here (the random
# init compiles in ~2 s instead of ~17 s); the computation itself is unchanged.
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def _config(batch_norm="running", head_bias=False):
  c = default.get_config()
  c.model.width = 0.125
  c.model.batch_norm = batch_norm
  c.pah.prototype_size = S
  c.hypernet.head_bias = head_bias
  return c


def _nets(batch_norm="running", head_bias=False):
  return networks.build_networks(_config(batch_norm, head_bias), K, C, hypernet=True)


@functools.cache
def _tiny():
  """(initial prototypes, TrainState) of the tiny model, built once (jit: one compilation)."""
  protos = np.random.default_rng(0).normal(0.0, 1.0, (K, C, S, S, 3)).astype(np.float32)
  nets, config = _nets(), _config()
  del nets
  state = train.create_state(pah_method.build_for(config, protos, IMAGE_SHAPE, MEAN, STD), config)
  return protos, state


def _images(n=4, seed=0):
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, (n,) + IMAGE_SHAPE, dtype=np.uint8), np.arange(n) % C


def _perturbed(tree, scale=0.05, seed=1):
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(lambda x: x + scale * rng.normal(size=x.shape).astype(np.float32), tree)


def _random_hypernet_params(nets, seed=0):
  """Hypernet params of the right structure without the (slow to compile) random init."""
  abstract = jax.eval_shape(nets.hypernet.init, jax.random.PRNGKey(0),
                            jax.ShapeDtypeStruct((K, C * S * S * 3), jnp.float32))["params"]
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(lambda s: jnp.asarray(rng.normal(0, 0.1, s.shape), jnp.float32), abstract)


def _leaves_equal(a, b):
  la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  return len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb))


# --------------------------------------------------------------------------- networks and params


def test_build_networks_sizes():
  """Hypernet output = C * D (+ C with head_bias); hypernet input = C * s * s * ch; P as given."""
  nets = _nets()
  assert nets.feature_dim == D and nets.num_tasks == K and nets.num_classes == C
  assert nets.hypernet.out_features == C * D and not nets.head_bias
  assert _nets(head_bias=True).hypernet.out_features == C * D + C
  assert nets.hypernet.hidden == 16 and nets.hypernet.layers == 1 and not nets.hypernet.use_bias
  protos, state = _tiny()
  assert set(state.params) == {"backbone", "hypernet", "prototypes"}
  assert state.params["hypernet"]["in"]["kernel"].shape == (C * S * S * 3, 16)
  assert state.params["hypernet"]["out"]["kernel"].shape == (16, C * D)
  np.testing.assert_array_equal(state.params["prototypes"], protos)
  assert _leaves_equal(state.extra["old_params"], state.params)
  assert state.extra["teacher_proto_logits"].shape == (K, C, C)


def test_task_embeddings_class_major():
  """e_k = flatten(P_k): prototype 0 of task k first, then prototype 1."""
  protos = np.arange(K * C * S * S * 1, dtype=np.float32).reshape(K, C, S, S, 1)
  e = networks.task_embeddings(jnp.asarray(protos))
  assert e.shape == (K, C * S * S)
  for k in range(K):
    np.testing.assert_array_equal(e[k], np.concatenate([protos[k, 0].ravel(), protos[k, 1].ravel()]))


@pytest.mark.parametrize("stem", ["cifar", "imagenet"])
@pytest.mark.parametrize("s", [5, 10, 16, 20])
def test_prototype_and_image_shapes(stem, s):
  """Traced (no compute), width 0.25: s x s prototypes give (K, C, C) prototype logits and
  (C, D) features per task; 32x32 and 64x64 images give (K, N, C) logits, for both stems."""
  config = _config()
  config.model.width, config.model.stem, config.pah.prototype_size = 0.25, stem, s
  nets = networks.build_networks(config, K, C, hypernet=True)
  protos = jax.ShapeDtypeStruct((K, C, s, s, 1), jnp.float32)
  params, stats = jax.eval_shape(lambda p: networks.init_params(nets, jax.random.PRNGKey(0), p, (32, 32, 3)), protos)
  for batch_statistics in (False, True):
    out = jax.eval_shape(functools.partial(networks.prototype_logits, nets, batch_statistics=batch_statistics),
                         params, stats)
    assert out.shape == (K, C, C)
  feats, _ = jax.eval_shape(functools.partial(networks.backbone_features, nets, batch_statistics=False),
                            params["backbone"], stats, jax.ShapeDtypeStruct((C, s, s, 1), jnp.float32))
  assert feats.shape == (C, 128)
  for size in (32, 64):
    logits, _ = jax.eval_shape(functools.partial(networks.image_logits, nets, batch_statistics=True), params, stats,
                               jax.ShapeDtypeStruct((5, size, size, 3), jnp.float32))
    assert logits.shape == (K, 5, C)


# --------------------------------------------------------------------------- heads


@pytest.mark.parametrize("head_bias", [False, True])
def test_generate_heads_reshape(head_bias):
  """Hypernet output of task k, flat (C*D [+ C]), becomes W_k (C, D) row by row (row c =
  flat[c*D:(c+1)*D]) and, with head_bias, b_k = the last C numbers."""
  nets = _nets(head_bias=head_bias)
  hyper = _random_hypernet_params(nets)
  protos = jnp.asarray(np.random.default_rng(2).normal(size=(K, C, S, S, 3)), jnp.float32)
  weights, bias = networks.generate_heads(nets, hyper, protos)
  flat = np.asarray(nets.hypernet.apply({"params": hyper}, protos.reshape(K, -1)))
  assert weights.shape == (K, C, D)
  for k in range(K):
    for c in range(C):
      np.testing.assert_array_equal(weights[k, c], flat[k, c * D:(c + 1) * D])
  if head_bias:
    assert bias.shape == (K, C)
    np.testing.assert_array_equal(bias, flat[:, C * D:])
  else:
    assert bias is None and flat.shape == (K, C * D)


def test_generate_heads_depend_only_on_own_prototypes():
  """Task k's head is a function of P_k alone (batched MLP over tasks)."""
  nets = _nets()
  hyper = _random_hypernet_params(nets)
  protos = jnp.asarray(np.random.default_rng(2).normal(size=(K, C, S, S, 3)), jnp.float32)
  w1, _ = networks.generate_heads(nets, hyper, protos)
  w2, _ = networks.generate_heads(nets, hyper, protos.at[2].add(1.0))
  np.testing.assert_array_equal(w1[:2], w2[:2])
  assert not np.allclose(w1[2], w2[2])


@pytest.mark.parametrize("with_bias", [False, True])
def test_apply_heads(with_bias):
  """(N, D) x (K, C, D) [+ (K, C)] -> (K, N, C) with [k] = features @ W_k^T + b_k."""
  rng = np.random.default_rng(0)
  features = rng.normal(size=(5, D)).astype(np.float32)
  weights = rng.normal(size=(K, C, D)).astype(np.float32)
  bias = rng.normal(size=(K, C)).astype(np.float32) if with_bias else None
  logits = networks.apply_heads(jnp.asarray(features), jnp.asarray(weights), bias)
  assert logits.shape == (K, 5, C)
  for k in range(K):
    expected = features @ weights[k].T + (bias[k] if with_bias else 0.0)
    np.testing.assert_allclose(logits[k], expected, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- forwards


def test_image_logits_match_task_logits():
  """image_logits' [k] (one shared backbone pass for all K heads) equals task_logits(k)."""
  _, state = _tiny()
  nets = _nets()
  x, _ = _images()
  x = images_lib.normalize(x, MEAN, STD)
  all_logits, _ = jit(functools.partial(networks.image_logits, nets, batch_statistics=False))(
      state.params, state.batch_stats, x)
  assert all_logits.shape == (K, 4, C)
  per_task = jit(functools.partial(networks.task_logits, nets, batch_statistics=False))
  for k in range(K):
    np.testing.assert_allclose(per_task(state.params, state.batch_stats, x, k), all_logits[k], rtol=1e-5, atol=1e-5)


def _random_params(nets, s, seed=0):
  """Well-scaled random (params, batch_stats) for s x s prototypes, without the random init:
  He-normal kernels, BN scale 1 + noise, bias noise, running mean 0 and variance 1."""
  protos = jax.ShapeDtypeStruct((K, C, s, s, 3), jnp.float32)
  abstract = jax.eval_shape(lambda p: networks.init_params(nets, jax.random.PRNGKey(0), p, IMAGE_SHAPE), protos)
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key if path else "prototypes"
    if name == "kernel":
      return rng.normal(0.0, np.sqrt(2.0 / np.prod(leaf.shape[:-1])), leaf.shape)
    return {"scale": 1.0, "var": 1.0}.get(name, 0.0) + 0.1 * rng.normal(size=leaf.shape) * (name != "mean")

  params, stats = (jax.tree_util.tree_map_with_path(
      lambda p, x: jnp.asarray(fill(p, x), jnp.float32), tree) for tree in abstract)
  params["prototypes"] = jnp.asarray(rng.normal(size=(K, C, s, s, 3)), jnp.float32)
  return params, stats


@pytest.mark.parametrize("batch_norm", ["running", "batch"])
def test_prototype_logits_rows(batch_norm):
  """Row c of f(P | j) is prototype c of task j through the backbone (task j's C prototypes
  as one batch of their own in batch mode) and then through task j's generated head.
  (16x16 prototypes: at 4x4 the deepest BatchNorms see 2 numbers per channel in batch mode,
  so the features depend chaotically on rounding and no reference can match them.)"""
  config = _config(batch_norm)
  config.pah.prototype_size = 16
  nets = networks.build_networks(config, K, C, hypernet=True)
  bn_batch = nets.batch_stats_outside_training
  params, stats = _random_params(nets, 16)
  logits = jit(functools.partial(networks.prototype_logits, nets, batch_statistics=bn_batch))(params, stats)
  assert logits.shape == (K, C, C)
  weights, _ = networks.generate_heads(nets, params["hypernet"], params["prototypes"])
  features = jit(functools.partial(networks.backbone_features, nets, batch_statistics=bn_batch))
  rows = []
  for j in range(K):
    f_j, _ = features(params["backbone"], stats, params["prototypes"][j])
    rows.append(f_j @ weights[j].T)
    np.testing.assert_allclose(logits[j], rows[-1], rtol=1e-3, atol=1e-3)
  if bn_batch:  # one batch of all K * C prototypes would give other logits
    pooled, _ = features(params["backbone"], stats, params["prototypes"].reshape(K * C, 16, 16, 3))
    mixed = jnp.einsum("kpd,kcd->kpc", pooled.reshape(K, C, -1), weights)
    assert np.abs(np.asarray(mixed) - np.asarray(logits)).max() > 0.1


def test_grey_prototypes_repeated_for_backbone():
  """1-channel inputs go through the backbone as the same grey value on all 3 channels."""
  _, state = _tiny()
  nets = _nets()
  grey = jnp.asarray(np.random.default_rng(4).normal(size=(C, S, S, 1)), jnp.float32)
  fn = jit(functools.partial(networks.backbone_features, nets, batch_statistics=False))
  a, _ = fn(state.params["backbone"], state.batch_stats, grey)
  b, _ = fn(state.params["backbone"], state.batch_stats, jnp.repeat(grey, 3, axis=-1))
  np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- L_sp gradient


@pytest.mark.parametrize("batch_norm", ["running", "batch"])
def test_l_sp_gradient_reaches_only_old_prototypes(batch_norm):
  """task_id = 2 (old tasks 0 and 1): d L_sp / d P is nonzero on P_0 and P_1 and exactly zero on
  P_2, the current task's prototypes (its KL is masked out)."""
  _, state = _tiny()
  nets = _nets(batch_norm)
  config = _config(batch_norm)
  bn_batch = nets.batch_stats_outside_training
  old_params = _perturbed(state.params)
  old_mask = jnp.arange(K) < 2

  def l_sp(params, old_params, stats):
    student = networks.prototype_logits(nets, params, stats, batch_statistics=bn_batch)
    teacher = networks.prototype_logits(nets, old_params, stats, batch_statistics=bn_batch)
    return losses.distill_old_tasks(student, teacher, old_mask, temperature=config.pah.temperature,
                                    direction=config.pah.kl_direction, reduction=config.pah.old_task_reduction)

  value, grads = jit(jax.value_and_grad(l_sp))(state.params, old_params, state.batch_stats)
  assert float(value) > 0
  g = np.asarray(grads["prototypes"])
  assert g.shape == (K, C, S, S, 3)
  for j in (0, 1):
    assert np.all(np.isfinite(g[j])) and np.abs(g[j]).sum() > 0
    for c in range(C):  # every prototype of an old task gets a gradient
      assert np.abs(g[j, c]).sum() > 0
  np.testing.assert_array_equal(g[2], np.zeros_like(g[2]))


# --------------------------------------------------------------------------- BatchNorm hygiene


def test_prototype_and_teacher_passes_leave_running_stats():
  """prototype_logits (either BatchNorm mode) returns logits only, no statistics to
  keep; the teacher pass with running statistics returns the running statistics bit-identical;
  only a pass with batch_statistics=True returns changed statistics."""
  _, state = _tiny()
  stats = _perturbed(state.batch_stats, scale=0.1, seed=5)  # non-trivial running statistics
  before = jax.tree_util.tree_map(np.array, stats)
  for batch_norm in ("running", "batch"):
    nets = _nets(batch_norm)
    out = jit(functools.partial(networks.prototype_logits, nets, batch_statistics=nets.batch_stats_outside_training))(
        state.params, stats)
    assert isinstance(out, jax.Array) and out.shape == (K, C, C)
  x = images_lib.normalize(_images()[0], MEAN, STD)
  teacher = jit(functools.partial(networks.image_logits, nets, batch_statistics=False))
  logits, teacher_stats = teacher(state.extra["old_params"], stats, x)
  assert logits.shape == (K, 4, C)
  assert _leaves_equal(teacher_stats, before)
  assert _leaves_equal(stats, before)
  student = jit(functools.partial(networks.backbone_features, nets, batch_statistics=True))
  _, new_stats = student(state.params["backbone"], stats, x)
  assert jax.tree_util.tree_structure(new_stats) == jax.tree_util.tree_structure(before)
  changed = [not np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(new_stats),
                                                      jax.tree_util.tree_leaves(before))]
  assert all(changed)


@functools.cache
def _step_runs(batch_norm):
  """One step of task 0, end_task, begin_task(1), then one step of task 1 with lambda_sp = 0 and
  with lambda_sp = 1 (lambda_sp traced, so the step compiles once)."""
  protos, state = _tiny()
  nets, config = _nets(batch_norm), _config(batch_norm)
  settings = base.settings(config.pah)
  assert settings.lambda_sp == 1.0 and settings.prototype_update == "masked"
  main_opt, proto_opt = optim.main_optimizer(config.optim), optim.prototype_optimizer(config.optim)

  @jit
  def run(state, x, y, task_id, lambda_sp):
    step = pah_method.make_step(nets, settings.replace(lambda_sp=lambda_sp), main_opt, proto_opt)
    return step(state, base.Batch(images_lib.normalize(x, MEAN, STD), x, y, task_id))

  begin_task = jit(pah_method.make_begin_task(nets))
  x, y = _images()
  s0, m0 = run(begin_task(state, 0), x, y, 0, 1.0)
  s1 = begin_task(pah_method.end_task(s0), 1)
  x1, y1 = _images(seed=1)
  a, ma = run(s1, x1, y1, 1, 0.0)
  b, mb = run(s1, x1, y1, 1, 1.0)
  return nets, m0, s1, (x1, y1), (a, ma), (b, mb)


@pytest.mark.parametrize("batch_norm", ["batch", "running"])
def test_train_step_prototype_phase_is_masked(batch_norm):
  """Task 1, lambda_sp = 0 vs 1: backbone, hypernet, batch_stats and main optimiser state are
  bit-identical (L_sp reaches only the prototypes); P_0 (old task) differs; P_1 and P_2 (no L_sp
  gradient) are bit-identical too. At task 0, L_sm = L_sp = 0."""
  _, m0, s1, _, (a, ma), (b, mb) = _step_runs(batch_norm)
  assert float(m0["loss_sm"]) == 0.0 and float(m0["loss_sp"]) == 0.0
  assert float(ma["loss_sp"]) > 0 and float(ma["loss_sp"]) == float(mb["loss_sp"])
  assert _leaves_equal(a.params["backbone"], b.params["backbone"])
  assert _leaves_equal(a.params["hypernet"], b.params["hypernet"])
  assert _leaves_equal(a.batch_stats, b.batch_stats)
  assert _leaves_equal(a.opt_state, b.opt_state)
  pa, pb = np.asarray(a.params["prototypes"]), np.asarray(b.params["prototypes"])
  assert np.abs(pa[0] - pb[0]).max() > 1e-5
  np.testing.assert_array_equal(pa[1:], pb[1:])
  # The step did train: the backbone moved from s1.
  assert not _leaves_equal(a.params["backbone"], s1.params["backbone"])


def test_prototype_classification_term_moves_only_the_current_prototypes():
  """pah.lambda_hp (beyond the paper): L_hp, the cross-entropy of the current task's prototypes
  under their own head, joins phase 2. At task 1 with L_sp off, lambda_hp = 1 vs 0 changes P_1
  (the current task) and nothing the main phase updates; P_0 and P_2 get no L_hp gradient."""
  protos, state = _tiny()
  nets, config = _nets("batch"), _config("batch")
  settings = base.settings(config.pah).replace(lambda_sp=0.0)
  assert settings.lambda_hp == 0.0  # off by default
  main_opt, proto_opt = optim.main_optimizer(config.optim), optim.prototype_optimizer(config.optim)
  begin_task = jit(pah_method.make_begin_task(nets))
  s1 = begin_task(pah_method.end_task(begin_task(state, 0)), 1)
  x, y = _images(seed=1)
  batch = base.Batch(images_lib.normalize(x, MEAN, STD), x, y, 1)
  runs = {}
  for lambda_hp in (0.0, 1.0):
    step = jit(pah_method.make_step(nets, settings.replace(lambda_hp=lambda_hp), main_opt, proto_opt))
    runs[lambda_hp] = step(s1, batch)
  (off, m_off), (on, m_on) = runs[0.0], runs[1.0]
  # L_hp is measured either way; a head that ranks its own prototypes at chance gives ~log C.
  assert float(m_off["loss_hp"]) > 0 and float(m_off["loss_hp"]) == float(m_on["loss_hp"])
  assert float(m_on["loss"]) > float(m_off["loss"])
  for part in ("backbone", "hypernet"):
    assert _leaves_equal(off.params[part], on.params[part])
  assert _leaves_equal(off.batch_stats, on.batch_stats)
  p_off, p_on = np.asarray(off.params["prototypes"]), np.asarray(on.params["prototypes"])
  assert np.abs(p_off[1] - p_on[1]).max() > 1e-5
  np.testing.assert_array_equal(p_off[0], p_on[0])
  np.testing.assert_array_equal(p_off[2:], p_on[2:])


def test_feature_distillation_is_the_mean_squared_feature_distance_from_the_second_task_on():
  """pah.lambda_fd (beyond the paper): phase 1 adds lambda_fd * mean ||f_new(x) - f_old(x)||^2
  over the current images. At task 0 it adds nothing; at task 1, with an old model that differs
  from the current one, the loss grows by exactly lambda_fd times that distance."""
  protos, state = _tiny()
  nets, config = _nets("batch"), _config("batch")
  settings = base.settings(config.pah)
  assert settings.lambda_fd == 0.0  # off by default
  begin_task = jit(pah_method.make_begin_task(nets))
  x, y = _images(seed=2)
  images = images_lib.normalize(x, MEAN, STD)
  s0 = begin_task(state, 0)
  s1 = s0.replace(extra={**s0.extra, "old_params": _perturbed(s0.params)})

  @functools.partial(jit, static_argnums=2)
  def loss(state, task_id, lambda_fd):
    (value, _), _ = pah_method.main_phase(nets, settings.replace(lambda_fd=lambda_fd), state, images, y, task_id)
    return value

  @jit
  def distance(state):
    new, _ = networks.backbone_features(nets, state.params["backbone"], state.batch_stats, images,
                                        batch_statistics=True)
    old, _ = networks.backbone_features(nets, state.extra["old_params"]["backbone"], state.extra["old_batch_stats"],
                                        images, batch_statistics=True)
    return jnp.mean(jnp.square(new - old))

  d = float(distance(s1))
  assert d > 1e-4
  assert float(loss(s1, 0, 2.0)) == pytest.approx(float(loss(s1, 0, 0.0)), rel=1e-6)
  assert float(loss(s1, 1, 2.0)) - float(loss(s1, 1, 0.0)) == pytest.approx(2.0 * d, rel=1e-4)


def test_head_drift_is_the_mean_squared_distance_of_old_generated_heads():
  """pah.lambda_hd (beyond the paper; von Oswald et al.'s output regulariser): phase 1 adds
  lambda_hd * mean_{j<k} ||theta_j - theta_old_j||^2. Nothing at task 0; at task 2 the mean runs
  over tasks 0 and 1 only, summed over each head's entries, and its gradient moves the current
  hypernetwork."""
  protos, state = _tiny()
  nets, config = _nets("batch"), _config("batch")
  settings = base.settings(config.pah)
  assert settings.lambda_hd == 0.0  # off by default
  x, y = _images(seed=2)
  images = images_lib.normalize(x, MEAN, STD)
  s0 = jit(pah_method.make_begin_task(nets))(state, 0)
  s1 = s0.replace(extra={**s0.extra, "old_params": _perturbed(s0.params)})

  @functools.partial(jit, static_argnums=2)
  def phase(state, task_id, lambda_hd):
    return pah_method.main_phase(nets, settings.replace(lambda_hd=lambda_hd), state, images, y, task_id)

  new, _ = networks.generate_heads(nets, s1.params["hypernet"], s1.params["prototypes"])
  old, _ = networks.generate_heads(nets, s1.extra["old_params"]["hypernet"], s1.extra["old_params"]["prototypes"])
  per_task = np.sum(np.square(np.asarray(new) - np.asarray(old)), axis=(1, 2))
  assert per_task[:2].min() > 1e-6
  (at0, aux0), _ = phase(s1, 0, 3.0)
  assert float(aux0[3]) == 0.0 and float(at0) == pytest.approx(float(phase(s1, 0, 0.0)[0][0]), rel=1e-6)
  (on, aux), grads = phase(s1, 2, 3.0)
  (off, _), grads_off = phase(s1, 2, 0.0)
  assert float(aux[3]) == pytest.approx(per_task[:2].mean(), rel=1e-4)
  assert float(on) - float(off) == pytest.approx(3.0 * per_task[:2].mean(), rel=1e-4)
  moved = jax.tree_util.tree_map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()),
                                 grads["hypernet"], grads_off["hypernet"])
  assert max(jax.tree_util.tree_leaves(moved)) > 0


def test_head_warmup_holds_the_backbone_for_the_first_steps_of_a_later_task():
  """pah.head_warmup_steps (beyond the paper): from the second task on, the first N steps of a
  task leave the backbone's weights, its AdamW moments and the BatchNorm statistics exactly as
  they were while the hypernetwork and prototypes move; step N+1 moves the backbone again. The
  first task trains its backbone from the first step. With pah.head_warmup_above only the
  steps whose cross-entropy is above it hold the backbone."""
  config = _config("batch")
  config.pah.head_warmup_steps = 2
  protos = np.random.default_rng(0).normal(0.0, 1.0, (K, C, S, S, 3)).astype(np.float32)
  method = pah_method.build_for(config, protos, IMAGE_SHAPE, MEAN, STD)
  state = train.create_state(method, config)
  assert int(state.extra["task_start"]) == 0
  step, begin_task = jit(method.step), jit(method.begin_task)
  x, y = _images()
  batch = base.Batch(images_lib.normalize(x, MEAN, STD), x, y, 0)

  def advance(state, task_id):
    new, _ = step(state, batch._replace(task_id=jnp.asarray(task_id)))
    return new.replace(step=state.step + 1)

  def same_backbone(a, b):
    return all(np.array_equal(u, v) for u, v in zip(jax.tree_util.tree_leaves((a.params["backbone"], a.batch_stats,
                                                                              a.opt_state.inner_states["backbone"])),
                                                    jax.tree_util.tree_leaves((b.params["backbone"], b.batch_stats,
                                                                              b.opt_state.inner_states["backbone"]))))

  s0 = begin_task(state, 0)
  assert not same_backbone(s0, advance(s0, 0))  # task 0: no warm-up
  s0 = advance(advance(s0, 0), 0)
  s1 = begin_task(pah_method.end_task(s0), 1)
  assert int(s1.extra["task_start"]) == int(s0.step) == 2
  w1 = advance(s1, 1)
  w2 = advance(w1, 1)
  assert same_backbone(s1, w1) and same_backbone(s1, w2)
  assert not np.array_equal(np.asarray(jax.tree_util.tree_leaves(w2.params["hypernet"])[0]),
                            np.asarray(jax.tree_util.tree_leaves(s1.params["hypernet"])[0]))
  assert not same_backbone(w2, advance(w2, 1))  # the third step of task 1 trains the backbone

  # pah.head_warmup_above: a step whose batch the head already classifies below that
  # cross-entropy trains the backbone, even within the warm-up steps.
  config.pah.head_warmup_above = 1e6
  above = pah_method.build_for(config, protos, IMAGE_SHAPE, MEAN, STD)
  new, _ = jit(above.step)(s1, batch._replace(task_id=jnp.asarray(1)))
  assert not same_backbone(s1, new)
  assert "task_start" not in train.create_state(pah_method.build_for(_config("batch"), protos, IMAGE_SHAPE, MEAN,
                                                                     STD), _config("batch")).extra  # off: as before


@pytest.mark.parametrize("batch_norm", ["batch", "running"])
def test_train_step_running_stats_only_from_training_batch(batch_norm):
  """The step's new running statistics are those of the current model's training forward on the
  images alone: the teacher pass (old model, batch statistics) and the prototype passes do not
  feed them (a prototype batch would have moved them visibly)."""
  nets, _, s1, (x1, _), (a, _), _ = _step_runs(batch_norm)
  x = images_lib.normalize(x1, MEAN, STD)
  fwd = jit(functools.partial(networks.backbone_features, nets, batch_statistics=True))
  _, expected = fwd(s1.params["backbone"], s1.batch_stats, x)
  for got, want in zip(jax.tree_util.tree_leaves(a.batch_stats), jax.tree_util.tree_leaves(expected)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  _, polluted = fwd(s1.params["backbone"], expected, s1.params["prototypes"][0])
  distance = max(float(np.abs(np.asarray(p) - np.asarray(g)).max())
                 for p, g in zip(jax.tree_util.tree_leaves(polluted), jax.tree_util.tree_leaves(a.batch_stats)))
  assert distance > 1e-3
  _, teacher_polluted = fwd(s1.extra["old_params"]["backbone"], expected, x)
  assert not _leaves_equal(teacher_polluted, a.batch_stats)


# --------------------------------------------------------------------------- jit / no jit


class VariantsTest(chex.TestCase):
  """generate_heads, apply_heads and prototype_logits agree with and without jit."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_generate_heads(self):
    nets = _nets(head_bias=True)
    hyper = _random_hypernet_params(nets)
    protos = jnp.asarray(np.random.default_rng(2).normal(size=(K, C, S, S, 3)), jnp.float32)
    weights, bias = self.variant(lambda h, p: networks.generate_heads(nets, h, p))(hyper, protos)
    flat = nets.hypernet.apply({"params": hyper}, protos.reshape(K, -1))
    chex.assert_shape(weights, (K, C, D))
    chex.assert_shape(bias, (K, C))
    np.testing.assert_allclose(weights, np.asarray(flat[:, :C * D]).reshape(K, C, D), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bias, flat[:, C * D:], rtol=1e-5, atol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_apply_heads(self):
    rng = np.random.default_rng(0)
    features = jnp.asarray(rng.normal(size=(3, D)), jnp.float32)
    weights = jnp.asarray(rng.normal(size=(K, C, D)), jnp.float32)
    bias = jnp.asarray(rng.normal(size=(K, C)), jnp.float32)
    logits = self.variant(networks.apply_heads)(features, weights, bias)
    chex.assert_shape(logits, (K, 3, C))
    np.testing.assert_allclose(logits, np.einsum("nd,kcd->knc", features, weights) + bias[:, None],
                               rtol=1e-5, atol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_prototype_logits(self):
    _, state = _tiny()
    nets = _nets()
    logits = self.variant(lambda p, s: networks.prototype_logits(nets, p, s, batch_statistics=False))(
        state.params, state.batch_stats)
    chex.assert_shape(logits, (K, C, C))
    chex.assert_tree_all_finite(logits)
    weights, _ = networks.generate_heads(nets, state.params["hypernet"], state.params["prototypes"])
    features = nets.backbone.apply({"params": state.params["backbone"], "batch_stats": state.batch_stats},
                                   state.params["prototypes"].reshape(K * C, S, S, 3), train=False)
    expected = np.einsum("kpd,kcd->kpc", np.asarray(features).reshape(K, C, D), weights)
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)


def test_begin_task_takes_each_runs_initial_prototypes_from_its_state():
  """begin_task closes over no run's values (parallel seeds share one compile of it): one
  jitted begin_task resets task 1's prototypes of two runs to each run's own initial ones."""
  protos, state = _tiny()
  other_protos = protos[::-1].copy()
  other = state.replace(params={**state.params, "prototypes": jnp.asarray(other_protos)},
                        extra={**state.extra, "init_codes": jnp.asarray(other_protos)})
  begin_task = chex.assert_max_traces(pah_method.make_begin_task(_nets()), n=1)
  jitted = jit(begin_task)
  for run, initial in ((state, protos), (other, other_protos)):
    moved = run.replace(params={**run.params, "prototypes": run.params["prototypes"] + 1.0})
    after = jitted(moved, 1)
    np.testing.assert_array_equal(after.params["prototypes"][1], initial[1])
    np.testing.assert_array_equal(after.params["prototypes"][0], initial[0] + 1.0)  # other tasks untouched
  chex.clear_trace_counter()
