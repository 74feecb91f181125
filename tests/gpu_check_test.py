"""experiments/gpu_check.py at toy sizes on the CPU (--smoke), run as the GPU machine runs it.

That machine has JAX's stack but not ml-collections, tensorflow-datasets, tensorboardX, tqdm,
matplotlib or submitit: the subprocess here hides those, and takes ml-collections only from a
wheel in --wheels (a zip of the installed package), so the check's imports are tested as well
as its measurements and JSON.
"""

import importlib.metadata
import json
import os
import subprocess
import sys
import zipfile

import pytest

pytestmark = pytest.mark.slow  # a subprocess of about a minute

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ABSENT = ("tensorflow_datasets", "tensorflow", "tensorboardX", "tqdm", "matplotlib", "submitit")

# python -c: the module as `python -m experiments.gpu_check` runs it, with ABSENT unimportable
# and ml_collections importable only from a wheel on sys.path.
RUNNER = f"""
import importlib.machinery
import runpy
import sys

for name in {ABSENT!r}:
  sys.modules[name] = None


class OnlyFromWheels:
  def find_spec(self, fullname, path=None, target=None):
    if fullname != "ml_collections":
      return None
    spec = importlib.machinery.PathFinder.find_spec(fullname, [p for p in sys.path if p.endswith(".whl")])
    if spec is None:
      raise ModuleNotFoundError("No module named 'ml_collections' (hidden by the test)", name=fullname)
    return spec


sys.meta_path.insert(0, OnlyFromWheels())
runpy.run_module("experiments.gpu_check", run_name="__main__", alter_sys=True)
"""


def _wheels(directory):
  """A pure-Python wheel of the installed ml_collections, and a compiled one the check must refuse."""
  import ml_collections  # pylint: disable=g-import-not-at-top

  directory.mkdir()
  package = os.path.dirname(ml_collections.__file__)
  version = importlib.metadata.version("ml-collections")
  wheel = directory / f"ml_collections-{version}-py3-none-any.whl"
  with zipfile.ZipFile(wheel, "w") as z:
    for root, _, files in os.walk(package):
      for name in files:
        if name.endswith(".py"):
          path = os.path.join(root, name)
          z.write(path, os.path.relpath(path, os.path.dirname(package)))
  (directory / "compiled-1.0-cp311-cp311-linux_x86_64.whl").write_bytes(b"")
  return wheel.name


