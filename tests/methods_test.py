"""The baselines (pah_jax/methods): each test fails if its method silently did nothing.

Tiny model throughout: ResNet-18 at width 0.125 (D = 64), K = 3 tasks of C = 2 classes,
12x12 grey images.

Batched against per-example or per-task computations (all heads' logits, EWC's Fisher):
the same function with sums in another order, within tests/tolerance.py's one-evaluation
bound (1e-5 relative); the Fisher squares per-example gradients of a network with batch
statistics over one example, whose rounding it doubles, so 2e-3.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import default
from pah_jax import config_check
from pah_jax import methods
from pah_jax import models
from pah_jax import networks
from pah_jax import train
from pah_jax.methods import agem
from pah_jax.methods import base
from pah_jax.methods import ewc
from pah_jax.methods import heads
from pah_jax.methods import memory as memory_lib
from pah_jax.methods import quadratic
from tests.conftest import make_npz
from tests.conftest import tiny_config

K, C = 3, 2
IMAGE_SHAPE = (12, 12, 1)
MEAN, STD = (0.3,), (0.3,)
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def _config(method):
  c = default.get_config()
  c.method = method
  c.model.width = 0.125
  c.ewc.fisher_samples = 16
  c.ewc.fisher_batch = 8
  c.agem.memory_size = 12
  c.agem.memory_batch = 8
  c.derpp.buffer_size = 12
  c.derpp.buffer_batch = 8
  return c


def _override(config, **overrides):
  """section__key=value pairs set on `config` (returned)."""
  for key, value in overrides.items():
    section, field = key.split("__")
    config[section][field] = value
  return config


def _method(name, **overrides):
  config = _override(_config(name), **overrides)
  setup = base.Setup(config=config, nets=networks.build_networks(config, K, C), num_tasks=K, num_classes=C,
                        image_shape=IMAGE_SHAPE, mean=MEAN, std=STD)
  return methods.build(setup), config


def _batch(n=8, seed=0):
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, (n,) + IMAGE_SHAPE, dtype=np.uint8), (np.arange(n) % C).astype(np.int32)


class _Runner:
  """A method's jitted step/begin/end over a fresh state, driven task by task."""

  def __init__(self, name, **overrides):
    self.method, config = _method(name, **overrides)
    self.state = train.create_state(self.method, config)
    self._step = jit(train.make_train_step(self.method, augment=False, mean=MEAN, std=STD))
    identity = lambda state, *unused: state
    self._begin = jit(self.method.begin_task or identity)
    self._end = jit(self.method.end_task or identity)

  def task(self, task_id, steps=2, seed=0):
    self.state = self._begin(self.state, task_id)
    metrics = []
    for i in range(steps):
      x, y = _batch(seed=seed + 100 * task_id + i)
      self.state, m = self._step(self.state, x, y, task_id)
      metrics.append(jax.device_get(m))
    return metrics

  def end(self, task_id, seed=0):
    x, y = _batch(n=16, seed=seed + 1000 + task_id)
    self.state = self._end(self.state, x, y, 16, task_id)


def _heads(state):
  return jax.tree_util.tree_map(np.asarray, state.params["heads"])


