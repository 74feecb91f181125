"""Seeds in parallel: one vmapped program gives each seed the run it would have had alone.

Batched and single convolutions are different programs that round differently, and Adam
amplifies that over the steps, by an amount that depends on the CPU; tests/tolerance.py
derives the bounds: each accuracy within one test image, the logged losses within 5% of
their range over the run, the final parameters' logits within 5% of the change training
made to them. A rerun of a finished parallel run is the same program on the same inputs and
must give identical results.
"""

import json
import os

import jax
import jax.numpy as jnp
import pytest

from experiments import paper_tables
from pah_jax import errors
from pah_jax import main
from pah_jax import train
from tests import tolerance
from tests.conftest import tiny_config

pytestmark = pytest.mark.slow  # end-to-end runs

SEEDS = (0, 1)
TEST_IMAGES_PER_TASK = 24  # conftest.make_npz: 2 classes x 12 test images per task


def _results(workdir):
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """PAH on the tiny npz sequence (random class order, so the seeds also differ in their data):
  every seed separately, then all of them in one parallel program."""
  root = tmp_path_factory.mktemp("parallel")
  from tests.conftest import make_npz  # pylint: disable=g-import-not-at-top
  config = tiny_config(make_npz(root / "tiny.npz"))
  config.data.class_order = "random"
  config.train.augment = True  # per-seed augmentation keys must follow each seed too
  # 12x12 prototypes: with 4x4 ones the deepest BatchNorms normalise 2 numbers per channel
  # (2 prototypes at 1x1), and from the second task on (L_sp) rounding differences grow
  # tenfold per step: the toy run is chaotic and no bound could hold on every CPU.
  config.pah.prototype_size = 12
  separate = {}
  with paper_tables.compile_cache(str(root / "jax_cache")):  # the second separate run compiles nothing
    for s in SEEDS:
      c = config.copy_and_resolve_references()
      c.seed = s
      train.train_and_evaluate(c, str(root / f"separate_{s}"))
      separate[s] = _results(root / f"separate_{s}")
    # As the command line runs it: --config.train.parallel_seeds=2 from seed 0.
    parallel_config = config.copy_and_resolve_references()
    parallel_config.train.parallel_seeds = len(SEEDS)
    main._train_parallel_seeds(parallel_config, str(root / "parallel"))  # pylint: disable=protected-access
  workdirs = train.seed_workdirs(str(root / "parallel"), SEEDS)
  parallel = [_results(w) for w in workdirs]
  return config, root, separate, parallel, workdirs


def test_each_seed_gets_its_separate_runs_accuracy_matrix(runs):
  _, _, separate, parallel, _ = runs
  for s, got in zip(SEEDS, parallel):
    want = separate[s]
    assert got["config"]["seed"] == s
    assert got["class_order"] == want["class_order"]
    tolerance.assert_same_accuracies(got["accuracy_matrix"], want["accuracy_matrix"], num_test=TEST_IMAGES_PER_TASK,
                                     err_msg=f"seed {s}")
  # The seeds really are different runs (data order, classes, initialisation).
  assert len({json.dumps(r["accuracy_matrix"]) + str(r["class_order"]) for r in parallel}) == len(SEEDS)


