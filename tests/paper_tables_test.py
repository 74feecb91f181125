"""experiments/paper_tables.py: Table 1 and the ablation table, end to end on mocked CIFAR-100.

The commands run in-process (`main(argv)`) at toy scale: 2 tasks, width 0.0625, 1 epoch.
The ablation shares the base config's runs with Table 1 (same --workdir) and runs only
random prototype init, which compiles to the same programs as the base runs (the prototypes'
initial values are inputs), so the persistent compilation cache keeps the whole test to about
one compile.
"""

import json
import os

import jax
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from configs import cifar
from experiments import paper_tables
from pah_jax import checkpointing
from pah_jax.errors import UserError

pytestmark = pytest.mark.slow  # end-to-end runs


def _mock_cifar(self, split, **kwargs):
  del self, kwargs
  n = 200 if str(split) == "train" else 60
  rng = np.random.default_rng(1 if str(split) == "train" else 2)
  images = rng.integers(0, 255, (n, 32, 32, 3)).astype(np.uint8)
  return tf.data.Dataset.from_tensor_slices({"image": images, "label": np.arange(n) % 100})


@pytest.fixture
def cifar_data(tmp_path, monkeypatch):
  """A TFDS data dir whose CIFAR-100 is mocked; the empty archive only has to exist."""
  # Orbax's CheckpointManager lists the checkpoint directory for stale temporary directories
  # in a background thread, while TFDS's mock redirects every epath call of every thread to
  # its own temporary tree during `as_dataset`: when the two overlap, the listing fails and
  # the run with it. Waiting for that cleanup when the workdir opens removes the race.
  init = checkpointing.Checkpointer.__init__

  def init_then_wait(self, *args, **kwargs):
    init(self, *args, **kwargs)
    getattr(self.manager, "_maybe_await_cleanup_tmp_directory", lambda: None)()

  monkeypatch.setattr(checkpointing.Checkpointer, "__init__", init_then_wait)
  manual = tmp_path / "data" / "downloads" / "manual"
  manual.mkdir(parents=True)
  (manual / "cifar-100-binary.tar.gz").write_bytes(b"")
  with tfds.testing.mock_data(as_dataset_fn=_mock_cifar):
    yield str(tmp_path / "data")


def _read(workdir, name):
  with open(os.path.join(workdir, name + ".md")) as f:
    md = f.read()
  with open(os.path.join(workdir, name + ".json")) as f:
    return md, json.load(f)


def _cell(stats, metric):
  return f"{stats[metric]['mean']:.2f} ± {stats[metric]['std']:.2f}"


def test_table1_and_ablation_on_mock_cifar100(tmp_path, cifar_data, capsys):
  workdir = str(tmp_path / "paper")
  common = ["--config", "configs/cifar.py", "--workdir", workdir, "--override", f"data.path={cifar_data}",
            "data.num_tasks=2", "model.width=0.0625", "train.epochs=1", "train.batch_size=10",
            "train.log_every_steps=5"]
  assert paper_tables.main(["table1", "--seeds", "0", "1", *common]) == 0
  md, data = _read(workdir, "table1")
  (row,) = data["rows"]
  assert row["label"] == "Split-CIFAR100 2x50" and row["status"] == "2/2 seeds finished"
  assert [r["seed"] for r in row["runs"]] == [0, 1]
  for run in row["runs"]:
    assert np.asarray(run["accuracy_matrix"], float).shape == (2, 2)
    with open(os.path.join(run["workdir"], "results.json")) as f:
      assert json.load(f)["accuracy_matrix"] == run["accuracy_matrix"]
  aa = [r["average_accuracy"] for r in row["runs"]]
  assert row["average_accuracy"]["mean"] == pytest.approx(np.mean(aa))
  assert row["average_accuracy"]["std"] == pytest.approx(np.std(aa, ddof=1))
  line = next(row for row in md.splitlines() if row.startswith("| Split-CIFAR100 2x50"))
  for cell in (_cell(row, "average_accuracy"), "74.46 ± 0.08", _cell(row, "forgetting"), "1.71 ± 0.02"):
    assert cell in line
  assert "| A-GEM | 59.81 | 30.08 | 60.45 | 24.94 |" in md  # the paper's layout, baselines included
  assert "data.num_tasks=2" in md

  capsys.readouterr()
  # --parallel-seeds: the vmapped program (train.train_seeds) behind the same tables.
  assert paper_tables.main(["ablation", "--seeds", "0", "--only", "prototype_init=semantic,random",
                            "--parallel-seeds", *common]) == 0
  out = capsys.readouterr().out
  assert "(finished: [0], re-reading)" in out  # the base run is Table 1's
  assert "prototype_init random seeds [0] in parallel" in out
  md, data = _read(workdir, "ablation")
  rows = {r["label"]: r for r in data["rows"]}
  base, random_init = rows["prototype_init semantic"], rows["prototype_init random"]
  assert base["is_base"] and base["runs"] == row["runs"][:1]
  assert len(random_init["runs"]) == 1 and random_init["directory"].endswith("prototype_init_random")
  assert np.asarray(random_init["runs"][0]["accuracy_matrix"], float).shape == (2, 2)
  assert rows["prototype_size 5x5"]["status"] == "not run" and not rows["prototype_size 5x5"]["runs"]

  def lines():
    with open(os.path.join(workdir, "ablation.md")) as f:
      return {row.split("|")[1].strip() + " " + row.split("|")[2].strip(): row for row in f
              if row.startswith("| ") and not row.startswith("| Ablation")}

  got = lines()
  assert _cell(random_init, "average_accuracy") in got["prototype_init random"]
  assert "72.54" in got["prototype_init random"] and "2.32" in got["prototype_init random"]
  for base_line in ("prototype_init semantic (base)", "prototype_size 10x10 (base)", "lambda_sp 1 (base)"):
    assert _cell(base, "average_accuracy") in got[base_line] and "74.46 ± 0.08" in got[base_line]
  assert "73.72" in got["prototype_size 5x5"] and "not run" in got["prototype_size 5x5"]
  assert "clearly worse" in got["lambda_sp 0"]
  # Another part of the grid later: rows finished before keep their numbers.
  assert paper_tables.main(["ablation", "--seeds", "0", "--only", "lambda_sm=0.5", *common]) == 0
  assert "1/1 (earlier)" in lines()["prototype_init random"]
  assert jax.config.jax_compilation_cache_dir is None  # the command left the process as it found it