def _moved(a, b):
  return any(not np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def test_every_builtin_method_declares_itself_and_its_sections_are_the_defaults():
  """The registry, the default config's method sections and the baselines' descriptions all
  come from the methods' declarations."""
  config = default.get_config()
  for name in methods.BUILTIN:
    d = methods.declaration(name)
    assert d.name == name and d.description
    for section, make in d.sections.items():
      assert config[section].to_dict() == make().to_dict()
  assert methods.declaration("agem").describe(config) == "A-GEM (Chaudhry et al. 2019), memory 200"
  with pytest.raises(config_check.UserError, match="neither a built-in method"):
    methods.declaration("no_such_method")


def test_resume_ignores_only_keys_the_method_never_reads():
  from pah_jax import reporting  # pylint: disable=g-import-not-at-top

  def saved(method, **changes):
    c = default.get_config()
    c.method = method
    return reporting.jsonable(_override(c, **changes))

  for method in ("finetune", "ewc"):  # the hypernetwork's keys never reach a stored-head baseline
    c = default.get_config()
    c.method = method
    config_check.check_same_config(saved(method, optim__lr_hypernet=0.5, pah__lambda_sm=0.9, si__strength=3.0), c)
    with pytest.raises(config_check.UserError, match="lr_heads"):
      config_check.check_same_config(saved(method, optim__lr_heads=0.5), c)
  c = default.get_config()  # PAH reads them
  with pytest.raises(config_check.UserError, match="lr_hypernet"):
    config_check.check_same_config(saved("pah", optim__lr_hypernet=0.5), c)
  config_check.check_same_config(saved("pah", ewc__strength=1.0, optim__lr_heads=0.5), c)
  with pytest.raises(config_check.UserError, match="method"):
    config_check.check_same_config(saved("ewc"), c)


def test_resume_reads_keys_added_later_as_their_old_behaviour():
  """A checkpoint written before pah.lambda_hp existed resumes under lambda_hp = 0 (what it ran),
  and is refused under any other value."""
  from pah_jax import reporting  # pylint: disable=g-import-not-at-top

  saved = reporting.jsonable(default.get_config())
  del saved["pah"]["lambda_hp"]
  config_check.check_same_config(saved, default.get_config())
  with pytest.raises(config_check.UserError, match="lambda_hp"):
    config_check.check_same_config(saved, _override(default.get_config(), pah__lambda_hp=1.0))

  # model.conv_init: older runs all used torchvision's init.
  saved = reporting.jsonable(default.get_config())
  del saved["model"]["conv_init"]
  config_check.check_same_config(saved, default.get_config())
  with pytest.raises(config_check.UserError, match="conv_init"):
    config_check.check_same_config(saved, _override(default.get_config(), model__conv_init="pytorch"))

  # model.small_map_convs: older runs convolved every map. They resume under "conv", and under
  # the default "auto" only where it runs "conv" (not on a CPU, where it runs "matmul": other
  # float rounding, so they are refused rather than resumed inexactly).
  saved = reporting.jsonable(default.get_config())
  del saved["model"]["small_map_convs"]
  if models.resolve_small_map_convs("auto") == "conv":
    config_check.check_same_config(saved, default.get_config())
  else:
    with pytest.raises(config_check.UserError, match="small_map_convs"):
      config_check.check_same_config(saved, default.get_config())
  config_check.check_same_config(saved, _override(default.get_config(), model__small_map_convs="conv"))

  # The other way round: a config that lacks a key added later (read back from an older sweep's
  # record) matches a checkpoint that wrote the key out at its old value, and no other.
  older = reporting.jsonable(default.get_config())
  del older["pah"]["lambda_fd"]
  config_check.check_same_config(reporting.jsonable(default.get_config()), ml_collections.ConfigDict(older))
  with pytest.raises(config_check.UserError, match="lambda_fd"):
    config_check.check_same_config(reporting.jsonable(_override(default.get_config(), pah__lambda_fd=1.0)),
                                   ml_collections.ConfigDict(older))


@pytest.mark.parametrize("backend", ["cpu", "gpu"])
def test_small_map_convs_resume_as_what_they_run(backend, monkeypatch):
  """A checkpoint written under an explicit "matmul" or "conv" resumes under the same value and
  is refused under the other; "auto" resumes under "auto", and counts as what it runs on the
  resuming backend ("matmul" on a CPU, "conv" elsewhere), so the runs written under the old
  default "matmul" resume under the new default on a CPU."""
  from pah_jax import reporting  # pylint: disable=g-import-not-at-top

  monkeypatch.setattr(models.jax, "default_backend", lambda: backend)
  auto = {"cpu": "matmul", "gpu": "conv"}[backend]
  assert default.get_config().model.small_map_convs == "auto"
  config = lambda value: _override(default.get_config(), model__small_map_convs=value)
  for written, resumed in [("matmul", "matmul"), ("conv", "conv"), ("auto", "auto"), (auto, "auto"),
                           ("auto", auto)]:
    config_check.check_same_config(reporting.jsonable(config(written)), config(resumed))
  other = {"matmul": "conv", "conv": "matmul"}[auto]
  for written, resumed in [("matmul", "conv"), ("conv", "matmul"), (other, "auto"), ("auto", other)]:
    with pytest.raises(config_check.UserError, match="small_map_convs"):
      config_check.check_same_config(reporting.jsonable(config(written)), config(resumed))


def test_joint_tests_with_running_statistics_and_old_joint_runs_are_not_resumed_under_it():
  """joint.eval_batch_norm: joint evaluates with running statistics by default (its batches mix
  tasks); every other method keeps model.eval_batch_norm / batch_norm. A joint checkpoint from
  before the key was evaluated with batch statistics, so it is refused under the new default."""
  from pah_jax import reporting  # pylint: disable=g-import-not-at-top
  from pah_jax import train  # pylint: disable=g-import-not-at-top

  def evaluation_batch_stats(name, **overrides):
    return train.evaluation_batch_stats(*reversed(_method(name, **overrides)))

  assert evaluation_batch_stats("hnet") and evaluation_batch_stats("finetune")
  assert not evaluation_batch_stats("joint")
  assert evaluation_batch_stats("joint", joint__eval_batch_norm="batch")
  assert evaluation_batch_stats("joint", joint__eval_batch_norm="")
  assert not evaluation_batch_stats("hnet", model__eval_batch_norm="running")

  for method in ("joint", "finetune"):
    saved = reporting.jsonable(_config(method))
    del saved["joint"]
    if method == "joint":
      with pytest.raises(config_check.UserError, match="joint.eval_batch_norm"):
        config_check.check_same_config(saved, _config(method))
      config_check.check_same_config(saved, _override(_config(method), joint__eval_batch_norm=""))
    else:
      config_check.check_same_config(saved, _config(method))

# --------------------------------------------------------------------------- stored heads


@pytest.mark.parametrize("name", ["finetune", "lwf"])
def test_old_heads_stay_unchanged_while_a_new_task_trains(name):
  """Training task 1 moves its head and the backbone; head 0 (and the unseen head 2) stay
  bit-identical although AdamW's momentum from task 0 and its weight decay act on all."""
  r = _Runner(name)
  r.task(0)
  r.end(0)
  before = r.state
  metrics = r.task(1)
  after = _heads(r.state)
  np.testing.assert_array_equal(after["kernel"][0], np.asarray(before.params["heads"]["kernel"][0]))
  np.testing.assert_array_equal(after["bias"][0], np.asarray(before.params["heads"]["bias"][0]))
  np.testing.assert_array_equal(after["kernel"][2], np.asarray(before.params["heads"]["kernel"][2]))
  assert not np.array_equal(after["kernel"][1], np.asarray(before.params["heads"]["kernel"][1]))
  assert _moved(r.state.params["backbone"], before.params["backbone"])
  if name == "lwf":
    assert metrics[0]["loss_distill"] >= 0 and metrics[-1]["loss_distill"] > 0  # the teacher speaks at task 1
    assert r.task(2)[0]["loss_distill"] > 0


def test_lwf_distillation_is_zero_at_the_first_task():
  r = _Runner("lwf")
  assert all(m["loss_distill"] == 0.0 for m in r.task(0))


def test_example_logits_use_each_examples_own_head():
  rng = np.random.default_rng(0)
  h = {"kernel": jnp.asarray(rng.normal(size=(K, 5, C)), jnp.float32),
       "bias": jnp.asarray(rng.normal(size=(K, C)), jnp.float32)}
  feats = jnp.asarray(rng.normal(size=(4, 5)), jnp.float32)
  tasks = jnp.asarray([2, 0, 1, 2])
  got = heads.example_logits(h, feats, tasks)
  every = heads.all_logits(h, feats)
  for i, t in enumerate(np.asarray(tasks)):
    np.testing.assert_allclose(got[i], every[t, i], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[i], heads.task_logits(h, feats, int(t))[i], rtol=1e-5, atol=1e-5)


def test_joint_trains_every_head_on_the_union():
  """Joint labels are task * C + label: one step moves every task's head."""
  r = _Runner("joint")
  x, _ = _batch(n=12)
  y = np.arange(12, dtype=np.int32) % (K * C)
  before = _heads(r.state)
  r.state, m = jit(train.make_train_step(r.method, augment=False, mean=MEAN, std=STD))(r.state, x, y, K - 1)
  after = _heads(r.state)
  assert all(not np.array_equal(after["kernel"][k], before["kernel"][k]) for k in range(K))
  assert np.isfinite(m["loss"])


# --------------------------------------------------------------------------- EWC


def test_quadratic_penalty_is_zero_at_the_anchor_and_grows_away_from_it():
  rng = np.random.default_rng(0)
  anchor = {"a": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32), "b": jnp.asarray(rng.normal(size=5), jnp.float32)}
  importance = jax.tree_util.tree_map(lambda x: jnp.abs(x) + 0.1, anchor)
  assert float(quadratic.penalty(anchor, anchor, importance)) == 0.0
  direction = jax.tree_util.tree_map(lambda x: jnp.ones_like(x), anchor)
  moved = lambda t: jax.tree_util.tree_map(lambda a, d: a + t * d, anchor, direction)
  values = [float(quadratic.penalty(moved(t), anchor, importance)) for t in (0.1, 0.2, 0.4)]
  assert 0 < values[0] < values[1] < values[2]
  np.testing.assert_allclose(values[1] / values[0], 4.0, rtol=1e-4)  # quadratic
  total = sum(float(jnp.sum(w)) for w in jax.tree_util.tree_leaves(importance))
  np.testing.assert_allclose(values[0], 0.01 * total, rtol=1e-4)


