"""The PAH paper's Table 1 and ablation table as two commands, measured next to the paper's values.

  python -m experiments.paper_tables table1 --seeds 0 1 2 --workdir runs/paper
  python -m experiments.paper_tables ablation --config configs/cifar.py --seeds 0 1 2 --workdir runs/paper
  python -m experiments.paper_tables table1 --seeds 0 1 2 --workdir runs/paper \\
      --executor slurm --slurm-partition gpu --max-parallel 8    # queues the jobs; rerun when they are done

Offline, on a CPU (Split-FashionMNIST; the paper's columns stay Split-CIFAR100's):

  python -m experiments.paper_tables ablation --config configs/fashion_mnist.py --seeds 0 1 2 \\
      --workdir runs/ablation_fmnist

table1 trains PAH on Split-CIFAR100 10x10, TinyImageNet 10x20 and 20x10 (configs/cifar.py,
tinyimagenet.py, tinyimagenet_20.py, or the --config files given) for every seed and writes
<workdir>/table1.md and table1.json. ablation changes one key of the base config at a time:
prototype size 5/10/16/20, semantic versus random prototype init, lambda_sm 0.1/0.25/0.5/0.75/1.0,
lambda_sp 0/0.5/1.0 (`--only prototype_size=5,10 lambda_sp=0,1` runs a part, or any other
`key=v1,v2` sweep), and writes ablation.md and ablation.json.

Every table row is a sweep (`pah_jax.sweep`) in its own directory: the base config (the config
file with every `--override`, parsed as the command line's `--config.key=value`), the row's
change of it as a one-point grid, and the seeds. A config unchanged (table1's rows, the
ablation's base rows) is the sweep <workdir>/<config name>, runs <workdir>/<config name>/base/
seed_<n>; an ablation setting is <workdir>/<config name>/<setting>, runs <...>/<setting>/
<key>=<value>/seed_<n>. So a rerun resumes unfinished runs and only re-reads finished ones,
table1 and ablation given the same --workdir share the base config's runs, a directory made
under another config is refused, and `python -m pah_jax.sweep --workdir=<row directory>
--status` shows one row's runs.

The missing runs of all rows go to one executor, `--executor` as in pah_jax.sweep: inline (the
default: one after another in this process), local (--max-parallel processes at once, one per
GPU when there are GPUs), submitit-local, or slurm (a job array, --slurm-* flags; logs under
<workdir>/logs/submitit). --parallel-seeds makes each row's seeds one job that trains them as
one program. The tables are rewritten after every job, so a long sweep shows its progress. With
--executor slurm the command queues the jobs, writes the tables with what has finished, and
returns; rerun the same command once the jobs have finished (runs still queued would be
submitted again) and it writes the complete tables, submitting again only runs that have no
results (failed or cancelled jobs).
Programs compiled by one run are reused by the others through JAX's persistent compilation
cache in <workdir>/jax_cache (every run's train.compilation_cache; --compile-cache none turns
that off).
"""

import argparse
import contextlib
import dataclasses
import datetime
import importlib.util
import json
import os
import shlex
import sys
from typing import Any

import ml_collections

from experiments import paper_values
from pah_jax import config_check
from pah_jax import metrics
from pah_jax import overrides as overrides_lib
from pah_jax import reporting
from pah_jax import sweep as sweep_lib
from pah_jax.errors import Stopped
from pah_jax.errors import UserError

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # configs/ lies here

TABLE1_CONFIGS = ("configs/cifar.py", "configs/tinyimagenet.py", "configs/tinyimagenet_20.py")
ABLATION_CONFIG = "configs/cifar.py"
METRICS = ("average_accuracy", "forgetting", "bwt")
_DATASET_NAMES = {"cifar100": ("Split-CIFAR100", 100), "tiny_imagenet": ("TinyImageNet", 200),
                  "fashion_mnist": ("Split-FashionMNIST", 10)}
_NONE = "—"

# --------------------------------------------------------------------------- configs


