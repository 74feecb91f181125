"""What every method must honour to run in the shared task loop, checked for every built-in
method and for the out-of-tree example (examples/custom_method):

- its step compiles once per run (task id traced, shapes fixed), as do begin_task / end_task;
- the state's tree structure, shapes, dtypes and weak types never change across tasks;
- a checkpoint of its state round-trips exactly;
- a step of a task changes only what the method declares trainable (`Method.trainable`) and
  leaves the parts of its own state it declares kept (`Method.step_keeps`) bit-identical,
  while it does move the rest of its parameters;
- a 2-task run finishes through `train.train_and_evaluate`.
"""

import dataclasses
import os
import sys

import chex
import jax
import numpy as np
import pytest

from pah_jax import checkpointing
from pah_jax import data as data_lib
from pah_jax import methods
from pah_jax import train
from tests.conftest import make_npz
from tests.conftest import tiny_config

pytestmark = pytest.mark.slow  # every method compiled and trained

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = "custom_method.mas"  # examples/custom_method/mas.py, as its config names it
ALL_METHODS = methods.BUILTIN + (EXAMPLE,)


@pytest.fixture(scope="module", autouse=True)
def examples_on_path():
  """The example's folder on sys.path, as `PYTHONPATH=examples` puts it there."""
  sys.path.insert(0, os.path.join(ROOT, "examples"))
  yield
  sys.path.remove(os.path.join(ROOT, "examples"))


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
  return make_npz(tmp_path_factory.mktemp("conformance") / "tiny.npz")


def _config(npz_path, method):
  config = tiny_config(npz_path)
  config.method = method
  config.train.epochs = 1
  if method == EXAMPLE:
    from custom_method import mas  # pylint: disable=g-import-not-at-top
    for section, make in mas.METHOD.sections.items():
      config[section] = make()
    config.mas.samples, config.mas.batch = 8, 4
  # Small memories and samples, so a tiny task fills them.
  config.agem.memory_size, config.agem.memory_batch = 8, 4
  config.derpp.buffer_size, config.derpp.buffer_batch = 8, 4
  config.ewc.fisher_samples, config.ewc.fisher_batch = 8, 4
  return config


def _layout(state):
  """Tree structure, shapes, dtypes and weak types: a change in any of them recompiles the step."""
  return jax.tree_util.tree_structure(state), [(x.shape, x.dtype, getattr(x, "weak_type", False))
                                                for x in jax.tree_util.tree_leaves(state)]


def _host(tree):
  return jax.tree_util.tree_map(np.asarray, tree)


def _assert_kept(before, after, what):
  for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(before)[0], jax.tree_util.tree_leaves(after)):
    np.testing.assert_array_equal(a, b, err_msg=what + jax.tree_util.keystr(path))


@pytest.mark.parametrize("name", ALL_METHODS)
def test_a_method_runs_in_the_loop_as_it_declares(npz, name, tmp_path):
  chex.clear_trace_counter()
  config = _config(npz, name)
  seq = data_lib.load_tasks(config.data, config.seed)
  method = train.build_method(config, seq)
  once = lambda f: f if f is None else chex.assert_max_traces(f, n=1)
  method = dataclasses.replace(method, step=once(method.step), begin_task=once(method.begin_task),
                               end_task=once(method.end_task))
  identity = lambda state, *unused: state
  begin, end = jax.jit(method.begin_task or identity), jax.jit(method.end_task or identity)
  step = train.make_train_step(method, augment=False, mean=seq.mean, std=seq.std)
  chunk = train.make_train_chunk(step, batch_size=config.train.batch_size, compiled=False,
                                 metric_names=method.metric_names)
  sets = train.training_sets(method, seq)
  size = max(len(y) for _, y in sets)
  state = train.create_state(method, config)
  layout = _layout(state)
  trained_tasks = 0
  for task_id, (x, y) in enumerate(sets):
    if not len(y):  # joint: only the last task trains
      continue
    x, y = train.pad_to(x, size), train.pad_to(y, size)
    state = begin(state, task_id)
    assert _layout(state) == layout, "begin_task changed the state's layout"
    before = _host(state)
    state, metrics = chunk(state, x, y, len(sets[task_id][1]), task_id, 0, 3)
    assert set(metrics) == set(method.metric_names) and all(np.isfinite(v) for v in jax.device_get(metrics).values())
    after = _host(state)
    assert _layout(state) == layout, "a step changed the state's layout"
    for key in method.step_keeps:
      _assert_kept(before.extra[key], after.extra[key], f"extra[{key!r}]")
    mask = (_host(method.trainable(before.params, task_id)) if method.trainable
            else jax.tree_util.tree_map(lambda p: np.ones(p.shape, bool), before.params))
    moved = 0
    for m, a, b in zip(jax.tree_util.tree_leaves(mask), jax.tree_util.tree_leaves(before.params),
                       jax.tree_util.tree_leaves(after.params)):
      np.testing.assert_array_equal(a[~m], b[~m], err_msg="a frozen parameter moved")
      moved += int(np.sum(a[m] != b[m]))
    assert moved, "training moved no trainable parameter"
    state = end(state, x, y, len(sets[task_id][1]), task_id)
    assert _layout(state) == layout, "end_task changed the state's layout"
    trained_tasks += 1
  assert trained_tasks == (1 if method.joint else len(sets))

  with checkpointing.Checkpointer(str(tmp_path / "ckpt")) as ckpt:
    ckpt.save(state, {"position": {"task": 2, "epoch": 0, "batch": 0}})
    restored, _ = ckpt.restore(train.create_state(method, config))
  assert _layout(restored) == layout
  _assert_kept(_host(state), _host(restored), "checkpoint")
  chex.clear_trace_counter()


@pytest.mark.parametrize("name", ALL_METHODS)
def test_a_two_task_run_finishes(npz, name, tmp_path):
  config = _config(npz, name)
  results = train.train_and_evaluate(config, str(tmp_path / "run"))
  acc = np.asarray(results["accuracy_matrix"], float)
  assert results["method"] == name and acc.shape == (2, 2)
  assert np.all(np.isfinite(acc[1])) and (np.isfinite(acc[0, 0]) or name == "joint")
