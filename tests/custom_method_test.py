"""A method outside pah_jax (examples/custom_method: Memory Aware Synapses) runs through the
documented command, does what it says, and pah_jax itself never names it.

Tiny model throughout: ResNet-18 at width 0.125, 12x12 grey images, tasks of 2 classes.
"""

import functools
import importlib
import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from pah_jax import methods
from pah_jax import networks
from pah_jax import train
from pah_jax.methods import base
from pah_jax.methods import quadratic
from tests.conftest import make_npz

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
K, C = 2, 2
IMAGE_SHAPE = (12, 12, 1)
MEAN, STD = (0.3,), (0.3,)
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def _mas():
  """examples/custom_method/mas.py as `custom_method.mas`, the name its config gives it."""
  if EXAMPLES not in sys.path:
    sys.path.insert(0, EXAMPLES)
  return importlib.import_module("custom_method.mas")


@pytest.mark.slow
def test_documented_command_runs_the_out_of_tree_method(tmp_path):
  npz = make_npz(tmp_path / "tiny.npz")
  workdir = tmp_path / "run"
  command = [sys.executable, "-m", "pah_jax.main", "--config=examples/custom_method/config.py", f"--workdir={workdir}",
             "--config.data.name=npz", f"--config.data.path={npz}", "--config.data.num_tasks=2",
             "--config.model.width=0.125", "--config.train.epochs=1", "--config.train.batch_size=16",
             "--config.train.eval_batch_size=32", "--config.train.compilation_cache=",
             "--config.mas.samples=16", "--config.mas.batch=8", "--config.mas.strength=2.5"]
  env = {**os.environ, "PYTHONPATH": "examples"}
  proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(workdir / "results.json") as f:
    results = json.load(f)
  assert results["method"] == "custom_method.mas"
  assert results["config"]["mas"] == {"strength": 2.5, "samples": 16, "batch": 8}  # the override reached it
  acc = np.array(results["accuracy_matrix"], dtype=float)
  assert acc.shape == (2, 2) and np.all(np.isfinite(acc[np.tril_indices(2)])) and np.isnan(acc[0, 1])
  with open(workdir / "tensorboard" / "metrics.jsonl") as f:
    logged = [json.loads(line) for line in f]
  assert any(entry.get("train/loss_mas", 0.0) > 0.0 for entry in logged)  # the penalty acted in task 1


def _setup(mas, **values):
  config = default.get_config()
  config.method = "custom_method.mas"
  config.mas = mas.mas_config()
  config.model.width = 0.125
  config.mas.update(samples=6, batch=4, **values)
  nets = networks.build_networks(config, K, C)
  return base.Setup(config=config, nets=nets, num_tasks=K, num_classes=C, image_shape=IMAGE_SHAPE, mean=MEAN,
                    std=STD), config


def _batch(n=8, seed=0):
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, (n,) + IMAGE_SHAPE, dtype=np.uint8), (np.arange(n) % C).astype(np.int32)


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def test_importance_after_a_task_and_the_penalty_changes_training():
  mas = _mas()
  setup, config = _setup(mas, strength=0.0)
  method = mas.build(setup)
  state = train.create_state(method, config)
  step = jit(train.make_train_step(method, augment=False, mean=MEAN, std=STD))
  for i in range(2):
    state, _ = step(state, *_batch(seed=i), 0)
  images, labels = _batch(n=8, seed=10)
  state = jit(method.end_task)(state, images, labels, 6, 0)

  omega, heads = state.extra["omega"], state.extra["omega"]["heads"]
  assert all(np.all(w >= 0) for w in _leaves(omega))
  assert sum(float(w.sum()) for w in _leaves(omega["backbone"])) > 0
  assert np.asarray(heads["kernel"][0]).sum() > 0 and np.asarray(heads["kernel"][1]).sum() == 0  # task 0's head only
  assert all(np.array_equal(a, p) for a, p in zip(_leaves(state.extra["anchor"]), _leaves(state.params)))

  # The same state through task 1 with lambda = 0 and a large lambda: only the penalty differs.
  strong = mas.build(_setup(mas, strength=1e4)[0])
  strong_step = jit(train.make_train_step(strong, augment=False, mean=MEAN, std=STD))
  free, held = state, state
  for i in range(3):
    free, _ = step(free, *_batch(seed=20 + i), 1)
    held, metrics = strong_step(held, *_batch(seed=20 + i), 1)
  assert float(metrics["loss_mas"]) > 0
  assert any(not np.array_equal(a, b) for a, b in zip(_leaves(free.params), _leaves(held.params)))
  drift = [float(quadratic.penalty(s.params["backbone"], state.params["backbone"], omega["backbone"]))
           for s in (free, held)]
  assert drift[1] < drift[0], drift  # the penalty holds important weights nearer their task-0 values


def test_importance_is_the_mean_absolute_gradient_of_the_squared_output_norm():
  """The batched, chunked, padded importance against single-example gradients, one at a time.

  The same function with its sums in another order (vmap over a chunk against one example):
  tests/tolerance.py's one-evaluation bound is 1e-5 relative, but each gradient passes through
  BatchNorm over the statistics of one example, which amplifies rounding; the EWC test bounds
  the square of such gradients by 2e-3, so 1e-3 for the gradients themselves, with a floor of
  1e-5 of each array's largest entry for entries near zero.
  """
  mas = _mas()
  setup, config = _setup(mas)
  method = mas.build(setup)
  params, batch_stats = jit(method.init)(jax.random.PRNGKey(0))
  images = setup.normalize(jnp.asarray(_batch(n=4, seed=3)[0]))
  weights = jnp.array([1.0, 1.0, 1.0, 0.0])  # the last example is padding
  got = jit(lambda p, x, w: mas.importance(setup, p, batch_stats, x, w, 1, 2))(params, images, weights)

  def squared_norm(p, x):
    feats, _ = networks.backbone_features(setup.nets, p["backbone"], batch_stats, x[None],
                                          batch_statistics=setup.nets.eval_batch_stats)
    return jnp.sum(jnp.square(feats @ p["heads"]["kernel"][1] + p["heads"]["bias"][1]))

  grad = jit(jax.grad(squared_norm))
  expected = jax.tree_util.tree_map(lambda *g: sum(np.abs(np.asarray(x)) for x in g) / 3,
                                    *[grad(params, images[i]) for i in range(3)])
  for a, b in zip(_leaves(got), _leaves(expected)):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5 * float(np.abs(b).max()))
  assert np.asarray(got["heads"]["kernel"][0]).sum() == 0  # another task's head: no importance


NAMES_THE_METHOD = re.compile(r"custom_method|\bmas\b", re.IGNORECASE)


def test_pah_jax_never_names_the_out_of_tree_method():
  """No file under pah_jax/ (tracked or not, code or prose) names the example or its module;
  the same search finds it in the example's own config."""
  assert "mas" not in methods.BUILTIN
  found = []
  for folder, dirs, files in os.walk(os.path.join(ROOT, "pah_jax")):
    dirs[:] = [d for d in dirs if d != "__pycache__"]
    for name in files:
      path = os.path.join(folder, name)
      with open(path, errors="replace") as f:
        if NAMES_THE_METHOD.search(name) or NAMES_THE_METHOD.search(f.read()):
          found.append(os.path.relpath(path, ROOT))
  assert not found, f"pah_jax names the out-of-tree method: {found}"
  with open(os.path.join(EXAMPLES, "custom_method", "config.py")) as f:
    assert NAMES_THE_METHOD.search(f.read())