def load_config(path: str) -> ml_collections.ConfigDict:
  """`get_config()` of a config file; relative paths are tried from here, then the repository."""
  candidates = [path] if os.path.isabs(path) else [path, os.path.join(REPOSITORY, path)]
  found = next((p for p in candidates if os.path.isfile(p)), None)
  if found is None:
    raise UserError(f"config file {path} not found: pass e.g. --config configs/fashion_mnist.py")
  name = "_paper_tables_config_" + os.path.splitext(os.path.basename(found))[0]
  spec = importlib.util.spec_from_file_location(name, found)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def get_key(config, key: str):
  node = config
  for part in key.split("."):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      raise UserError(f"config has no key {key}: configs/default.py lists every key")
    node = node[part]
  return node


def apply_overrides(config, overrides) -> list[tuple[str, Any]]:
  """Applies `--override` items (`key=value`, parsed as the command line's `--config.key=value`)
  in order; returns the parsed (key, value) pairs. The seeds are --seeds, not an override."""
  for item in overrides or ():
    if item.partition("=")[0] == "seed":
      raise UserError("--override seed=...: the seeds are --seeds")
  return overrides_lib.apply(config, overrides, option="--override")


def benchmark_label(config) -> str:
  """"Split-CIFAR100 10x10": data set and tasks x classes per task, as the paper names them."""
  k = config.data.num_tasks
  if config.data.name in _DATASET_NAMES:
    name, classes = _DATASET_NAMES[config.data.name]
    return f"{name} {k}x{classes // k}"
  return f"{config.data.name} {os.path.basename(str(config.data.path))} ({k} tasks)"


def _config_name(path: str) -> str:
  return os.path.splitext(os.path.basename(path))[0]


def compile_cache_dir(args) -> str:
  """--compile-cache as train.compilation_cache: default <workdir>/jax_cache, "" when none."""
  cache = args.compile_cache if args.compile_cache is not None else os.path.join(args.workdir, "jax_cache")
  return "" if cache == "none" else os.path.abspath(cache)


def base_config(path: str, args, overrides) -> tuple[ml_collections.ConfigDict, list]:
  """The config file with --compile-cache and then the overrides; returns it and the overrides
  parsed."""
  config = load_config(path)
  config.train.compilation_cache = compile_cache_dir(args)
  return config, apply_overrides(config, overrides)


# --------------------------------------------------------------------------- runs


@dataclasses.dataclass
class Row:
  """One table row: a sweep of one point (the table's base config, the row's overrides as its
  grid) in its own directory, for the table's seeds; results fill in from the runs' files."""

  sweep: sweep_lib.Sweep  # the sweep as recorded in its directory once the row runs
  seeds: tuple[int, ...]
  info: dict  # what the row shows besides the measured numbers
  run: bool = True  # False: listed for the paper's value only (ablation --only)
  results: dict = dataclasses.field(default_factory=dict)  # seed -> results.json

  @property
  def directory(self) -> str:
    return self.sweep.directory

  @property
  def point(self) -> sweep_lib.Point:
    return self.sweep.points[0]

  @property
  def config(self) -> ml_collections.ConfigDict:
    """The config of the row's runs (with the first seed)."""
    return self.sweep.run_config(self.point, self.seeds[0])

  def workdir(self, seed: int) -> str:
    return self.sweep.workdir(self.point, seed)


def make_row(config, directory: str, overrides, seeds, info: dict, run: bool = True) -> Row:
  """The row that runs `config` changed by `overrides` ((key, value), ...) in `directory`."""
  grid = tuple((key, (value,)) for key, value in overrides)
  sweep = sweep_lib.Sweep(os.path.abspath(directory), reporting.jsonable(config), grid, tuple(seeds))
  return Row(sweep, tuple(seeds), info, run)


