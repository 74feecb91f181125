"""The PAH paper's Table 1 and ablation table as two commands, measured next to the paper's values.

  python -m experiments.paper_tables table1 --seeds 0 1 2 --workdir runs/paper
  python -m experiments.paper_tables ablation --config configs/cifar.py --seeds 0 1 2 --workdir runs/paper

Offline, on a CPU (Split-FashionMNIST; the paper's columns stay Split-CIFAR100's):

  python -m experiments.paper_tables ablation --config configs/fashion_mnist.py --seeds 0 1 2 \\
      --workdir runs/ablation_fmnist

table1 trains PAH on Split-CIFAR100 10x10, TinyImageNet 10x20 and 20x10 (configs/cifar.py,
tinyimagenet.py, tinyimagenet_20.py, or the --config files given) for every seed and writes
<workdir>/table1.md and table1.json. ablation changes one key of the base config at a time:
prototype size 5/10/16/20, semantic versus random prototype init, lambda_sm 0.1/0.25/0.5/0.75/1.0,
lambda_sp 0/0.5/1.0 (`--only prototype_size=5,10 lambda_sp=0,1` runs a part, or any other
`key=v1,v2` sweep), and writes ablation.md and ablation.json.

Every run calls `pah_jax.train.train_and_evaluate` in this process with its own workdir,
<workdir>/<config name>/<setting>/seed_<n>, so a rerun resumes unfinished runs and only
re-reads finished ones; table1 and ablation given the same --workdir share the base config's
runs. `--override key=value` changes the base config of every run, parsed as the command
line's `--config.key=value` is (pah_jax/overrides.py). The tables are rewritten after
every run, so a long sweep shows its progress. Programs compiled by one run are reused by the
next through JAX's persistent compilation cache in <workdir>/jax_cache (--compile-cache none
turns that off).
"""

import argparse
import contextlib
import copy
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


def set_key(config, key: str, value) -> None:
  *parents, last = key.split(".")
  get_key(config, key)  # refuses unknown keys
  node = config
  for part in parents:
    node = node[part]
  node[last] = value


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


# --------------------------------------------------------------------------- runs


@dataclasses.dataclass
class Row:
  """One table row: a config, run once per seed; results fill in as runs finish."""

  config: ml_collections.ConfigDict
  directory: str  # runs go to <directory>/seed_<n>
  seeds: tuple[int, ...]
  info: dict  # what the row shows besides the measured numbers
  run: bool = True  # False: listed for the paper's value only (ablation --only)
  results: dict = dataclasses.field(default_factory=dict)  # seed -> results.json

  def workdir(self, seed: int) -> str:
    return os.path.join(self.directory, f"seed_{seed}")

  def seed_config(self, seed: int) -> ml_collections.ConfigDict:
    config = copy.deepcopy(self.config)
    config.seed = seed
    return config


def execute(rows: list[Row], write, parallel: bool = False) -> None:
  """Trains every (row, seed) in order; `write()` after each run rewrites the tables.

  Rows that share a directory (the base config in several ablation groups) share runs.
  parallel: a row's unfinished seeds train together as one program (train.train_seeds).
  """
  from pah_jax import train  # pylint: disable=g-import-not-at-top  (JAX only when training)

  for row in rows:  # every config checked before hours of training start
    if row.run:
      config_check.validate(row.config)
    else:
      collect_finished(row)
  write()
  todo = list(dict.fromkeys((row.directory, s) for row in rows if row.run for s in row.seeds))
  by_key = {(row.directory, s): row for row in rows if row.run for s in row.seeds}
  if parallel:
    _execute_parallel(rows, todo, by_key, write)
    return
  for i, key in enumerate(todo, start=1):
    row, seed = by_key[key], key[1]
    workdir = row.workdir(seed)
    finished = os.path.exists(os.path.join(workdir, "results.json"))
    print(f"[{i}/{len(todo)}] {row.info['label']} seed {seed}: {workdir}"
          + (" (finished: re-reading)" if finished else ""), flush=True)
    try:
      results = train.train_and_evaluate(row.seed_config(seed), workdir)
    except UserError as e:
      raise UserError(f"{workdir}: {e}") from None
    _record(rows, key, results)
    write()


def _record(rows: list[Row], key, results: dict) -> None:
  for other in rows:
    if other.run and (other.directory, key[1]) == key:
      other.results[key[1]] = results


def _execute_parallel(rows, todo, by_key, write) -> None:
  """`execute` with each directory's unfinished seeds trained in one vmapped program."""
  from pah_jax import train  # pylint: disable=g-import-not-at-top

  directories = list(dict.fromkeys(d for d, _ in todo))
  for i, directory in enumerate(directories, start=1):
    row = by_key[next(k for k in todo if k[0] == directory)]
    seeds = [s for d, s in todo if d == directory]
    finished = [s for s in seeds if os.path.exists(os.path.join(row.workdir(s), "results.json"))]
    rest = [s for s in seeds if s not in finished]
    print(f"[{i}/{len(directories)}] {row.info['label']} seeds {seeds} in parallel: {directory}"
          + (f" (finished: {finished}, re-reading)" if finished else ""), flush=True)
    try:
      results = {s: train.train_and_evaluate(row.seed_config(s), row.workdir(s)) for s in finished}
      if rest:
        results.update(zip(rest, train.train_seeds(row.config, rest, [row.workdir(s) for s in rest])))
    except UserError as e:
      raise UserError(f"{directory}: {e}") from None
    for s, r in results.items():
      _record(rows, (directory, s), r)
    write()


