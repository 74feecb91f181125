"""Sweeps (pah_jax.sweep): the same grid through every local executor gives the same runs; a
preempted submitit job is requeued and ends as an uninterrupted run; a killed sweep reports
what is missing and finishes only that; bad input is one error line.

Every run is the same program on the same inputs whichever process runs it, so the runs'
results must be identical, not close.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from pah_jax import sweep as sweep_lib
from pah_jax.errors import UserError
from tests.conftest import make_npz
from tests.conftest import tiny_config

pytestmark = pytest.mark.slow  # end-to-end runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRID = "--grid=pah.lambda_sm=0.0,0.5"
SEEDS = "--seeds=0,1"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  root = tmp_path_factory.mktemp("sweep")
  return make_npz(root / "tiny.npz"), str(root / "jax_cache")


def _args(npz, cache):
  return ["--config=configs/default.py", "--config.data.name=npz", f"--config.data.path={npz}",
          "--config.data.num_tasks=2", "--config.model.width=0.125", "--config.pah.prototype_size=4",
          "--config.train.epochs=1", "--config.train.batch_size=16", "--config.train.eval_batch_size=32",
          f"--config.train.compilation_cache={cache}"]


def _sweep(*args, check=True, **kwargs):
  proc = subprocess.run([sys.executable, "-m", "pah_jax.sweep", *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=900, env={**os.environ, "PYTHONPATH": ROOT}, **kwargs)
  if check:
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  return proc


def _runs(directory):
  with open(os.path.join(directory, "table.json")) as f:
    return json.load(f)["runs"]


@pytest.fixture(scope="module")
def inline(data, tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("inline") / "sweep")
  _sweep(*_args(*data), f"--workdir={directory}", SEEDS, GRID)
  return directory


def test_every_local_executor_gives_the_same_runs(data, inline, tmp_path):
  runs = _runs(inline)
  assert len(runs) == 4 and all(r["status"] == "done" for r in runs)
  assert [(r["point"], r["seed"]) for r in runs] == [({"pah.lambda_sm": v}, s) for v in (0.0, 0.5) for s in (0, 1)]
  assert len({json.dumps(r["accuracy_matrix"]) for r in runs}) > 1  # the runs really differ
  for executor in ("local", "submitit-local"):
    directory = str(tmp_path / executor)
    _sweep(*_args(*data), f"--workdir={directory}", SEEDS, GRID, f"--executor={executor}", "--max-parallel=2")
    assert _runs(directory) == runs, executor
  with open(os.path.join(inline, "table.md")) as f:
    table = f.read()
  assert "| pah.lambda_sm | AA | FM | plasticity | seeds done |" in table and table.count("2/2") == 2
  for r in runs:  # plasticity: the mean of the accuracy matrix's diagonal
    assert r["plasticity"] == pytest.approx(sum(r["accuracy_matrix"][j][j] for j in range(2)) / 2)


def test_a_preempted_submitit_job_is_requeued_and_ends_as_an_uninterrupted_run(data, tmp_path):
  """SLURM's preemption signal (USR2) sent to the job's process after a checkpoint inside the
  first task: the loop saves, submitit requeues the job, and it resumes from the checkpoint."""
  npz, cache = data

  def start(directory):
    config = tiny_config(npz)
    config.train.epochs, config.train.checkpoint_every_steps, config.train.log_every_steps = 2, 2, 1
    config.train.compilation_cache = cache
    sweep = sweep_lib.create(config, str(directory), [], [0], parallel_seeds=False)
    return sweep, sweep_lib.run_submitit(sweep, sweep_lib._pending(sweep), "submitit-local",  # pylint: disable=protected-access
                                         sweep_lib.SlurmSettings(), wait=False)[0]

  def results(sweep):
    with open(os.path.join(sweep.workdir(sweep.points[0], 0), "results.json")) as f:
      r = json.load(f)
    r.pop("seconds")
    return r

  reference, job = start(tmp_path / "reference")
  job.result()
  sweep, job = start(tmp_path / "preempted")
  workdir = sweep.workdir(sweep.points[0], 0)
  checkpoints = os.path.join(workdir, "checkpoints")
  deadline = time.time() + 300
  while not (os.path.isdir(checkpoints) and any(d.isdigit() for d in os.listdir(checkpoints))):
    assert time.time() < deadline and job.state == "RUNNING", "no checkpoint inside the first task"
    time.sleep(0.02)
  with open(os.path.join(workdir, "lock")) as f:
    pid = int(f.read().split()[1])  # the job's training process
  os.kill(pid, signal.SIGUSR2)
  job.result()
  with open(job.paths.stdout) as f:
    log = f.read()
  assert "SIGUSR2: saving a checkpoint" in log and "Requeued job" in log
  assert results(sweep) == results(reference)


def test_a_killed_sweep_reports_what_is_missing_and_finishes_only_that(data, inline, tmp_path):
  directory = str(tmp_path / "killed")
  args = [*_args(*data), f"--workdir={directory}", SEEDS, GRID]
  proc = subprocess.Popen([sys.executable, "-m", "pah_jax.sweep", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": ROOT})
  first = os.path.join(directory, "pah.lambda_sm=0.0", "seed_0", "results.json")
  deadline = time.time() + 600
  while not os.path.exists(first) and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  status = _sweep(f"--workdir={directory}", "--status").stdout
  assert "pah.lambda_sm=0.0  seed 0: done  AA" in status
  assert "pah.lambda_sm=0.5  seed 1: queued" in status
  missing = sum(r["status"] != "done" for r in _runs(directory))
  assert 1 <= missing <= 3
  out = _sweep(*args).stdout
  assert f"{missing} job(s) to run" in out
  assert _runs(directory) == _runs(inline)


def test_bad_sweeps_are_one_error_line(data, inline, tmp_path):
  args = _args(*data)
  for extra, message in (([f"--workdir={inline}", SEEDS, "--grid=pah.lambda_sm=0.0,0.9"], "another grid"),
                         ([f"--workdir={inline}", SEEDS, GRID, "--config.train.epochs=2"], "another config"),
                         ([f"--workdir={tmp_path / 'a'}", "--grid=pah.no_such_key=1"], "no key"),
                         ([f"--workdir={tmp_path / 'b'}", "--grid=pah.lambda_sm=x"], "pah.lambda_sm"),
                         ([f"--workdir={tmp_path / 'c'}", "--executor=slurm"], "sbatch")):
    if message == "sbatch" and subprocess.run(["which", "sbatch"], capture_output=True).returncode == 0:
      continue
    proc = _sweep(*args, *extra, check=False)
    assert proc.returncode == 2, (extra, proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], (extra, proc.stderr)
  proc = _sweep(f"--workdir={tmp_path / 'none'}", "--status", check=False)
  assert proc.returncode == 2 and "holds no sweep" in proc.stderr


def test_a_crashed_run_keeps_its_error_line_and_the_sweep_goes_on(data, tmp_path):
  """A batch larger than a task's training set fails that point's run (after data loading);
  the other point still runs, and --status shows the error line."""
  directory = str(tmp_path / "crash")
  proc = _sweep(*_args(*data), f"--workdir={directory}", "--grid=train.batch_size=16,4096", check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  runs = {r["point"]["train.batch_size"]: r for r in _runs(directory)}
  assert runs[16]["status"] == "done" and runs[4096]["status"] == "failed"
  assert runs[4096]["error"].startswith("error: config train.batch_size=4096 is larger than")
  status = _sweep(f"--workdir={directory}", "--status").stdout
  assert "train.batch_size=4096  seed 0: failed  error: config train.batch_size=4096" in status


def test_grid_values_are_parsed_as_the_command_line_parses_them():
  config = tiny_config("unused.npz")
  grid = sweep_lib.parse_grid(config, ["optim.lr_backbone=1e-4,3e-4", "method=pah,finetune", "train.augment=true"])
  assert grid == (("optim.lr_backbone", (1e-4, 3e-4)), ("method", ("pah", "finetune")), ("train.augment", (True,)))
  with pytest.raises(UserError, match="given twice"):
    sweep_lib.parse_grid(config, ["method=pah", "method=lwf"])
  with pytest.raises(UserError, match="--seeds"):
    sweep_lib.parse_grid(config, ["seed=1,2"])