def execute(rows: list[Row], write, args, then: str = "write the complete tables") -> bool:
  """Runs what the rows that run miss on --executor, reading every row's results before, after
  each job and at the end, and calling `write()` (the tables) each time.

  Each row that runs opens its sweep (writes <directory>/sweep.json, or checks it: another config
  is refused); its seeds with neither results.json nor a live run are its jobs (one job with
  --parallel-seeds). Rows that share a directory share runs; a row left out (ablation --only)
  shows the runs an earlier invocation finished under the same config. Returns whether every run
  of the rows that run has finished; if not, says why (queued on SLURM: rerun to `then`).
  """
  for row in rows:  # every config checked before anything is written or trained
    if row.run:
      config_check.validate(row.config)
  opened = {}
  for row in rows:
    if row.run:
      if row.directory not in opened:
        opened[row.directory] = sweep_lib.open_sweep(dataclasses.replace(row.sweep,
                                                                         parallel_seeds=args.parallel_seeds))
      row.sweep = opened[row.directory]

  def refresh():
    for row in rows:
      collect(row)
    write()

  refresh()
  jobs = plan(rows, args.parallel_seeds)
  if jobs:
    slurm = sweep_lib.SlurmSettings(partition=args.slurm_partition, time_min=args.slurm_time,
                                    gpus_per_job=args.slurm_gpus_per_job, mem_gb=args.slurm_mem)
    sweep_lib.run_jobs(None, jobs, args.executor, args.max_parallel, slurm, os.path.abspath(args.workdir), refresh)
    refresh()
  missing = {row.workdir(s): (row, s) for row in rows if row.run for s in row.seeds if s not in row.results}
  if missing and args.executor == "slurm":
    print(f"{len(missing)} run(s) queued or running: rerun this same command once they have finished to {then}",
          flush=True)
  else:
    for workdir, (row, seed) in missing.items():
      status = sweep_lib.run_status(row.sweep, row.point, seed)
      detail = status["error"].removeprefix("error: ") if "error" in status else f"not finished ({status['status']})"
      print(f"error: {workdir}: {detail}", file=sys.stderr, flush=True)
  return not missing


def plan(rows: list[Row], parallel: bool) -> list[tuple]:
  """The (sweep, point, seeds) jobs of the rows that run: per directory, its seeds with neither
  results nor a live run (another process or job training it), each alone or all as one job."""
  jobs, seen = [], set()
  for row in rows:
    if not row.run or row.directory in seen:
      continue
    seen.add(row.directory)
    state = {s: sweep_lib.run_status(row.sweep, row.point, s)["status"] for s in row.seeds}
    todo = [s for s in row.seeds if state[s] not in ("done", "running")]
    finished = [s for s in row.seeds if state[s] == "done"]
    running = [s for s in row.seeds if state[s] == "running"]
    print(f"{row.info['label']}" + (f" seeds {todo}" + (" in parallel" if parallel else "") if todo else "")
          + f": {row.directory}" + (f" (finished: {finished}, re-reading)" if finished else "")
          + (f" (running elsewhere: {running})" if running else ""), flush=True)
    jobs += [(row.sweep, row.point, tuple(todo))] if parallel and todo else [(row.sweep, row.point, (s,))
                                                                             for s in todo]
  return jobs


def collect(row: Row) -> None:
  """The row's finished runs (results.json), those written under the row's config only: a row
  that runs refuses another config's (a directory used before it held a sweep), a row left
  out skips them."""
  for seed in row.seeds:
    path = os.path.join(row.workdir(seed), "results.json")
    if not os.path.isfile(path):
      continue
    results = reporting.read_results(path)
    try:
      config_check.check_same_config(results["config"], row.sweep.run_config(row.point, seed))
    except UserError as e:
      if row.run:
        raise UserError(f"{os.path.dirname(path)}: {e}") from None
      continue
    row.results[seed] = results


def run_record(seed: int, workdir: str, results: dict) -> dict:
  return {"seed": seed, "workdir": workdir, "accuracy_matrix": results["accuracy_matrix"],
          **{m: results[m] for m in METRICS}, "plasticity": metrics.plasticity(results["accuracy_matrix"]),
          "seconds": results["seconds"]}


