"""The command line refuses bad input with exit code 2 and one `error:` line, no traceback."""

import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args, cwd=ROOT, env=None):
  env = {**os.environ, "PYTHONPATH": ROOT, **(env or {})}
  return subprocess.run([sys.executable, "-m", "pah_jax.main", *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=300)


def assert_user_error(proc, *fragments):
  assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
  lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
  assert lines[-1].startswith("error: "), proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr
  for fragment in fragments:
    assert fragment in lines[-1], lines[-1]


FASHION = "--config=configs/fashion_mnist.py"


@pytest.mark.parametrize("override, fragment", [
    ("--config.method=nope", "method='nope'"),
    ("--config.data.name=mnist", "data.name='mnist'"),
    ("--config.data.num_tasks=3", "num_tasks"),
    ("--config.data.num_tasks=11", "num_tasks"),
    ("--config.pah.prototype_size=0", "pah.prototype_size=0"),
    ("--config.train.batch_size=0", "train.batch_size=0"),
    ("--config.train.epochs=0", "train.epochs=0"),
    ("--config.optim.lr_backbone=0", "optim.lr_backbone=0"),
    ("--config.optim.lr_prototypes=-1e-3", "optim.lr_prototypes"),
    ("--config.model.stem=vit", "model.stem='vit'"),
    ("--config.model.small_map_convs=dense", "model.small_map_convs='dense'"),
    ("--config.no_such_key=1", "no_such_key"),
])
def test_bad_config_values(override, fragment, tmp_path):
  assert_user_error(run_cli(FASHION, f"--workdir={tmp_path}/w", override), fragment)


def test_help_prints_the_usage_and_the_flags_and_exits_0():
  proc = run_cli("--help")
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.startswith("Command line: python -m pah_jax.main")
  for flag in ("--config", "--workdir", "--coordinator_address", "--num_processes", "--process_id"):
    assert f"  {flag}: " in proc.stdout
  assert "--verbosity" not in proc.stdout  # absl's logging flags are not ours to explain


def test_missing_flags_and_files(tmp_path):
  # No --workdir: runs/<config name> under the current directory, here unusable (a file).
  (tmp_path / "runs").write_text("")
  proc = run_cli(f"--config={ROOT}/configs/fashion_mnist.py", cwd=tmp_path)
  assert_user_error(proc, "runs/fashion_mnist")
  assert proc.stdout.startswith("workdir: runs/fashion_mnist (no --workdir given)")
  assert_user_error(run_cli(f"--workdir={tmp_path}/w"), "--config")
  assert_user_error(run_cli("--config=configs/no_such.py", f"--workdir={tmp_path}/w"), "no_such.py")
  assert_user_error(run_cli(FASHION, f"--workdir={tmp_path}/w", "--config.train.epochs=abc"), "epochs")


def test_workdir_that_is_a_file(tmp_path):
  f = tmp_path / "file"
  f.write_text("x")
  assert_user_error(run_cli(FASHION, f"--workdir={f}"), "is a file")


def test_missing_data(tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  # A TFDS cache of its own, so no copy prepared by another run is found.
  assert_user_error(run_cli(FASHION, f"--workdir={tmp_path}/w", f"--config.data.path={empty}",
                            "--config.data.download=False", env={"PAH_JAX_TFDS_DIR": str(tmp_path / "tfds")}),
                    "train-images-idx3-ubyte")


def test_npz_with_wrong_keys(tmp_path):
  path = tmp_path / "bad.npz"
  np.savez(path, images=np.zeros((4, 8, 8), np.uint8), labels=np.arange(4))
  assert_user_error(run_cli(FASHION, f"--workdir={tmp_path}/w", "--config.data.name=npz",
                            f"--config.data.path={path}", "--config.data.num_tasks=2"), "x_train")


def test_more_bad_values(tmp_path):
  assert_user_error(run_cli(FASHION, f"--workdir={tmp_path}/w", "--config.pah.lambda_sm=nan"), "finite")
  assert_user_error(run_cli(FASHION, "--workdir=/proc/pah_jax_cannot_write_here"), "workdir")


@pytest.mark.slow
def test_refusals_that_need_the_data(tmp_path):
  """A crop prototype that leaves the (padded 32x32) images; a batch larger than a task's data."""
  assert_user_error(run_cli("--config=configs/fashion_mnist_official.py", f"--workdir={tmp_path}/a",
                            "--config.pah.prototype_size=30"), "prototype_size=30")
  assert_user_error(run_cli(FASHION, f"--workdir={tmp_path}/b", "--config.data.max_train_per_task=100",
                            "--config.train.batch_size=128"), "batch_size=128")


def test_missing_pretrained_file(tmp_path):
  assert_user_error(run_cli(FASHION, f"--workdir={tmp_path}/w", f"--config.model.pretrained={tmp_path}/r18.npz"),
                    "no such file")