def test_overrides_are_parsed_with_the_config_types():
  config = cifar.get_config()
  applied = paper_tables.apply_overrides(
      config, ["train.epochs=1", "pah.lambda_sp=0", "train.augment=false", "pah.prototype_init=random"])
  assert applied == [("train.epochs", 1), ("pah.lambda_sp", 0.0), ("train.augment", False),
                     ("pah.prototype_init", "random")]
  assert isinstance(config.pah.lambda_sp, float) and config.train.epochs == 1
  # Parsed as the command line's --config.KEY=VALUE (ml_collections' config_flags).
  for bad, message in (("train.epochs=1.5", "expected an int"), ("train.augment=maybe", "expected a bool"),
                       ("pah.nope=1", "no key pah.nope"), ("train.epochs", "expected KEY=VALUE"),
                       ("pah=1", "pah is a section"), ("seed=3", "--seeds")):
    with pytest.raises(UserError, match=message):
      paper_tables.apply_overrides(cifar.get_config(), [bad])
  only = paper_tables.parse_only(cifar.get_config(), ["prototype_size=5,10", "lambda_sp=0,1", "pah.temperature=1"])
  assert only == {"pah.prototype_size": (5, 10), "pah.lambda_sp": (0.0, 1.0), "pah.temperature": (1.0,)}


def test_ablation_grid_and_user_errors(tmp_path, capsys):
  args = paper_tables.build_parser().parse_args(
      ["ablation", "--config", "configs/fashion_mnist.py", "--workdir", str(tmp_path), "--seeds", "0"])
  rows, _, title = paper_tables.ablation_rows(args, [])
  assert title.startswith("Split-FashionMNIST 5x2")
  labels = [r.info["label"] for r in rows]
  assert labels == ["prototype_size 5x5", "prototype_size 10x10", "prototype_size 16x16", "prototype_size 20x20",
                    "prototype_init semantic", "prototype_init random", "lambda_sm 0.1", "lambda_sm 0.25",
                    "lambda_sm 0.5", "lambda_sm 0.75", "lambda_sm 1", "lambda_sp 0", "lambda_sp 0.5", "lambda_sp 1",
                    "lambda_hp 0", "lambda_hp 0.5", "lambda_hp 1"]
  # Each is a one-key change of the base; the base's own values share one run directory.
  assert len({r.directory for r in rows}) == 17 - 4
  assert all(r.config.pah.lambda_sm == (r.info["value"] if r.info["key"] == "pah.lambda_sm" else 0.5) for r in rows)
  # Mistakes end before any training with one error line and exit code 2.
  for argv, message in ((["table1", "--config", "configs/nope.py"], "configs/nope.py not found"),
                        (["ablation", "--override", "pah.lambda_sm=-1"], "pah.lambda_sm"),
                        (["ablation", "--only", "lambda_sm=high"], "expected a float")):
    assert paper_tables.main(argv + ["--workdir", str(tmp_path / "w")]) == 2
    assert message in capsys.readouterr().err