def row_stats(row: Row) -> dict:
  """Mean and sample std over the finished seeds of every metric, of the plasticity (from each
  accuracy matrix) and of the wall time."""
  if not row.results:
    return {}
  out = {}
  for m in METRICS + ("plasticity", "seconds"):
    values = [metrics.plasticity(row.results[s]["accuracy_matrix"]) if m == "plasticity" else row.results[s][m]
              for s in sorted(row.results)]
    if any(v is None for v in values):  # a NaN metric stored as null
      out[m] = {"mean": None, "std": None}
    else:
      mean, std = metrics.mean_std(values)
      out[m] = {"mean": mean, "std": std}
  return out


def row_json(row: Row) -> dict:
  return {**reporting.jsonable(row.info), "directory": row.directory, "seeds": list(row.seeds),
          "status": (f"{len(row.results)}/{len(row.seeds)} seeds finished"
                     + ("" if row.run else " (by an earlier invocation)") if row.results or row.run else "not run"),
          "runs": [run_record(s, row.workdir(s), row.results[s]) for s in sorted(row.results)],
          **row_stats(row)}


# --------------------------------------------------------------------------- formatting


def fmt_measured(stats: dict, metric: str) -> str:
  if not stats or stats[metric]["mean"] is None:
    return _NONE
  return f"{stats[metric]['mean']:.2f} ± {stats[metric]['std']:.2f}"


def fmt_paper(paper, metric: str) -> str:
  if not paper:
    return _NONE
  mean, std = paper[metric]
  return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def fmt_seconds(seconds) -> str:
  if seconds is None:
    return _NONE
  if seconds < 120:
    return f"{seconds:.0f} s"
  if seconds < 7200:
    return f"{seconds / 60:.1f} min"
  return f"{seconds / 3600:.1f} h"


def _seeds_done(row: Row) -> str:
  if not row.run:
    return f"{len(row.results)}/{len(row.seeds)} (earlier)" if row.results else "not run"
  return f"{len(row.results)}/{len(row.seeds)}"


def _wall(stats: dict) -> str:
  return fmt_seconds(stats["seconds"]["mean"]) if stats else _NONE


def markdown_table(header: list[str], lines: list[list[str]]) -> str:
  out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  out += ["| " + " | ".join(cells) + " |" for cells in lines]
  return "\n".join(out)


def _preamble(title: str, command: str, seeds, overrides) -> list[str]:
  shown = ", ".join(f"`{k}={v!r}`" for k, v in overrides) or "none"
  return [f"# {title}", "",
          f"Command: `{command}`  ",
          f"Seeds: {', '.join(map(str, seeds))}; overrides: {shown}  ",
          f"Written {datetime.datetime.now().isoformat(timespec='seconds')}. AA (average accuracy) "
          "and FM (forgetting) in %, mean ± sample std over the finished seeds (`pah_jax.metrics`); "
          "wall time = training and evaluation per run. Paper: De La Fuente et al. 2025, "
          "ResNet-18, task-incremental.", ""]


def _write(workdir: str, name: str, markdown: str, data: dict) -> None:
  os.makedirs(workdir, exist_ok=True)
  for suffix, text in ((".md", markdown + "\n"), (".json", json.dumps(data, indent=1) + "\n")):
    path = os.path.join(workdir, name + suffix)
    with open(path + ".tmp", "w") as f:
      f.write(text)
    os.replace(path + ".tmp", path)  # a reader never sees half a table


def _command(argv) -> str:
  return " ".join(["python -m experiments.paper_tables"] + [shlex.quote(a) for a in argv])


# --------------------------------------------------------------------------- table 1


def table1_rows(args, overrides) -> tuple[list[Row], list]:
  rows, applied = [], []
  for path in args.config or TABLE1_CONFIGS:
    config, applied = base_config(path, args, overrides)
    data = config.data.name
    paper = paper_values.PAH.get(data) if config.method == "pah" else None
    info = {"label": benchmark_label(config), "config": path, "data": data, "method": config.method,
            "paper": paper}
    rows.append(make_row(config, os.path.join(args.workdir, _config_name(path)), (), args.seeds, info))
  return rows, applied


