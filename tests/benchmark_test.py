"""experiments/benchmark.py at toy scale: it runs end to end and writes the documented JSON.

The benchmark itself is not part of the package; these tests only guard its plumbing
(flags, rows, ratios, JSON keys), that it times the library's own steps and phases, and the
PyTorch reference's pass structure. The scripts run as `python -m experiments.<name>` from
the repository root.
"""

import json
import os
import subprocess
import sys

import pytest

from experiments import benchmark as bench
from pah_jax.errors import UserError

pytestmark = pytest.mark.slow  # end-to-end runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULE = [sys.executable, "-m", "experiments.benchmark"]


def test_toy_run_writes_rows_ratios_and_machine(tmp_path):
  out = tmp_path / "bench.json"
  # Compile time dominates at this size; XLA's lowest optimisation level halves it.
  env = {**os.environ, "XLA_FLAGS": "--xla_backend_optimization_level=0", "JAX_PLATFORMS": "cpu"}
  cmd = [*MODULE, "--width", "0.0625", "--batch-size", "4", "--num-tasks", "3",
         "--classes-per-task", "2", "--image-size", "12", "--steps", "1", "--warmup", "1", "--repeats", "1",
         "--skip-torch", "--profile", "--breakdown", "--out", str(out)]
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = json.loads(out.read_text())
  assert {"settings", "machine", "rows", "ratios", "targets", "table"} <= set(results)
  assert {"platform", "cpu_count", "jax_backend", "jax_devices", "torch"} <= set(results["machine"])
  for name in ("finetune", "pah_step", "finetune_chunk", "pah_chunk"):
    row = results["rows"][name]
    for key in ("images_per_second", "seconds_per_step", "compile_seconds", "first_call_seconds",
                "peak_memory_bytes", "peak_memory_source"):
      assert key in row, (name, key)
    assert row["images_per_second"] > 0
  assert results["rows"]["pah_step"]["task_id"] == 2
  # XLA's FLOP count (HLO lowered for CPU on any backend); PAH does more work than fine-tuning.
  assert results["ratios"]["pah_step_over_finetune_flops"] > 1.0
  assert results["ratios"]["pah_step_over_finetune_step_time"] > 0
  assert "pah_step: step <= 1.5x finetune" in results["targets"]
  # The training-path rows compare like with like: PAH's chunk against finetune's chunk.
  assert results["ratios"]["pah_chunk_over_finetune_chunk_step_time"] > 0
  assert results["rows"]["finetune_chunk"]["last_metrics"]["loss"] > 0
  assert "pah_chunk: step <= 1.5x finetune_chunk" in results["targets"]
  assert "pah_step" in proc.stdout
  # --profile traces every JAX row; a CPU trace has no device plane, and the summary says so.
  assert set(results["profile"]) == {"finetune", "pah_step", "finetune_chunk", "pah_chunk"}
  assert results["profile"]["pah_step"]["device_plane"] is None
  assert "| pah_step | no device trace |" in proc.stdout
  # --breakdown times the PAH Method's own phases, its forwards and the loop's whole step.
  assert set(results["breakdown"]) == {"teacher_forward", "prototype_forward", "main_loss_and_grad", "main_update",
                                       "prototype_loss_and_grad", "full_step_no_donation"}
  assert all(part["seconds"] > 0 for part in results["breakdown"].values())


def test_config_overrides_are_typed_and_checked():
  args = bench.parse_args(["--width", "0.5", "--stem", "cifar", "--config", "model.dtype=bfloat16",
                           "--config", "pah.lambda_sm=1", "--config", "train.augment=true"])
  config = bench.official_config(args)
  assert (config.model.width, config.model.stem, config.model.dtype) == (0.5, "cifar", "bfloat16")
  assert config.pah.lambda_sm == 1.0 and isinstance(config.pah.lambda_sm, float)
  assert config.train.augment is True
  assert config.pah.kl_direction == "new_old"  # the official preset is the base
  for bad, message in (("model.nope=1", "no key model.nope"), ("train.epochs=1.5", "expected an int"),
                       ("model.dtype", "expected KEY=VALUE")):
    with pytest.raises(UserError, match=message):
      bench.official_config(bench.parse_args(["--config", bad]))


@pytest.mark.parametrize("bad, message", [("model.nope=1", "no key model.nope"),
                                          ("train.augment=maybe", "expected a bool")])
