"""End-to-end training: compile-once step, resume equals uninterrupted, mock CIFAR-100 run.

Exact equality where both sides are the same program on the same inputs (a resumed run and
an uninterrupted one; the Python loop's step, whatever the chunks). Compiled loops of
different trip counts are different programs, whose rounding Adam amplifies over the steps:
their parameters must compute the same logits within 5% of the change training made to them
(tests/tolerance.py), which another data order exceeds.
"""

import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from pah_jax import checkpointing
from pah_jax import data as data_lib
from pah_jax import images as images_lib
from pah_jax import train
from tests import tolerance
from tests.conftest import tiny_config


def _results_without_time(workdir):
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  results.pop("seconds")
  return results


@pytest.mark.parametrize("compiled", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_train_step_compiles_once_across_tasks(npz_path, compiled):
  """Task id is traced and shapes are fixed: tasks 0 and 1 share one trace of the step. The
  Python loop traces it once for any chunk length; the compiled loop once per chunk length
  (a static trip count), however many tasks and chunks use that length."""
  chex.clear_trace_counter()
  config = tiny_config(npz_path)
  seq = data_lib.load_tasks(config.data, config.seed)
  method = train.build_method(config, seq)
  state = train.create_state(method, config)
  lengths = (2, 4)
  step = chex.assert_max_traces(train.make_train_step(method, augment=False, mean=seq.mean, std=seq.std),
                                n=len(lengths) if compiled else 1)
  chunk = train.make_train_chunk(step, batch_size=16, compiled=compiled, metric_names=method.metric_names)
  begin, end = jax.jit(method.begin_task), jax.jit(method.end_task)
  for task_id in (0, 1):
    t = seq.tasks[task_id]
    state = begin(state, task_id)
    for first, n in ((0, 2), (2, 4), (6, 4), (10, 2)):  # 6 steps per epoch: two chunks cross its end
      state, metrics = chunk(state, t.x_train, t.y_train, len(t.y_train), task_id, first, n)
      assert np.isfinite(metrics["loss"])
    state = end(state, t.x_train, t.y_train, len(t.y_train), task_id)
  assert int(state.step) == 24
  chex.clear_trace_counter()


@pytest.mark.parametrize("compiled", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_a_tasks_steps_do_not_depend_on_how_they_are_chunked(npz_path, compiled):
  """Step g trains on batch g % E of epoch g // E whatever the chunks: chunks that cross an
  epoch's end give the parameters of whole-epoch chunks, and the data order of different
  epochs differs (6 steps per epoch here)."""
  config = tiny_config(npz_path)
  seq = data_lib.load_tasks(config.data, config.seed)
  method = train.build_method(config, seq)
  t = seq.tasks[0]
  step = train.make_train_step(method, augment=False, mean=seq.mean, std=seq.std)
  chunk = train.make_train_chunk(step, batch_size=16, compiled=compiled, metric_names=method.metric_names)

  begin = jax.jit(method.begin_task)
  images = images_lib.normalize(jnp.asarray(t.x_test), seq.mean, seq.std)
  outputs = jax.jit(lambda s: method.logits(s.params, s.batch_stats, images, 0, True))

  def run(plan):
    state = begin(train.create_state(method, config), 0)  # afresh: the chunks donate their input state
    for first, n in plan:
      state, _ = chunk(state, t.x_train, t.y_train, len(t.y_train), 0, first, n)
    return jax.device_get(state.params), np.asarray(outputs(state))

  if compiled:  # another trip count is another program: equal up to amplified rounding
    initial = np.asarray(outputs(begin(train.create_state(method, config), 0)))
    same = lambda got, want: tolerance.assert_same_trained_function(got[1], want[1], initial)
  else:  # every step is the same jitted program on the same inputs
    same = chex.assert_trees_all_equal
  by_epoch = run([(0, 6), (6, 6)])
  same(run([(0, 4), (4, 4), (8, 4)]), by_epoch)
  if not compiled:  # (each new length compiles the loop again: slow on a CPU)
    same(run(train.chunk_plan(0, 12, 5)), by_epoch)
  with pytest.raises(AssertionError):  # epoch 1 in epoch 0's order is another run
    same(run([(0, 6), (0, 6)]), by_epoch)


def test_chunk_plan_aligns_chunks_and_lands_on_checkpoint_steps():
  assert list(train.chunk_plan(0, 12, 4)) == [(0, 4), (4, 4), (8, 4)]
  assert list(train.chunk_plan(0, 10, 4)) == [(0, 4), (4, 4), (8, 2)]
  # A resumed task finishes its interrupted chunk, then logs where an uninterrupted run does.
  assert list(train.chunk_plan(5, 12, 4)) == [(5, 3), (8, 4)]
  # checkpoint_every counts the run's global steps (here 100 before the task's step 0).
  assert list(train.chunk_plan(0, 12, 4, checkpoint_every=6, step=100)) == [(0, 2), (2, 2), (4, 4), (8, 4)]
  assert not list(train.chunk_plan(12, 12, 4))


@pytest.mark.slow
def test_resume_after_a_crash_equals_uninterrupted_run(npz_path, tmp_path, monkeypatch):
  """A run killed right after task 0's checkpoint, rerun with the same command, ends with
  exactly the results (accuracy matrix included) of a run that was never interrupted."""
  config = tiny_config(npz_path)
  full = str(tmp_path / "full")
  train.train_and_evaluate(config, full)

  crashed = str(tmp_path / "crashed")
  real_save = checkpointing.Checkpointer.save

  def save_then_die(self, state, meta):
    real_save(self, state, meta)
    raise KeyboardInterrupt  # as if the process were stopped right after the checkpoint

  monkeypatch.setattr(checkpointing.Checkpointer, "save", save_then_die)
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(config, crashed)
  assert not os.path.exists(os.path.join(crashed, "results.json"))
  monkeypatch.setattr(checkpointing.Checkpointer, "save", real_save)
  train.train_and_evaluate(tiny_config(npz_path), crashed)

  expected, resumed = _results_without_time(full), _results_without_time(crashed)
  assert resumed == expected
  assert expected["accuracy_matrix"][0][1] is None  # tasks not yet trained are not measured
  # A finished run rerun is a no-op that returns (and reprints) the same results.
  again = train.train_and_evaluate(tiny_config(npz_path), crashed)
  again.pop("seconds")
  assert again == expected


@pytest.mark.slow
def test_resume_with_another_config_is_refused(npz_path, tmp_path):
  config = tiny_config(npz_path)
  workdir = str(tmp_path / "w")
  train.train_and_evaluate(config, workdir)
  config.pah.lambda_sm = 0.25
  with pytest.raises(train.errors.UserError, match=r"pah.lambda_sm \(0.5 -> 0.25\)"):
    train.train_and_evaluate(config, workdir)


def _mock_cifar(self, split, **kwargs):
  del self, kwargs
  n = 200 if str(split) == "train" else 60
  rng = np.random.default_rng(1 if str(split) == "train" else 2)
  labels = np.arange(n) % 100
  images = rng.integers(0, 255, (n, 32, 32, 3)).astype(np.uint8)
  return tf.data.Dataset.from_tensor_slices({"image": images, "label": labels})


@pytest.mark.slow
def test_cifar100_end_to_end_on_mock_data(tmp_path):
  """configs/cifar.py, shrunk, on mocked TFDS CIFAR-100: every output a run promises lands."""
  from configs import cifar

  manual = tmp_path / "data" / "downloads" / "manual"
  manual.mkdir(parents=True)
  (manual / "cifar-100-binary.tar.gz").write_bytes(b"")  # mocked TFDS never reads it
  config = cifar.get_config()
  config.data.path = str(tmp_path / "data")
  config.data.num_tasks = 2  # 50 classes per task, 2 training images each
  config.model.width = 0.0625
  config.train.epochs = 1
  config.train.batch_size = 10
  config.train.log_every_steps = 5
  workdir = str(tmp_path / "run")
  with tfds.testing.mock_data(as_dataset_fn=_mock_cifar):
    results = train.train_and_evaluate(config, workdir)
  assert np.array(results["accuracy_matrix"], dtype=float).shape == (2, 2)
  for name in ("results.json", "accuracy_matrix.png", "task_accuracy.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 100, name
  assert os.listdir(os.path.join(workdir, "checkpoints"))
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(workdir, "tensorboard")))
  with open(os.path.join(workdir, "tensorboard", "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  assert any("train/loss_sp" in r for r in records) and any("test/average_accuracy" in r for r in records)
  assert set(results) >= {"accuracy_matrix", "average_accuracy", "forgetting", "bwt", "config", "seconds"}


@pytest.mark.slow
def test_compilation_cache_keeps_programs_for_the_next_process(tmp_path):
  """train.compilation_cache: a fresh process compiles into the directory; a second one reads
  the entry back instead of compiling (JAX counts cache hits in its monitoring events)."""
  import subprocess
  import sys

  code = """
import sys
import jax
from jax import monitoring
from pah_jax import train
hits = []
monitoring.register_event_listener(lambda event, **kw: hits.append(event) if 'cache_hits' in event else None)
train.use_compilation_cache(sys.argv[1])
jax.jit(lambda x: jax.numpy.sin(x) * 3.0 + 1.0)(jax.numpy.ones(7)).block_until_ready()
print(len(hits))
"""
  cache = str(tmp_path / "xla cache")
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  runs = [subprocess.run([sys.executable, "-c", code, cache], capture_output=True, text=True, env=env, timeout=300,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))) for _ in range(2)]
  for run in runs:
    assert run.returncode == 0, run.stderr[-2000:]
  assert os.listdir(cache)
  assert int(runs[0].stdout.split()[-1]) == 0 and int(runs[1].stdout.split()[-1]) >= 1
