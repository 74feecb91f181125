"""experiments/suite.py end to end at toy scale: settings x entries x seeds, table and JSON."""

import json
import os

import numpy as np
import pytest

from experiments import suite
from pah_jax import metrics

pytestmark = pytest.mark.slow  # end-to-end runs


def _argv(npz_path, workdir, *extra):
  return ["--settings", "n300_seq", "n300_order1", "--entries", "pah", "joint", "--seeds", "0", "--workdir", workdir,
          "--override", "data.name=npz", f"data.path={npz_path}", "data.num_tasks=2", "model.width=0.125",
          "pah.prototype_size=4", "train.batch_size=16", "train.eval_batch_size=32", *extra]


def test_suite_runs_every_setting_and_entry_and_reports_plasticity(npz_path, tmp_path):
  workdir = str(tmp_path / "suite")
  assert suite.main(_argv(npz_path, workdir, "--vary", "pah.lambda_sm=1")) == 0
  with open(os.path.join(workdir, "suite.json")) as f:
    data = json.load(f)
  with open(os.path.join(workdir, "suite.md")) as f:
    md = f.read()
  rows = {(r["setting"], r["entry"]): r for r in data["rows"]}
  # --vary: a row for the one entry that reads the key (joint never reads pah.*).
  assert set(rows) == {(s, e) for s in ("n300_seq", "n300_order1") for e in ("pah", "joint", "pah, pah.lambda_sm=1")}
  for (setting, label), row in rows.items():
    name = row["method"]
    assert row["lr_backbone"] == suite.RATES[name] and row["status"] == "1/1 seeds finished"
    (run,) = row["runs"]
    with open(os.path.join(run["workdir"], "results.json")) as f:
      results = json.load(f)
    # Each run is the setting's config: the settings' overrides and the method's rate reached it.
    assert results["config"]["train"]["epochs"] == 10 and results["config"]["optim"]["lr_backbone"] == suite.RATES[name]
    assert results["config"]["pah"]["lambda_sm"] == (1.0 if label.endswith("lambda_sm=1") else 0.5)
    order = results["config"]["data"]["class_order"]
    assert (order, results["config"]["data"]["class_order_seed"]) == (
        ("sequential", -1) if setting == "n300_seq" else ("random", 1))
    R = np.array(run["accuracy_matrix"], dtype=np.float64)
    if name == "joint":
      assert row["plasticity"] == {"mean": None, "std": None}
    else:
      assert row["plasticity"]["mean"] == pytest.approx(np.mean(np.diag(R)))
      assert row["plasticity"]["mean"] == pytest.approx(metrics.plasticity(R))
  for heading in ("## n300_seq:", "## n300_order1:", "## AA / FM at a glance", "| pah, pah.lambda_sm=1 |"):
    assert heading in md
  def losses(label):  # the second task's losses carry lambda_sm * L_sm: the change really trained
    with open(os.path.join(rows["n300_seq", label]["runs"][0]["workdir"], "tensorboard", "metrics.jsonl")) as f:
      return [r["train/loss"] for r in map(json.loads, f) if "train/loss" in r]

  assert losses("pah, pah.lambda_sm=1") != losses("pah")
  # One random order for every seed of the setting (class_order_seed), not the natural one.
  run = rows["n300_order1", "pah"]["runs"][0]
  with open(os.path.join(run["workdir"], "results.json")) as f:
    assert json.load(f)["class_order"] == [int(c) for c in np.random.default_rng(1).permutation(4)]
  # A rerun re-reads the finished runs: nothing trains again, the table is the same.
  mtimes = {r["runs"][0]["workdir"]: os.path.getmtime(os.path.join(r["runs"][0]["workdir"], "results.json"))
            for r in data["rows"]}
  assert suite.main(_argv(npz_path, workdir, "--vary", "pah.lambda_sm=1")) == 0
  assert all(os.path.getmtime(os.path.join(w, "results.json")) == t for w, t in mtimes.items())
  # --tables-only: a table of what any invocation finished, a setting never run shows no runs.
  argv = _argv(npz_path, workdir, "--tables-only", "--table", "again") + ["--settings", "n300_seq", "n300_order2"]
  assert suite.main(argv) == 0
  with open(os.path.join(workdir, "again.json")) as f:
    again = {(r["setting"], r["entry"]): r for r in json.load(f)["rows"]}
  assert again["n300_seq", "pah"]["runs"] == rows["n300_seq", "pah"]["runs"]
  assert again["n300_order2", "pah"]["runs"] == [] and not os.path.exists(os.path.join(workdir, "n300_order2"))


@pytest.mark.parametrize("argv, message", [
    (["--entries", "nope"], "neither a method"),
    (["--seeds", "1", "1"], "--seeds"),
    (["--max-parallel", "-1"], "--max-parallel"),
])
def test_refuses_bad_arguments(argv, message, capsys, tmp_path):
  assert suite.main(argv + ["--workdir", str(tmp_path)]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error:") and message in err