def test_a_bad_override_is_one_error_line_and_exit_code_2(bad, message):
  proc = subprocess.run([*MODULE, "--config", bad], cwd=ROOT, capture_output=True, text=True, timeout=300,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 2, proc.stderr[-3000:]
  (line,) = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
  assert message in line and "Traceback" not in proc.stderr


def test_finetune_rows_run_the_finetune_method_with_heads_at_lr_heads():
  """The fine-tune rows are pah_jax's own `finetune` method: one step moves the current head by
  AdamW's first step at optim.lr_heads (|update| = lr for every entry with a gradient)."""
  import jax
  import numpy as np

  args = bench.parse_args(["--width", "0.0625", "--batch-size", "4", "--num-tasks", "2", "--classes-per-task", "2",
                           "--image-size", "12", "--config", "optim.lr_heads=0.0123",
                           "--config", "optim.weight_decay=0.0"])
  method, step, state, _ = bench._finetune_setup(args, bench.official_config(args))  # pylint: disable=protected-access
  assert method.name == "finetune" and set(state.params) == {"backbone", "heads"}
  before = jax.device_get(state.params["heads"]["kernel"])
  x, y = bench.synthetic_batch(np.random.default_rng(0), 4, 12, 2)
  state, metrics = jax.jit(step)(state, x, y, 1)
  assert set(metrics) == set(method.metric_names)
  moved = np.abs(jax.device_get(state.params["heads"]["kernel"]) - before)
  assert np.median(moved[1][moved[1] > 0]) == pytest.approx(0.0123, rel=1e-3) and moved[1].max() <= 0.0123 * 1.0001
  assert not moved[0].any()  # old heads stay


def test_official_reference_runs_one_plus_two_k_backbone_passes():
  torch = pytest.importorskip("torch")
  from experiments import torch_reference as ref
  torch.manual_seed(0)
  k, c = 4, 3
  model = ref.PAHModel(k, c, width=0.0625, stem="imagenet")
  step = ref.OfficialStep(model)
  calls = {"new": [], "old": []}
  model.backbone.register_forward_hook(lambda m, i, o: calls["new"].append(i[0].shape[-1]))
  step.old.backbone.register_forward_hook(lambda m, i, o: calls["old"].append(i[0].shape[-1]))
  images = torch.randint(0, 256, (6, 16, 16, 3), dtype=torch.uint8)
  labels = torch.arange(6) % c
  protos = model.prototypes.detach().clone()
  backbone = [p.detach().clone() for p in model.backbone.parameters()]
  loss = step(images, labels, k - 1)
  assert torch.isfinite(loss)
  # Images: 1 + (k-1) new passes and k-1 old ones; prototypes (10x10): k-1 each.
  assert calls["new"].count(16) == k and calls["old"].count(16) == k - 1
  assert calls["new"].count(10) == k - 1 and calls["old"].count(10) == k - 1
  assert not torch.equal(protos, model.prototypes.detach())
  assert any(not torch.equal(a, b.detach()) for a, b in zip(backbone, model.backbone.parameters()))


def test_sequence_only_reports_total_and_first_task(tmp_path):
  out = tmp_path / "sequence.json"
  env = {**os.environ, "XLA_FLAGS": "--xla_backend_optimization_level=0", "JAX_PLATFORMS": "cpu"}
  cmd = [*MODULE, "--sequence-only", "--width", "0.0625", "--num-tasks", "2", "--classes-per-task", "2",
         "--image-size", "12", "--train-per-task", "8", "--test-per-task", "4", "--epochs", "1",
         "--sequence-batch-size", "4", "--out", str(out)]
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  sequence = json.loads(out.read_text())["sequence"]
  assert sequence["data"] == "synthetic" and sequence["steps_per_task"] == 2
  assert sequence["total_seconds"] > 0
  assert len(sequence["per_task_seconds"]) == 2  # read back from the task-end checkpoints
  assert 0 < sequence["first_task_seconds"] <= sequence["total_seconds"]


def test_checkpoint_speed_times_both_layouts(tmp_path):
  """experiments/checkpoint_speed.py: both layouts save and restore a real PAH state."""
  out = tmp_path / "ckpt.json"
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  cmd = [sys.executable, "-m", "experiments.checkpoint_speed", "--width", "0.0625",
         "--num-tasks", "2", "--repeats", "2", "--out", str(out)]
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(out.read_text())
  assert result["arrays"] > 100  # parameters, two optimiser states and the old model
  for layout in ("orbax_per_array", "packed"):
    assert len(result[layout]["save_seconds"]) == 2 and result[layout]["restore_seconds"] > 0