def table1_markdown(rows: list[Row], command: str, seeds, applied) -> str:
  lines = _preamble("Table 1: PAH", command, seeds, applied)
  body = []
  for row in rows:
    stats, paper = row_stats(row), row.info["paper"]
    body.append([row.info["label"], f"`{row.info['config']}`", _seeds_done(row),
                 fmt_measured(stats, "average_accuracy"), fmt_paper(paper, "average_accuracy"),
                 fmt_measured(stats, "forgetting"), fmt_paper(paper, "forgetting"), _wall(stats)])
  lines.append(markdown_table(["Benchmark", "Config", "Seeds", "AA (ours)", "AA (paper)", "FM (ours)",
                               "FM (paper)", "Wall time / run"], body))
  if any(row.info["data"] == "tiny_imagenet" for row in rows):
    lines += ["", "The paper reports one TinyImageNet result; it is shown next to every TinyImageNet split."]

  # The paper's own layout: methods by rows, data sets by column pairs.
  datasets = list(paper_values.TABLE1_DATASETS)
  header = ["Method"] + [f"{paper_values.TABLE1_DATASETS[d]} {m}" for d in datasets for m in ("AA", "FM")]
  body = []
  for method, values in paper_values.BASELINES.items():
    body.append([method] + [fmt_paper(values[d], m) for d in datasets for m in ("average_accuracy", "forgetting")])
  body.append(["**PAH (paper)**"] + [fmt_paper(paper_values.PAH[d], m) for d in datasets
                                     for m in ("average_accuracy", "forgetting")])
  for row in rows:
    if row.info["data"] in datasets and row.info["method"] == "pah":
      stats = row_stats(row)
      cells = [fmt_measured(stats, m) if d == row.info["data"] else "" for d in datasets
               for m in ("average_accuracy", "forgetting")]
      body.append([f"PAH (ours, {row.info['label']})"] + cells)
  lines += ["", "## In the paper's layout (baselines: the paper's numbers)", "", markdown_table(header, body)]
  return "\n".join(lines)


def table1(args, argv) -> int:
  rows, applied = table1_rows(args, args.override)
  command = _command(argv)

  def write():
    data = {"command": command, "seeds": list(args.seeds), "overrides": reporting.jsonable(applied),
            "rows": [row_json(row) for row in rows],
            "paper": {"pah": paper_values.PAH, "baselines": paper_values.BASELINES}}
    _write(args.workdir, "table1", table1_markdown(rows, command, args.seeds, applied), data)

  finished = execute(rows, write, args)
  print(f"wrote {os.path.join(args.workdir, 'table1.md')} and table1.json", flush=True)
  return exit_code(finished, args)


# --------------------------------------------------------------------------- ablation


def parse_only(config, items) -> dict[str, tuple]:
  """`group=v1,v2` (group: an ablation name such as prototype_size, or any config key)."""
  groups = {name: key for name, key, _ in paper_values.ABLATIONS}
  out: dict[str, tuple] = {}
  for item in items or ():
    name, sep, text = item.partition("=")
    if not sep or not text:
      raise UserError(f"--only {item}: expected group=value[,value...], e.g. prototype_size=5,10")
    key = groups.get(name, name)
    out[key] = out.get(key, ()) + tuple(overrides_lib.parse_value(config, key, v, option="--only")
                                        for v in text.split(","))
  return out


def _setting(key: str, value) -> str:
  """How a row names its value: 5x5 for a prototype size, 0.25 and 1 for floats."""
  if key == "pah.prototype_size":
    return f"{value}x{value}"
  return f"{value:g}" if isinstance(value, float) else str(value)