def _run(args, timeout=300):
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  return subprocess.run([sys.executable, "-c", RUNNER, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=timeout)


def test_smoke_measures_everything_and_writes_json_and_markdown(tmp_path):
  wheel = _wheels(tmp_path / "wheels")
  out = tmp_path / "check.json"
  # A budget far above the smoke run's need: a loaded CI machine must not turn this into a timing test.
  proc = _run(["--smoke", "--budget-s", "1500", "--wheels", str(tmp_path / "wheels"), "--out", str(out)], timeout=1800)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
  d = json.loads(out.read_text())
  assert {"check", "command", "started_utc", "smoke", "budget_s", "status", "elapsed_s", "sizes", "env", "wheels",
          "imports", "versions", "machine", "sequence", "steps", "parallel_seeds", "peak_device_memory", "skipped",
          "errors", "benchmarks_row"} <= set(d)
  assert d["status"] == "complete" and d["errors"] == [] and d["smoke"] is True
  assert 0 < d["elapsed_s"] < d["budget_s"]
  # Imports: ml_collections from the wheel, the GPU machine's absent packages never needed.
  assert d["wheels"]["used"] == [wheel]
  assert [r["wheel"] for r in d["wheels"]["refused"]] == ["compiled-1.0-cp311-cp311-linux_x86_64.whl"]
  assert ".whl" in d["imports"]["needed"]["ml_collections"]
  assert set(d["imports"]["not_needed"].values()) == {"absent"} and d["imports"]["not_needed_but_imported"] == []
  assert "tensorboardX is not installed" in proc.stderr and "matplotlib is not installed" in proc.stderr
  # The machine and its versions.
  assert d["machine"]["backend"] == "cpu" and d["machine"]["device_kind"]
  assert d["machine"]["small_map_convs_auto"] == "matmul"
  assert d["versions"]["jax"] and d["versions"]["ml-collections"]
  assert d["peak_device_memory"]["bytes"] > 0
  # The sequence: every task, per-task times, the compiles estimated apart, "auto" resolved.
  sq = d["sequence"]
  assert sq["tasks_done"] == sq["num_tasks"] == 3 and len(sq["per_task_seconds"]) == 3
  assert sq["total_seconds"] > 0 and sq["compile_seconds_estimate"] >= 0 and not sq["stopped"]
  assert sq["small_map_convs"] == "matmul"
  assert proc.stdout.count("model.small_map_convs: matmul (auto on cpu)") == 1
  # Fine-tune against PAH on the training path, both small-map layers, both step groups.
  assert set(d["steps"]) == {"imagenet_fp32", "cifar_bf16"}
  for g in d["steps"].values():
    for mode in ("conv", "matmul"):
      r = g[mode]
      assert r["settings"]["small_map_convs"] == mode and r["settings"]["task_id"] == 2
      for name in ("finetune_chunk", "pah_chunk"):
        assert r["rows"][name]["seconds_per_step"] > 0 and r["rows"][name]["compile_seconds"] >= 0
      assert r["ratios"]["pah_chunk_over_finetune_chunk_step_time"] > 0
    assert g["comparison"]["faster_for_pah"] in ("conv", "matmul")
  assert d["steps"]["cifar_bf16"]["conv"]["settings"]["dtype"] == "bfloat16"
  rates = d["steps"]["cifar_bf16"]["matmul"]["flop_rates"]
  assert rates["pah_chunk_flops_per_second"] > 0 and rates["pah_chunk_utilisation"] is None  # no CPU peak
  assert d["steps"]["cifar_bf16"]["matmul"]["rows"]["pah_chunk"]["flops_per_step"] > \
      d["steps"]["cifar_bf16"]["matmul"]["rows"]["finetune_chunk"]["flops_per_step"]
  # PyTorch: measured where importable, else recorded as skipped.
  if "torch" in d:
    assert d["torch"]["rows"]["torch_official"]["seconds_per_step"] > 0
  else:
    assert {"measurement": "torch", "reason": "torch is not importable here"} in d["skipped"]
  # Parallel seeds: 4 seeds in one program, stopped (as planned) after 2 of the 3 tasks.
  ps = d["parallel_seeds"]
  assert ps["seeds"] == 4 and ps["stopped_by"] == "planned" and len(ps["per_task_seconds"]) == 2
  assert ps["later_task_time_ratio"] > 0 and ps["seed_tasks_per_second_gain"] > 0
  assert ps["one_seed_per_task_seconds"] == sq["per_task_seconds"][:2]
  # The Markdown summary beside the JSON, with the row for docs/performance.md.
  md = (tmp_path / "check.md").read_text()
  assert "# pah_jax GPU check (smoke" in md and d["benchmarks_row"] in md
  assert d["benchmarks_row"].startswith(f"| {d['started_utc'][:10]} (smoke) |")


def test_a_budget_spent_before_the_first_measurement_still_writes_the_json(tmp_path):
  """The budget counts from the process's start: a budget shorter than the start-up leaves the
  watchdog to write what there is (here: the settings) and exit with code 3."""
  _wheels(tmp_path / "wheels")
  out = tmp_path / "check.json"
  proc = _run(["--smoke", "--budget-s", "1", "--wheels", str(tmp_path / "wheels"), "--out", str(out)], timeout=120)
  assert proc.returncode == 3, proc.stderr[-3000:]
  d = json.loads(out.read_text())
  assert d["status"] == "stopped by the budget"
  assert "sequence" not in d and d["smoke"] is True
  assert (tmp_path / "check.md").exists()


def test_without_ml_collections_it_says_how_to_get_the_wheel(tmp_path):
  out = tmp_path / "check.json"
  proc = _run(["--smoke", "--out", str(out)], timeout=120)
  assert proc.returncode == 2
  assert "pip download --no-deps" in proc.stderr and "--wheels" in proc.stderr
  assert json.loads(out.read_text())["status"] == "could not start: missing modules"