def collect_finished(row: Row) -> None:
  """Results of a row left out of this invocation that an earlier one finished, same config."""
  for seed in row.seeds:
    path = os.path.join(row.workdir(seed), "results.json")
    if os.path.exists(path):
      results = reporting.read_results(path)
      try:
        config_check.check_same_config(results["config"], row.seed_config(seed))
      except UserError:
        continue  # written under other overrides: not this row's number
      row.results[seed] = results


def run_record(seed: int, workdir: str, results: dict) -> dict:
  return {"seed": seed, "workdir": workdir, "accuracy_matrix": results["accuracy_matrix"],
          **{m: results[m] for m in METRICS}, "seconds": results["seconds"]}


def row_stats(row: Row) -> dict:
  """Mean and sample std over the finished seeds of every metric and of the wall time."""
  if not row.results:
    return {}
  out = {}
  for m in METRICS + ("seconds",):
    values = [row.results[s][m] for s in sorted(row.results)]
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
    config = load_config(path)
    applied = apply_overrides(config, overrides)
    data = config.data.name
    paper = paper_values.PAH.get(data) if config.method == "pah" else None
    info = {"label": benchmark_label(config), "config": path, "data": data, "method": config.method,
            "paper": paper}
    rows.append(Row(config, os.path.join(args.workdir, _config_name(path), "base"), tuple(args.seeds), info))
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


def table1(args, argv) -> None:
  rows, applied = table1_rows(args, args.override)
  command = _command(argv)

  def write():
    data = {"command": command, "seeds": list(args.seeds), "overrides": reporting.jsonable(applied),
            "rows": [row_json(row) for row in rows],
            "paper": {"pah": paper_values.PAH, "baselines": paper_values.BASELINES}}
    _write(args.workdir, "table1", table1_markdown(rows, command, args.seeds, applied), data)

  execute(rows, write, parallel=args.parallel_seeds)
  print(f"wrote {os.path.join(args.workdir, 'table1.md')} and table1.json", flush=True)


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
  base = load_config(path)
  applied = apply_overrides(base, overrides)
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
      config = copy.deepcopy(base)
      set_key(config, key, value)
      setting = "base" if is_base else f"{name}_{_setting(key, value)}"
      info = {"label": f"{name} {_setting(key, value)}", "group": name, "key": key, "value": value,
              "is_base": is_base, "paper": paper_values.ABLATION_VALUES.get((key, value)),
              "paper_note": paper_values.ABLATION_NOTES.get((key, value), "")}
      rows.append(Row(config, os.path.join(args.workdir, _config_name(path), setting), tuple(args.seeds),
                      info, run=value in chosen))
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


def ablation(args, argv) -> None:
  rows, applied, title = ablation_rows(args, args.override)
  command = _command(argv)

  def write():
    data = {"command": command, "benchmark": title, "seeds": list(args.seeds),
            "overrides": reporting.jsonable(applied), "rows": [row_json(row) for row in rows]}
    _write(args.workdir, "ablation", ablation_markdown(rows, title, command, args.seeds, applied), data)

  execute(rows, write, parallel=args.parallel_seeds)
  print(f"wrote {os.path.join(args.workdir, 'ablation.md')} and ablation.json", flush=True)


# --------------------------------------------------------------------------- command line


@contextlib.contextmanager
def compile_cache(directory: str):
  """JAX's persistent compilation cache in `directory` while the runs go, unless one is set.

  Runs that differ only in seed (or in values that are inputs, not constants, of the
  compiled programs) then compile once: on a 2-core CPU that saves ~20 s of a ~30 s toy run.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from jax.experimental.compilation_cache import compilation_cache  # pylint: disable=g-import-not-at-top

  if not directory or directory == "none" or jax.config.jax_compilation_cache_dir:
    yield
    return
  os.makedirs(directory, exist_ok=True)
  compilation_cache.reset_cache()  # takes the directory even if an earlier compile looked
  jax.config.update("jax_compilation_cache_dir", directory)
  try:
    yield
  finally:  # leave the process as found (the tests call main() in-process)
    jax.config.update("jax_compilation_cache_dir", None)
    compilation_cache.reset_cache()


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
    p.add_argument("--parallel-seeds", action="store_true",
                   help="train each row's seeds together as one vmapped program (same results per seed)")
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
  cache = args.compile_cache if args.compile_cache is not None else os.path.join(args.workdir, "jax_cache")
  try:
    with compile_cache(cache):
      (table1 if args.command == "table1" else ablation)(args, argv)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except Stopped as e:  # SIGINT/SIGTERM: the run saved a checkpoint; rerunning resumes it
    print(str(e), file=sys.stderr)
    return 128 + e.signum
  return 0


if __name__ == "__main__":
  sys.exit(main())
