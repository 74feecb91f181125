"""experiments/torch_official_run.py: the official algorithm in PyTorch on pah_jax's task split."""

import json

import numpy as np
import pytest

from experiments import paper_tables as pt
from experiments import torch_official_run as run


def test_refuses_configs_the_pytorch_step_does_not_implement():
  with pytest.raises(SystemExit, match="pah.prototype_update"):
    run.check_supported(pt.load_config("configs/fashion_mnist.py"))
  config = pt.load_config("configs/fashion_mnist_official.py")
  run.check_supported(config)
  config.model.eval_batch_norm = "running"
  with pytest.raises(SystemExit, match="eval_batch_norm"):
    run.check_supported(config)


@pytest.mark.parametrize("override, message", [("model.nope=1", "no key model.nope"),
                                               ("train.epochs=many", "expected an int")])
def test_a_bad_override_is_one_error_line_and_exit_code_2(override, message, capsys):
  assert run.main(["--override", override]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: --override") and message in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_runs_the_sequence_on_the_same_split_and_learns(npz_path, tmp_path):
  pytest.importorskip("torch")
  out = tmp_path / "torch.json"
  run.main(["--config", "configs/fashion_mnist_official.py", "--seeds", "0", "--out", str(out), "--override",
            "data.name=npz", f"data.path={npz_path}", "data.num_tasks=2", "data.max_train_per_task=0",
            "data.pad_to=0", "pah.crop_position=center", "model.width=0.125", "pah.prototype_size=4",
            "train.batch_size=16", "train.epochs=4", "optim.lr_backbone=1e-3"])
  result = json.loads(out.read_text())
  acc = np.array(result["runs"][0]["accuracy_matrix"], dtype=float)
  assert acc.shape == (2, 2) and np.isnan(acc[0, 1]) and not np.isnan(acc[1]).any()
  assert acc[1].mean() > 60  # two binary tasks of bright squares: chance is 50
  assert result["average_accuracy"][0] == pytest.approx(acc[1].mean())