def test_ewc_fisher_accumulates_and_the_penalty_acts_after_the_first_task():
  r = _Runner("ewc", ewc__gamma=0.5)
  m0 = r.task(0)
  assert all(m["loss_ewc"] == 0.0 for m in m0)  # the Fisher is zero before a task ends
  r.end(0)
  f0 = jax.tree_util.tree_map(np.asarray, r.state.extra["fisher"])
  leaves = jax.tree_util.tree_leaves(f0)
  assert all((leaf >= 0).all() for leaf in leaves)
  assert float(np.max(f0["heads"]["kernel"][0])) > 0 and float(np.max(f0["heads"]["kernel"][1])) == 0.0
  assert max(float(np.max(leaf)) for leaf in jax.tree_util.tree_leaves(f0["backbone"])) > 0
  assert not _moved(r.state.extra["anchor"], r.state.params)  # anchor = the parameters after task 0
  m1 = r.task(1)
  assert m1[0]["loss_ewc"] == 0.0 and m1[-1]["loss_ewc"] > 0  # zero at the anchor, then grows
  r.end(1)
  f1 = jax.tree_util.tree_map(np.asarray, r.state.extra["fisher"])
  # Online EWC: head 0 got no new Fisher in task 1 (its gradient there is zero): 0.5 * old.
  np.testing.assert_allclose(f1["heads"]["kernel"][0], 0.5 * f0["heads"]["kernel"][0], rtol=1e-6)


