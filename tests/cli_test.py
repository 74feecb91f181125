"""The command line as a user of the installed package meets it: a config of the checkout run
from another directory, with no --workdir, through `python -m pah_jax.main` and `pah-jax`;
its output carries no TensorFlow/TFDS start-up noise."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import write_fashion_mnist_idx

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Lines that TensorFlow's C++ logging and TFDS print on their own and that a user cannot act on.
NOISE = ("oneDNN custom operations", "absl::InitializeLog", "has no dataset_info.json", "cpu_feature_guard",
         "The default buffer size")


def _outside_env(tmp_path):
  """The environment of a user outside the checkout: no PYTHONPATH, a fresh prepared-data cache."""
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  env["PAH_JAX_TFDS_DIR"] = str(tmp_path / "tfds")  # so TFDS really prepares (its noisiest phase)
  return env


def test_installed_package_runs_a_checkout_config_from_anywhere(tmp_path):
  env = _outside_env(tmp_path)
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  found = subprocess.run([sys.executable, "-c", "import pah_jax; print(pah_jax.__file__)"], cwd=elsewhere, env=env,
                         capture_output=True, text=True)
  # `make setup` installs it (editable) and the latest leg with a plain `pip install .`.
  assert found.returncode == 0, f"pah_jax is not installed in this environment (pip install .): {found.stderr[-500:]}"
  idx_dir = tmp_path / "idx"
  idx_dir.mkdir()
  write_fashion_mnist_idx(idx_dir, n_train=40, n_test=20)
  args = [f"--config={ROOT}/configs/fashion_mnist.py", f"--config.data.path={idx_dir}", "--config.model.width=0.125",
          "--config.train.epochs=1", "--config.train.batch_size=4", "--config.train.eval_batch_size=8",
          "--config.pah.prototype_size=4", "--config.train.compilation_cache="]
  proc = subprocess.run([sys.executable, "-m", "pah_jax.main", *args], cwd=elsewhere, env=env, capture_output=True,
                        text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "workdir: runs/fashion_mnist (no --workdir given)" in proc.stdout
  with open(elsewhere / "runs" / "fashion_mnist" / "results.json") as f:
    results = json.load(f)
  assert len(results["accuracy_matrix"]) == 5
  for noise in NOISE:
    assert noise not in proc.stdout + proc.stderr, noise

  # The console script: the same command again re-reports the finished run.
  script = os.path.join(os.path.dirname(sys.executable), "pah-jax")
  assert os.path.isfile(script), f"{script}: the `pah-jax` console script is not installed"
  again = subprocess.run([script, *args], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
  assert again.returncode == 0, again.stderr[-3000:]
  assert f"AA  = {results['average_accuracy']:.2f}" in again.stdout, again.stdout[-2000:]
  for noise in NOISE:
    assert noise not in again.stdout + again.stderr, noise