def ablation_rows(args, overrides) -> tuple[list[Row], list, str]:
  path = args.config[0] if args.config else ABLATION_CONFIG
  base, applied = base_config(path, args, overrides)
  label = benchmark_label(base)
  only = parse_only(base, args.only)
  grid = [(name, key, values) for name, key, values in paper_values.ABLATIONS]
  known = {key for _, key, _ in grid}
  grid += [(key, key, ()) for key in only if key not in known]  # a sweep of any other key
  rows = []
  for name, key, values in grid:
    chosen = only.get(key, ()) if only else values
    for value in list(values) + [v for v in chosen if v not in values]:
      is_base = value == get_key(base, key)
      directory = os.path.join(args.workdir, _config_name(path))  # the base config's sweep, table1's
      if not is_base:
        directory = os.path.join(directory, f"{name}_{_setting(key, value)}")
      info = {"label": f"{name} {_setting(key, value)}", "group": name, "key": key, "value": value,
              "is_base": is_base, "paper": paper_values.ABLATION_VALUES.get((key, value)),
              "paper_note": paper_values.ABLATION_NOTES.get((key, value), "")}
      rows.append(make_row(base, directory, () if is_base else ((key, value),), args.seeds, info,
                           run=value in chosen))
  if any(row.run and row.info["is_base"] for row in rows):  # one base run fills every base row
    for row in rows:
      row.run = row.run or row.info["is_base"]
  return rows, applied, f"{label} (`{path}`)"


def ablation_markdown(rows: list[Row], title: str, command: str, seeds, applied) -> str:
  lines = _preamble(f"PAH ablations on {title}", command, seeds, applied)
  lines += ["Each row changes one key of the base config; (base) marks the base config's own value "
            "(one run, shared by its rows). The paper's columns are its Split-CIFAR100 ablations "
            "(experiments/paper_values.py), whatever the data set measured here.", ""]
  body = []
  for row in rows:
    stats, paper, info = row_stats(row), row.info["paper"], row.info
    setting = _setting(info["key"], info["value"]) + (" (base)" if info["is_base"] else "")
    body.append([info["group"], setting, _seeds_done(row),
                 fmt_measured(stats, "average_accuracy"), fmt_paper(paper, "average_accuracy"),
                 fmt_measured(stats, "forgetting"), fmt_paper(paper, "forgetting"),
                 info["paper_note"] or "", _wall(stats)])
  lines.append(markdown_table(["Ablation", "Setting", "Seeds", "AA (ours)", "AA (paper)", "FM (ours)",
                               "FM (paper)", "Paper says", "Wall time / run"], body))
  return "\n".join(lines)


def ablation(args, argv) -> int:
  rows, applied, title = ablation_rows(args, args.override)
  command = _command(argv)

  def write():
    data = {"command": command, "benchmark": title, "seeds": list(args.seeds),
            "overrides": reporting.jsonable(applied), "rows": [row_json(row) for row in rows]}
    _write(args.workdir, "ablation", ablation_markdown(rows, title, command, args.seeds, applied), data)

  finished = execute(rows, write, args)
  print(f"wrote {os.path.join(args.workdir, 'ablation.md')} and ablation.json", flush=True)
  return exit_code(finished, args)


# --------------------------------------------------------------------------- command line


@contextlib.contextmanager
def compile_cache(directory: str):
  """JAX's persistent compilation cache in `directory` for the programs this process compiles
  (`train.use_compilation_cache`), the process's settings restored after ("" or none: off).

  Runs that differ only in seed (or in values that are inputs, not constants, of the
  compiled programs) then compile once: on a 2-core CPU that saves ~20 s of a ~30 s toy run.
  """
  if not directory or directory == "none":
    yield
    return
  import jax  # pylint: disable=g-import-not-at-top
  from jax.experimental.compilation_cache import compilation_cache  # pylint: disable=g-import-not-at-top

  from pah_jax import train  # pylint: disable=g-import-not-at-top

  previous = {k: getattr(jax.config, k) for k in ("jax_compilation_cache_dir",
                                                  "jax_persistent_cache_min_compile_time_secs")}
  os.makedirs(directory, exist_ok=True)
  compilation_cache.reset_cache()  # takes the directory even if an earlier compile looked
  train.use_compilation_cache(directory)
  try:
    yield
  finally:  # leave the process as found (the tests call main() in-process)
    for key, value in previous.items():
      jax.config.update(key, value)
    compilation_cache.reset_cache()