def test_fisher_matches_a_loop_over_single_examples():
  method, config = _method("ewc")
  state = train.create_state(method, config)
  setup = base.Setup(config=config, nets=networks.build_networks(config, K, C), num_tasks=K, num_classes=C,
                        image_shape=IMAGE_SHAPE, mean=MEAN, std=STD)
  x, y = _batch(n=4)
  xn = setup.normalize(jnp.asarray(x))
  got = jit(lambda p, s: ewc.fisher_diagonal(setup, p, s, xn, jnp.asarray(y), 1, chunk=2))(state.params,
                                                                                             state.batch_stats)

  def one(p, i):
    feats, _ = heads.features(setup, p, state.batch_stats, xn[i:i + 1], batch_statistics=True)
    return jax.nn.log_softmax(heads.task_logits(p["heads"], feats, 1))[0, y[i]]

  grads = [jit(jax.grad(one), static_argnums=1)(state.params, i) for i in range(4)]
  want = jax.tree_util.tree_map(lambda *g: sum(np.square(np.asarray(v)) for v in g) / 4, *grads)
  for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
    np.testing.assert_allclose(a, b, rtol=2e-3, atol=1e-9)


# --------------------------------------------------------------------------- SI


def test_si_importance_accumulates_only_for_moved_parameters():
  r = _Runner("si")
  r.task(0, steps=3)
  path = r.state.extra["path"]
  assert float(np.abs(np.asarray(path["heads"]["kernel"][1:])).max()) == 0.0  # heads 1, 2 never moved
  r.end(0)
  omega = jax.tree_util.tree_map(np.asarray, r.state.extra["omega"])
  assert float(np.abs(omega["heads"]["kernel"][1:]).max()) == 0.0
  assert float(omega["heads"]["kernel"][0].max()) > 0
  assert max(float(np.abs(leaf).max()) for leaf in jax.tree_util.tree_leaves(omega["backbone"])) > 0
  m1 = r.task(1, steps=2)
  assert m1[0]["loss_si"] == 0.0 and m1[-1]["loss_si"] > 0
  # In task 1 head 0 is frozen: its path integral stays exactly zero.
  assert float(np.abs(np.asarray(r.state.extra["path"]["heads"]["kernel"][0])).max()) == 0.0