def _logged_losses(workdir):
  with open(os.path.join(workdir, "tensorboard", "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  keys = sorted({k for r in records for k in r if k.startswith("train/loss")})
  return {k: [r[k] for r in records if k in r] for k in keys}


def test_each_seed_follows_its_separate_runs_losses(runs):
  _, root, _, _, workdirs = runs
  separate = {s: _logged_losses(root / f"separate_{s}") for s in SEEDS}
  for s, workdir in zip(SEEDS, workdirs):
    got = _logged_losses(workdir)
    assert got.keys() == separate[s].keys() and "train/loss" in got
    for key, want in separate[s].items():
      tolerance.assert_same_trajectory(got[key], want, err_msg=f"seed {s} {key}")
  with pytest.raises(AssertionError):  # the bound separates two different runs
    tolerance.assert_same_trajectory(separate[SEEDS[1]]["train/loss"], separate[SEEDS[0]]["train/loss"])


def test_each_seed_ends_with_its_separate_runs_parameters(runs):
  """The parallel program's checkpoint of seed s holds the parameters seed s's separate run
  ended with: they compute the same function (every task's logits on its test images, batch
  statistics) up to amplified rounding; the other seed's parameters are far outside that."""
  config, root, _, _, workdirs = runs
  from pah_jax import checkpointing  # pylint: disable=g-import-not-at-top
  from pah_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from pah_jax import images as images_lib  # pylint: disable=g-import-not-at-top

  trained = {}
  for s, workdir in zip(SEEDS, workdirs):
    c = config.copy_and_resolve_references()
    c.seed = s
    seq = data_lib.load_tasks(c.data, s)
    method = train.build_method(c, seq)
    template = train.create_state(method, c)
    with checkpointing.Checkpointer(workdir) as a, checkpointing.Checkpointer(str(root / f"separate_{s}")) as b:
      (got, _), (want, _) = a.restore(template), b.restore(template)
    assert int(got.step) == int(want.step)
    images = [images_lib.normalize(jnp.asarray(t.x_test), seq.mean, seq.std) for t in seq.tasks]
    outputs = jax.jit(lambda state, images=images, method=method: jnp.concatenate(
        [method.logits(state.params, state.batch_stats, x, j, True) for j, x in enumerate(images)]))
    tolerance.assert_same_trained_function(outputs(got), outputs(want), outputs(template), err_msg=f"seed {s}")
    trained[s] = (outputs, want, template)
  outputs, want, template = trained[SEEDS[0]]
  with pytest.raises(AssertionError):  # the bound separates two different runs
    tolerance.assert_same_trained_function(outputs(trained[SEEDS[1]][1]), outputs(want), outputs(template))


def test_a_finished_parallel_run_is_reread_and_a_seed_resumes_alone(runs):
  config, _, _, parallel, workdirs = runs
  again = train.train_seeds(config, SEEDS, workdirs)
  assert [r["accuracy_matrix"] for r in again] == [r["accuracy_matrix"] for r in parallel]
  c = config.copy_and_resolve_references()
  c.seed = SEEDS[1]
  alone = train.train_and_evaluate(c, workdirs[1])  # the usual single-run workdir: re-reported
  assert alone["accuracy_matrix"] == parallel[1]["accuracy_matrix"]


def test_seed_workdirs_at_different_points_are_refused(runs, tmp_path):
  config, root, _, _, _ = runs
  with pytest.raises(errors.UserError, match="different points"):
    train.train_seeds(config, (0, 5), [str(root / "separate_0"), str(tmp_path / "seed_5")])
  with pytest.raises(errors.UserError, match="distinct seeds"):
    train.train_seeds(config, (0, 0), [str(tmp_path / "a"), str(tmp_path / "b")])


def test_the_comparison_script_reports_differences_and_times(runs):
  from experiments import parallel_seeds as script  # pylint: disable=g-import-not-at-top

  _, _, separate, parallel, _ = runs
  result = script.compare([separate[s] for s in SEEDS], parallel, SEEDS)
  assert result["max_abs_difference"] <= 100.0 / TEST_IMAGES_PER_TASK  # one test image (see the module docstring)
  assert result["separate_seconds"] == pytest.approx(sum(separate[s]["seconds"] for s in SEEDS))
  assert result["speedup"] == pytest.approx(result["separate_seconds"] / parallel[0]["seconds"])
  md = script.markdown(result, "cmd", "cpu")
  assert md.count("\n| ") == 1 + len(SEEDS) and "speed-up" in md


def test_parallel_seeds_killed_inside_a_task_resume_exactly(tmp_path):
  """--config.train.parallel_seeds=2 with a checkpoint every 3 steps, SIGKILLed after a
  checkpoint inside the first task and rerun: each seed's results.json equals the one its
  uninterrupted parallel run writes (the same program on the same inputs)."""
  import signal  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top

  from tests.conftest import make_npz  # pylint: disable=g-import-not-at-top

  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  npz = make_npz(tmp_path / "tiny.npz")
  steps_per_task = 12  # 96 training images per task, batch 16, 2 epochs

  def command(workdir):
    return [sys.executable, "-m", "pah_jax.main", "--config=configs/default.py", f"--workdir={workdir}",
            "--config.data.name=npz", f"--config.data.path={npz}", "--config.data.num_tasks=2",
            "--config.model.width=0.125", "--config.pah.prototype_size=4", "--config.train.epochs=2",
            "--config.train.batch_size=16", "--config.train.eval_batch_size=32", "--config.train.log_every_steps=1",
            "--config.train.parallel_seeds=2", "--config.train.checkpoint_every_steps=3",
            f"--config.train.compilation_cache={tmp_path / 'jax_cache'}"]

  env = {**os.environ, "PYTHONPATH": root}

  def run_to_end(workdir):
    proc = subprocess.run(command(workdir), cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

  def results(workdir):
    out = []
    for s in SEEDS:
      r = _results(os.path.join(workdir, f"seed_{s}"))
      r.pop("seconds")
      out.append(r)
    return out

  run_to_end(tmp_path / "uninterrupted")
  killed = tmp_path / "killed"

  def saved_steps():
    steps = []
    for s in SEEDS:
      directory = killed / f"seed_{s}" / "checkpoints"
      steps.append({int(d) for d in os.listdir(directory) if d.isdigit()} if directory.is_dir() else set())
    return set.intersection(*steps)

  proc = subprocess.Popen(command(killed), cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  deadline = time.time() + 300
  while not saved_steps() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  inside = saved_steps()
  assert inside and max(inside) < steps_per_task, f"no checkpoint inside the first task before the kill: {inside}"
  run_to_end(killed)
  assert results(killed) == results(tmp_path / "uninterrupted")
