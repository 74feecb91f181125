"""Nothing finished is lost: mid-task resume, stop signals, workdir lock, corrupt checkpoints."""

import json
import os
import signal
import subprocess
import sys

import pytest

from pah_jax import checkpointing
from pah_jax import errors
from pah_jax import reporting
from pah_jax import train
from tests.conftest import tiny_config

pytestmark = pytest.mark.slow  # end-to-end runs


def _results(workdir):
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  results.pop("seconds")
  return results


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  """Results of an uninterrupted tiny run, shared by the tests below."""
  from tests.conftest import make_npz

  root = tmp_path_factory.mktemp("reference")
  npz = make_npz(root / "tiny.npz")
  workdir = str(root / "run")
  train.train_and_evaluate(tiny_config(npz), workdir)
  return npz, _results(workdir)


def test_mid_task_checkpoint_resume_equals_uninterrupted(uninterrupted, tmp_path, monkeypatch):
  npz, expected = uninterrupted
  config = tiny_config(npz)
  config.train.checkpoint_every_steps = 5  # 12 steps per task (2 epochs of 6): checkpoints inside tasks
  saved = []
  real_save = checkpointing.Checkpointer.save

  def save_then_die(self, state, meta):
    real_save(self, state, meta)
    saved.append(meta["position"])
    if len(saved) == 4:
      raise KeyboardInterrupt  # killed right after a checkpoint inside task 1

  monkeypatch.setattr(checkpointing.Checkpointer, "save", save_then_die)
  workdir = str(tmp_path / "w")
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(config, workdir)
  assert saved == [{"task": 0, "epoch": 0, "batch": 5}, {"task": 0, "epoch": 1, "batch": 4},
                   {"task": 1, "epoch": 0, "batch": 0}, {"task": 1, "epoch": 0, "batch": 3}]
  monkeypatch.setattr(checkpointing.Checkpointer, "save", real_save)
  train.train_and_evaluate(tiny_config(npz), workdir)  # checkpoint_every_steps may change on resume
  assert _results(workdir) == expected


def test_sigterm_saves_a_checkpoint_and_resume_matches(uninterrupted, tmp_path, monkeypatch):
  npz, expected = uninterrupted
  calls = []
  real_advance = reporting.Progress.advance

  def advance_and_signal(self, *args):
    real_advance(self, *args)
    calls.append(1)
    if len(calls) == 1:
      os.kill(os.getpid(), signal.SIGTERM)

  monkeypatch.setattr(reporting.Progress, "advance", advance_and_signal)
  workdir = str(tmp_path / "w")
  with pytest.raises(errors.Stopped, match="SIGTERM at task 0, epoch 0, batch 4") as stopped:
    train.train_and_evaluate(tiny_config(npz), workdir)
  assert stopped.value.signum == signal.SIGTERM
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
  assert not os.path.exists(os.path.join(workdir, "lock"))
  monkeypatch.setattr(reporting.Progress, "advance", real_advance)
  train.train_and_evaluate(tiny_config(npz), workdir)
  assert _results(workdir) == expected


def test_corrupt_newest_checkpoint_falls_back_to_the_previous(uninterrupted, tmp_path, capsys):
  npz, expected = uninterrupted
  workdir = str(tmp_path / "w")
  train.train_and_evaluate(tiny_config(npz), workdir)
  steps = sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())
  assert len(steps) == 2
  newest = os.path.join(workdir, "checkpoints", str(steps[-1]), "state")
  for root, _, files in os.walk(newest):  # truncate every data file of the newest checkpoint
    for name in files:
      with open(os.path.join(root, name), "r+b") as f:
        f.truncate(max(0, os.path.getsize(os.path.join(root, name)) // 3))
  os.remove(os.path.join(workdir, "results.json"))
  train.train_and_evaluate(tiny_config(npz), workdir)
  assert "is unreadable" in capsys.readouterr().out
  assert _results(workdir) == expected


def test_second_run_on_a_workdir_is_refused_and_stale_lock_taken_over(npz_path, tmp_path):
  workdir = tmp_path / "w"
  workdir.mkdir()
  sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  try:
    (workdir / "lock").write_text(f"{__import__('socket').gethostname()} {sleeper.pid}")
    with pytest.raises(errors.UserError, match="in use by another run"):
      train.train_and_evaluate(tiny_config(npz_path), str(workdir))
    assert (workdir / "lock").exists()  # the live run's lock is left alone
  finally:
    sleeper.kill()
    sleeper.wait()
  # The same lock, now of a dead process, is stale: the run takes it over and finishes.
  results = train.train_and_evaluate(tiny_config(npz_path), str(workdir))
  assert results["average_accuracy"] > 0
  assert not (workdir / "lock").exists()


def test_non_finite_loss_stops_with_error_and_keeps_the_last_checkpoint(npz_path, tmp_path, monkeypatch):
  """A NaN from task 1 on: error names task and epoch; task 0's checkpoint survives."""
  import jax.numpy as jnp

  from pah_jax import losses

  real = losses.distill_old_tasks
  monkeypatch.setattr(losses, "distill_old_tasks",
                      lambda s, t, mask, **kw: jnp.where(jnp.any(mask), jnp.nan, real(s, t, mask, **kw)))
  workdir = str(tmp_path / "w")
  with pytest.raises(errors.UserError, match=r"non-finite loss.* in task 1, epoch 0"):
    train.train_and_evaluate(tiny_config(npz_path), workdir)
  meta = checkpointing.Checkpointer(workdir).latest_meta()
  assert meta["position"] == {"task": 1, "epoch": 0, "batch": 0}
  assert not os.path.exists(os.path.join(workdir, "results.json"))


def test_checkpoint_of_another_layout_is_refused(uninterrupted, tmp_path, monkeypatch):
  npz, _ = uninterrupted
  workdir = str(tmp_path / "w")
  config = tiny_config(npz)
  config.data.num_tasks = 1  # one task is enough to leave a checkpoint
  train.train_and_evaluate(config, workdir)
  monkeypatch.setattr(checkpointing, "LAYOUT_VERSION", checkpointing.LAYOUT_VERSION + 1)
  with pytest.raises(errors.UserError, match="another pah_jax layout"):
    train.train_and_evaluate(config, workdir)