# --------------------------------------------------------------------------- A-GEM


def test_agem_projection_never_increases_the_memory_loss_to_first_order():
  rng = np.random.default_rng(0)
  for _ in range(20):
    g = {"w": jnp.asarray(rng.normal(size=(6, 3)), jnp.float32), "b": jnp.asarray(rng.normal(size=4), jnp.float32)}
    ref = {"w": jnp.asarray(rng.normal(size=(6, 3)), jnp.float32), "b": jnp.asarray(rng.normal(size=4), jnp.float32)}
    out = agem.project(g, ref)
    dot_before, dot_after = float(base.tree_dot(g, ref)), float(base.tree_dot(out, ref))
    assert dot_after >= -1e-4
    if dot_before >= 0:
      assert not _moved(out, g)
    else:
      np.testing.assert_allclose(dot_after, 0.0, atol=1e-4)


def test_agem_memory_holds_an_equal_share_of_each_task_and_projects():
  r = _Runner("agem")
  r.task(0)
  assert int(r.state.extra["memory"]["count"]) == 0
  r.end(0)
  mem = jax.device_get(r.state.extra["memory"])
  per = 12 // K
  assert int(mem["count"]) == per
  assert set(mem["labels"][:per]) <= {0, 1} and mem["images"][:per].any()
  r.task(1)
  r.end(1)
  mem = jax.device_get(r.state.extra["memory"])
  assert int(mem["count"]) == 2 * per and set(mem["labels"][per:2 * per]) <= {2, 3}
  # The stored examples are real training examples of their task.
  x, _ = _batch(n=16, seed=1001)
  assert all(any(np.array_equal(m, xi) for xi in x) for m in mem["images"][per:2 * per])


# --------------------------------------------------------------------------- DER++


