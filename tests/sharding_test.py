"""The same run on 4 (forced host) devices and on 1 device: same losses within 1e-5 relative."""

import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = """
import sys
import jax
from pah_jax import train
from tests.conftest import tiny_config
config = tiny_config(sys.argv[1])
config.train.log_every_steps = 1
config.train.epochs = 1
# 12x12 prototypes: with 4x4 ones the deepest BatchNorms normalise 2 numbers per channel
# (2 prototypes at 1x1), which amplifies rounding differences of any reduction order.
config.pah.prototype_size = 12
config.train.loop = sys.argv[3]
assert jax.device_count() == int(sys.argv[4]), jax.devices()
train.train_and_evaluate(config, sys.argv[2])
"""


def _run(npz, workdir, devices, loop):
  env = {**os.environ, "PYTHONPATH": ROOT,
         "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run([sys.executable, "-c", SCRIPT, npz, workdir, loop, str(devices)], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(os.path.join(workdir, "tensorboard", "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  losses = {k: np.array([r[k] for r in records if k in r]) for k in ("train/loss", "train/loss_hm", "train/loss_sp")}
  with open(os.path.join(workdir, "results.json")) as f:
    return losses, json.load(f)


def test_four_devices_match_one(npz_path, tmp_path):
  one, results_one = _run(npz_path, str(tmp_path / "one"), 1, "python")
  four, results_four = _run(npz_path, str(tmp_path / "four"), 4, "python")
  for key in one:
    assert len(one[key]) == 12 and len(four[key]) == 12  # 2 tasks x 6 steps
    np.testing.assert_allclose(four[key], one[key], rtol=1e-5, atol=1e-7, err_msg=key)
  assert one["train/loss_sp"][6:].max() > 0  # task 1 has an old task: L_sp is really computed
  np.testing.assert_allclose(np.array(results_four["accuracy_matrix"], float),
                             np.array(results_one["accuracy_matrix"], float), atol=1e-9)
  # The compiled epoch loop (the GPU/TPU path), sharded, follows the same trajectory; XLA
  # fuses the loop body differently, so rounding differs slightly more.
  compiled, _ = _run(npz_path, str(tmp_path / "compiled"), 4, "compiled")
  for key in one:
    np.testing.assert_allclose(compiled[key], one[key], rtol=1e-4, atol=1e-6, err_msg=key)
