"""One run over two processes on this machine (gloo collectives over loopback): the same run as
one process with the same two devices, one set of files, and exact resume after both processes
are killed."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from pah_jax import distributed
from pah_jax.errors import UserError
from tests.conftest import make_npz

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS_PER_TASK = 12  # 96 training images per task, batch 16: 6 steps per epoch, 2 epochs


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _command(npz, workdir, cache, *extra):
  return [sys.executable, "-m", "pah_jax.main", "--config=configs/default.py", f"--workdir={workdir}",
          "--config.data.name=npz", f"--config.data.path={npz}", "--config.data.num_tasks=2",
          "--config.model.width=0.125", "--config.pah.prototype_size=4", "--config.train.epochs=2",
          "--config.train.batch_size=16", "--config.train.eval_batch_size=32", "--config.train.log_every_steps=1",
          "--config.train.checkpoint_every_steps=4", f"--config.train.compilation_cache={cache}", *extra]


def _env(devices: int) -> dict:
  return {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu",
          "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}


def _start_two(npz, workdir, cache) -> list[subprocess.Popen]:
  address = f"127.0.0.1:{_free_port()}"
  return [subprocess.Popen(_command(npz, workdir, cache, f"--coordinator_address={address}", "--num_processes=2",
                                    f"--process_id={i}"), cwd=ROOT, env=_env(1), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True) for i in range(2)]


def _finish(procs, timeout=600) -> list[str]:
  outs = []
  for p in procs:
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, err[-3000:]
    outs.append(out)
  return outs


def _losses(workdir) -> list[tuple[int, float]]:
  with open(os.path.join(workdir, "tensorboard", "metrics.jsonl")) as f:
    return [(r["step"], r["train/loss"]) for r in map(json.loads, f) if "train/loss" in r]


def _results(workdir) -> dict:
  with open(os.path.join(workdir, "results.json")) as f:
    r = json.load(f)
  r.pop("seconds")
  return r


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """The same run as 1 process x 2 devices and as 2 processes x 1 device."""
  tmp = tmp_path_factory.mktemp("distributed")
  npz, cache = make_npz(tmp / "tiny.npz"), tmp / "jax_cache"
  one = tmp / "one_process"
  proc = subprocess.run(_command(npz, one, cache), cwd=ROOT, env=_env(2), capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  two = tmp / "two_processes"
  outs = _finish(_start_two(npz, two, cache))
  return tmp, npz, cache, one, two, outs


@pytest.mark.slow
def test_two_processes_compute_what_one_process_with_their_devices_does(runs):
  """Per-step losses within 1e-5 relative and the same accuracy matrix. Both programs split each
  batch of 16 over the same 2 devices, and a sum of two partial sums rounds the same in either
  order; only the all-reduce's implementation differs (gloo between processes, XLA's in-process
  one), which may round a step's reductions differently at float32's 1e-7. Observed on this
  machine: identical to the bit."""
  _, _, _, one, two, outs = runs
  assert "2 processes, 2 devices" in outs[0] and "AA  =" in outs[0]
  assert "task" not in outs[1] and "AA" not in outs[1] and "small_map_convs" not in outs[1]  # process 0 reports
  a, b = _losses(one), _losses(two)
  assert [s for s, _ in a] == [s for s, _ in b] and len(a) == 2 * STEPS_PER_TASK
  np.testing.assert_allclose([v for _, v in b], [v for _, v in a], rtol=1e-5)
  r1, r2 = _results(one), _results(two)
  assert r2["accuracy_matrix"] == r1["accuracy_matrix"]
  # One set of files, written by process 0; no lock left behind.
  assert sorted(os.listdir(two)) == sorted(os.listdir(one))
  assert not os.path.exists(two / "lock")
  with open(two / "tensorboard" / "metrics.jsonl") as f:
    assert len({json.loads(line)["step"] for line in f}) == len(set(s for s, _ in b) | {STEPS_PER_TASK})


@pytest.mark.slow
def test_both_processes_killed_inside_a_task_resume_exactly(runs):
  """SIGKILL to both processes after a checkpoint inside the first task; the same two commands
  again finish the run with the uninterrupted two-process run's results and losses."""
  tmp, npz, cache, _, two, _ = runs
  killed = tmp / "killed"
  procs = _start_two(npz, killed, cache)
  checkpoints = killed / "checkpoints"
  deadline = time.time() + 300

  def saved():
    return {int(d) for d in os.listdir(checkpoints) if d.isdigit()} if checkpoints.is_dir() else set()

  while not saved() and all(p.poll() is None for p in procs) and time.time() < deadline:
    time.sleep(0.02)
  for p in procs:
    p.send_signal(signal.SIGKILL)
    p.communicate()
  inside = saved()
  assert inside and max(inside) < STEPS_PER_TASK, f"no checkpoint inside the first task before the kill: {inside}"
  assert not (killed / "results.json").exists()
  _finish(_start_two(npz, killed, cache))
  assert _results(killed) == _results(two)
  assert dict(_losses(killed)) == dict(_losses(two))


@pytest.mark.parametrize("flags, message", [
    (("127.0.0.1:1234", None, None), "go together"),
    (("localhost", 2, 0), "must be HOST:PORT"),
    (("127.0.0.1:1234", 0, 0), "--num_processes=0"),
    (("127.0.0.1:1234", 2, 2), "--process_id=2 must be in 0..1"),
])
def test_incomplete_or_inconsistent_flags_are_refused(flags, message):
  with pytest.raises(UserError, match=message):
    distributed.check_flags(*flags)


def test_a_lone_process_joins_nothing(monkeypatch):
  for variable in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES"):
    monkeypatch.delenv(variable, raising=False)
  assert not distributed.check_flags(None, None, None) and distributed.detected_cluster() is None
  monkeypatch.setenv("SLURM_NTASKS", "1")  # sbatch with one task: a lone process
  assert distributed.detected_cluster() is None
  monkeypatch.setenv("SLURM_NTASKS", "4")
  assert distributed.detected_cluster() == "SLURM (srun)"


def test_the_command_line_refuses_bad_flags_with_one_line():
  proc = subprocess.run([sys.executable, "-m", "pah_jax.main", "--config=configs/default.py", "--workdir=/tmp/x",
                         "--num_processes=2"], cwd=ROOT, env=_env(1), capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2 and proc.stderr.startswith("error: --coordinator_address, --num_processes and")
  assert len(proc.stderr.strip().splitlines()) == 1