def test_reservoir_buffer_keeps_a_uniform_sample_of_the_right_size():
  size, stream, trials = 5, 20, 400
  counts = np.zeros(stream)
  mem0 = memory_lib.empty(size, (1, 1, 1), num_classes=2)

  @jit
  def fill(key):
    mem = mem0
    for b in range(stream // 4):  # batches of 4
      ids = jnp.arange(4 * b, 4 * b + 4)
      mem = memory_lib.reservoir_add(mem, jax.random.fold_in(key, b), ids.reshape(4, 1, 1, 1).astype(jnp.uint8),
                                     ids, jnp.zeros((4, 2)))
    return mem

  for t in range(trials):
    mem = jax.device_get(fill(jax.random.PRNGKey(t)))
    assert int(mem["count"]) == stream and int(memory_lib.filled(mem)) == size
    assert len(set(mem["labels"].tolist())) == size  # no duplicates
    np.testing.assert_array_equal(mem["images"].reshape(-1), mem["labels"])  # image and label stay together
    counts[mem["labels"]] += 1
  expected = trials * size / stream  # 100 per example
  assert np.all(np.abs(counts - expected) < 4.5 * np.sqrt(expected)), counts


def test_derpp_replays_its_buffer():
  r = _Runner("derpp")
  m0 = r.task(0, steps=3)
  assert m0[0]["loss_logits"] == 0.0  # nothing stored before the first step
  assert int(r.state.extra["buffer"]["count"]) == 24
  assert m0[-1]["loss_buffer_ce"] > 0
  m1 = r.task(1, steps=2)
  assert m1[-1]["loss_logits"] > 0  # the model has moved from the logits it stored
  labels = np.asarray(r.state.extra["buffer"]["labels"])
  assert set(labels) <= {0, 1, 2, 3}


# --------------------------------------------------------------------------- hnet


def test_hnet_learns_embeddings_and_distills_old_heads():
  r = _Runner("hnet")
  p = r.state.params
  assert set(p) == {"backbone", "hypernet", "embeddings"}
  assert p["embeddings"].shape == (K, C * 10 * 10 * 1)  # as PAH's flattened 10x10 grey prototypes
  init = np.asarray(p["embeddings"])
  r.task(0)
  assert not np.array_equal(np.asarray(r.state.params["embeddings"][0]), init[0])
  r.end(0)
  m1 = r.task(1)
  assert m1[-1]["loss_sm"] > 0 and m1[-1]["loss_output_reg"] == 0.0


def test_hnet_output_regulariser_is_zero_at_the_old_model_and_positive_after():
  r = _Runner("hnet", hnet__output_reg=0.01)
  r.task(0)
  r.end(0)
  m1 = r.task(1, steps=2)
  assert m1[0]["loss_output_reg"] == 0.0 and m1[1]["loss_output_reg"] > 0


# --------------------------------------------------------------------------- end to end


# The loop paths a method can take: joint's union training set, end_task on the task's data
# (Fisher, memory filling). pah: train_test.py; the others
# share finetune's path, exercised step by step above.
@pytest.mark.slow
@pytest.mark.parametrize("name", ["joint", "ewc", "agem"])
def test_methods_run_the_command_line_job(tmp_path, name):
  """The method through train_and_evaluate: results.json with a full (joint: last) row."""
  path = make_npz(tmp_path / "tiny.npz", num_classes=4, train_per_class=24, test_per_class=8)
  config = tiny_config(path)
  config.method = name
  config.train.epochs = 1
  config.ewc.fisher_samples = 16
  config.agem.memory_size = 8
  config.derpp.buffer_size = 8
  config.derpp.buffer_batch = 8
  config.agem.memory_batch = 8
  results = train.train_and_evaluate(config, str(tmp_path / "run"))
  acc = results["accuracy_matrix"]
  assert results["method"] == name and all(v is not None for v in acc[1])
  if name == "joint":
    assert acc[0] == [None, None] and results["forgetting"] is None
  else:
    assert acc[0][0] is not None and results["forgetting"] is not None
  assert results["average_accuracy"] > 50  # the tiny task is easy; chance is 50
