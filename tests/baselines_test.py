"""experiments/baselines.py end to end at toy scale: grid, choice of rate, table and JSON."""

import json
import os

import pytest

from experiments import baselines

pytestmark = pytest.mark.slow  # end-to-end runs

CONFIG = '''
from tests.conftest import tiny_config

def get_config():
  c = tiny_config({path!r})
  c.train.epochs = 1
  return c
'''


@pytest.fixture
def config_file(npz_path, tmp_path):
  path = tmp_path / "tiny_config.py"
  path.write_text(CONFIG.format(path=npz_path))
  return str(path)


def test_grid_then_table(config_file, tmp_path):
  workdir = str(tmp_path / "out")
  argv = ["--config", config_file, "--methods", "finetune", "joint", "--seeds", "0", "1",
          "--lr-grid", "1e-4", "1e-3", "--tune-seed", "7", "--workdir", workdir]
  assert baselines.main(argv) == 0
  with open(os.path.join(workdir, "lr_grid.json")) as f:
    grid = json.load(f)
  with open(os.path.join(workdir, "baselines.json")) as f:
    table = json.load(f)
  with open(os.path.join(workdir, "baselines.md")) as f:
    md = f.read()
  for method in ("finetune", "joint"):
    runs = {r["lr_backbone"]: r["runs"][0] for r in grid[method]}
    assert set(runs) == {1e-4, 1e-3} and all(r["seed"] == 7 for r in runs.values())
    best = max(runs, key=lambda lr: round(runs[lr]["average_accuracy"], 2))
    row = next(r for r in table["rows"] if r["method"] == method)
    assert row["lr_backbone"] == pytest.approx(best) or round(runs[row["lr_backbone"]]["average_accuracy"], 2) == \
        round(runs[best]["average_accuracy"], 2)
    assert [r["seed"] for r in row["runs"]] == [0, 1]
    assert all(len(r["accuracy_matrix"]) == 2 for r in row["runs"])
    assert f"| {method} |" in md
  joint = next(r for r in table["rows"] if r["method"] == "joint")
  assert joint["forgetting"]["mean"] is None
  # A rerun re-reads the finished runs and rewrites the same table.
  assert baselines.main(argv) == 0


@pytest.mark.parametrize("argv, message", [
    (["--methods", "nope"], "--methods"),
    (["--seeds", "1", "1"], "--seeds"),
    (["--lr-grid", "1e-3", "--seeds", "100"], "--tune-seed"),
    (["--lr-grid", "0"], "--lr-grid"),
    # Overrides parse as the command line's --config.KEY=VALUE.
    (["--override", "train.epochs=x", "--compile-cache", "none"], "--override train.epochs=x: expected an int"),
    (["--override", "model.nope=1", "--compile-cache", "none"], "no key model.nope"),
])
def test_bad_arguments_exit_2(argv, message, capsys):
  assert baselines.main(argv) == 2
  err = capsys.readouterr().err
  assert err.startswith("error:") and message in err