def add_executor_flags(parser: argparse.ArgumentParser) -> None:
  """--executor, --max-parallel, --parallel-seeds and --slurm-*, as pah_jax.sweep has them."""
  parser.add_argument("--executor", choices=sweep_lib.EXECUTORS, default="inline",
                      help="where the runs execute (default: inline, in this process; local: --max-parallel "
                           "processes; slurm: queue a job array and return, rerun to write the tables)")
  parser.add_argument("--max-parallel", type=int, default=0,
                      help="runs at once (local: default one per GPU, else 1; slurm: the array's parallelism)")
  parser.add_argument("--parallel-seeds", action="store_true",
                      help="train each row's seeds together as one vmapped program (same results per seed)")
  parser.add_argument("--slurm-partition", default="", help="SLURM partition (slurm executor)")
  parser.add_argument("--slurm-time", type=int, default=240,
                      help="time limit of each job, minutes: a job that reaches it saves, is requeued and resumes")
  parser.add_argument("--slurm-gpus-per-job", type=int, default=1, help="GPUs per job (slurm executor)")
  parser.add_argument("--slurm-mem", type=int, default=0, help="memory per job, GB (0: the cluster's default)")


def exit_code(finished: bool, args) -> int:
  """0 when every run has finished or is queued on SLURM, 1 when a run failed (`execute` said which)."""
  return 0 if finished or args.executor == "slurm" else 1


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command", required=True)
  for name, default_workdir, help_text in (
      ("table1", "runs/paper", "PAH on Split-CIFAR100 and TinyImageNet (10x20, 20x10), N seeds"),
      ("ablation", "runs/paper", "prototype size, prototype init, lambda_sm, lambda_sp")):
    p = sub.add_parser(name, help=help_text, description=help_text)
    p.add_argument("--config", nargs="+", action="extend",
                   help=("config files, one row each (default: " + " ".join(TABLE1_CONFIGS) + ")"
                         if name == "table1" else f"the base config (default: {ABLATION_CONFIG})"))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds (default: 0 1 2)")
    p.add_argument("--workdir", default=default_workdir, help=f"runs and tables (default: {default_workdir})")
    p.add_argument("--override", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="config changes for every run, e.g. train.epochs=1 data.path=/data")
    p.add_argument("--compile-cache", default=None,
                   help="JAX persistent compilation cache (default: <workdir>/jax_cache; none: off)")
    add_executor_flags(p)
    if name == "ablation":
      p.add_argument("--only", nargs="+", action="extend", default=[], metavar="GROUP=V1,V2",
                     help="run only these settings, e.g. prototype_size=5,10 lambda_sp=0,1 "
                          "(groups: " + ", ".join(n for n, _, _ in paper_values.ABLATIONS) + ", or any config key)")
  return parser


def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  args = build_parser().parse_args(argv)
  if args.command == "ablation" and args.config and len(args.config) > 1:
    print("error: ablation takes one --config (the base config)", file=sys.stderr)
    return 2
  if len(set(args.seeds)) != len(args.seeds):
    print("error: --seeds has repeats", file=sys.stderr)
    return 2
  if args.max_parallel < 0:
    print("error: --max-parallel must be >= 0", file=sys.stderr)
    return 2
  return run_guarded(args, lambda: (table1 if args.command == "table1" else ablation)(args, argv))


def run_guarded(args, run) -> int:
  """run() (a table command) with this process's compilation cache when it trains in it; a
  mistake is one error line and exit code 2, a stop request the signal's exit code."""
  try:
    with compile_cache(compile_cache_dir(args) if args.executor == "inline" else ""):
      return run()
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except Stopped as e:  # SIGINT/SIGTERM: the run saved a checkpoint; rerunning resumes it
    print(str(e), file=sys.stderr)
    return 128 + e.signum
  except KeyboardInterrupt:  # --executor local: every process saved and stopped
    print("stopped: rerun the same command to continue", file=sys.stderr)
    return 130


if __name__ == "__main__":
  sys.exit(main())
