"""An offline benchmark that separates the methods: Split-FashionMNIST 5x2 at several training-set
sizes and class orders, every method, three seeds, as one table.

  python -m experiments.suite --workdir runs/suite [--executor local --max-parallel 2]
  python -m experiments.suite --workdir runs/suite --settings n300_seq --entries pah lwf finetune
  python -m experiments.suite --workdir runs/suite --settings n300_seq --entries pah \
      --vary pah.lambda_sm=0.25,1 optim.lr_hypernet=3e-4       # one factor at a time

At the calibration scale of configs/fashion_mnist.py (2000 images per task, 2 epochs) every
method lands within about one point of AA of the others; fewer images per task with more epochs,
and orders other than the natural one, pull them apart. The settings (`SETTINGS`) change
configs/fashion_mnist.py; each method trains at the backbone learning rate it chose on the
learning-rate grid of experiments.baselines on that config (`RATES`, tuning seed 100, not a
table seed). `--entries` adds named variants (`VARIANTS`: a method with a config overlay).
`--vary KEY=V1,V2 ...` adds, for every entry that reads KEY, one row per value that changes it
(values parsed as the command line's --config.KEY=VALUE): a factor study on the suite.

Every (setting, entry) is a sweep (`pah_jax.sweep`) in <workdir>/<setting>/<entry> (a --vary
row in <workdir>/<setting>/<entry>/<key>=<value>), its runs in <...>/<overrides>/seed_<n>. So
a rerun resumes what is unfinished and re-reads what is done, the suite may be run in parts
(--settings, --entries), and the runs go to any executor (inline, local, submitit-local, slurm)
as in experiments.paper_tables. Writes <workdir>/suite.md (AA, FM and plasticity per setting and
entry, mean ± std over seeds, wall time) and suite.json (every run's accuracy matrix),
rewritten after every run; `--table NAME` names them NAME.md / NAME.json instead, so a factor
study keeps its own table while sharing the runs; `--tables-only` writes the tables from the runs
finished so far (by any invocation) and trains nothing.

Plasticity = mean_j R[j][j], the accuracy on each task right after learning it
(`pah_jax.metrics.plasticity`): next to FM it says whether a method loses accuracy by learning
new tasks less well or by forgetting old ones.
"""

import argparse
import copy
import dataclasses
import importlib
import os
import shlex
import sys
import time

from experiments import paper_tables as pt
from pah_jax import config_check
from pah_jax import methods
from pah_jax.errors import UserError

BASE_CONFIG = "configs/fashion_mnist.py"


@dataclasses.dataclass(frozen=True)
class Setting:
  name: str
  what: str
  overrides: tuple  # ((key, value), ...) on BASE_CONFIG


def _order(seed):
  return (("data.class_order", "random"), ("data.class_order_seed", seed))


_N300 = (("data.max_train_per_task", 300), ("train.epochs", 10))
SETTINGS = (
    Setting("n300_seq", "300 images per task, 10 epochs, natural class order", _N300),
    Setting("n300_order1", "300 images per task, 10 epochs, random class order 1", _N300 + _order(1)),
    Setting("n300_order2", "300 images per task, 10 epochs, random class order 2", _N300 + _order(2)),
    Setting("n2000_seq", "2000 images per task, 2 epochs, natural class order (configs/fashion_mnist.py)", ()),
    Setting("n12000_seq", "all 12000 images per task, 1 epoch, natural class order",
            (("data.max_train_per_task", 0), ("train.epochs", 1))),
)
SETTING_NAMES = tuple(s.name for s in SETTINGS)

# The backbone learning rate each method chose on configs/fashion_mnist.py's grid 1e-4 / 3e-4 /
# 1e-3 (tuning seed 100; experiments/results/baselines_fmnist_lr_grid.md).
RATES = {"pah": 3e-4, "hnet": 1e-3, "finetune": 1e-4, "joint": 1e-3, "lwf": 3e-4, "ewc": 1e-4, "si": 1e-4,
         "agem": 1e-4, "derpp": 3e-4}

# Named variants: (method, config module with apply(config)); their backbone rate is the method's.
VARIANTS = {"pah_plus": ("pah", "configs.plus")}


@dataclasses.dataclass(frozen=True)
class Entry:
  name: str
  method: str
  overlay: str = ""  # a config module whose apply(config) is applied after BASE_CONFIG


def entry(name: str) -> Entry:
  if name in VARIANTS:
    return Entry(name, *VARIANTS[name])
  if name in RATES:
    return Entry(name, name)
  raise UserError(f"--entries: {name!r} is neither a method with a tuned rate ({', '.join(RATES)}) "
                  f"nor a variant ({', '.join(VARIANTS) or 'none'})")


def make_row(base, setting: Setting, e: Entry, seeds, workdir: str, change: tuple = ()) -> pt.Row:
  """Entry `e` on `setting` at its method's rate; `change` = (key, value): one factor changed."""
  config = copy.deepcopy(base)
  config.method = e.method
  if e.overlay:
    config = importlib.import_module(e.overlay).apply(config)
  overrides = dict(setting.overrides)
  overrides["optim.lr_backbone"] = RATES[e.method]
  directory = os.path.join(workdir, setting.name, e.name)
  label = e.name
  if change:
    overrides[change[0]] = change[1]
    shown = f"{change[0]}={pt._setting(*change)}"
    directory = os.path.join(directory, shown)
    label = f"{e.name}, {shown}"
  row = pt.make_row(config, directory, tuple(overrides.items()), seeds,
                    {"label": f"{setting.name} {label}", "setting": setting.name, "entry": label, "method": e.method,
                     "overlay": e.overlay, "change": list(change), "lr_backbone": overrides["optim.lr_backbone"]})
  row.info["description"] = methods.declaration(e.method).describe(row.config)
  return row


def suite_markdown(rows: list[pt.Row], settings: list[Setting], command: str, seeds, applied) -> str:
  by = {(r.info["setting"], r.info["entry"]): r for r in rows}
  entries = list(dict.fromkeys(r.info["entry"] for r in rows))
  shown = ", ".join(f"`{k}={v!r}`" for k, v in applied) or "none"
  total = sum(r["seconds"] for row in rows for r in row.results.values())
  lines = [
      "# Split-FashionMNIST suite", "", f"Command: `{command}`  ",
      f"Base config `{BASE_CONFIG}`; seeds {', '.join(map(str, seeds))}; overrides: {shown}  ",
      "AA (average accuracy), FM (forgetting, Chaudhry et al. 2018) and plasticity (mean accuracy on each task "
      "right after learning it) in %, mean ± sample std over the finished seeds. Joint training has no sequence: "
      "no FM, no plasticity. Each method at its tuned backbone rate (lr). Wall time = training and evaluation per "
      f"run, compiles included. Runs so far: {pt.fmt_seconds(total)} in all.", "",
      "## AA / FM at a glance", ""]
  overview = []
  for e in entries:
    cells = []
    for s in settings:
      st = pt.row_stats(by[s.name, e])
      aa = st["average_accuracy"]["mean"] if st else None
      fm = st["forgetting"]["mean"] if st else None
      cells.append(pt._NONE if aa is None else f"{aa:.2f} / " + (pt._NONE if fm is None else f"{fm:.2f}"))
    overview.append([e] + cells)
  lines += [pt.markdown_table(["Entry"] + [s.name for s in settings], overview), ""]
  for s in settings:
    lines += [f"## {s.name}: {s.what}", ""]
    table = []
    for e in entries:
      row = by[s.name, e]
      st = pt.row_stats(row)
      table.append([e, row.info["description"], f"{row.info['lr_backbone']:g}", pt._seeds_done(row),
                    pt.fmt_measured(st, "average_accuracy"), pt.fmt_measured(st, "forgetting"),
                    pt.fmt_measured(st, "plasticity"), pt._wall(st)])
    lines += [pt.markdown_table(["Entry", "What", "lr", "Seeds", "AA", "FM", "Plasticity", "Wall time / run"],
                                table), ""]
  return "\n".join(lines).rstrip()


def suite_json(rows: list[pt.Row], command: str) -> dict:
  return {"command": command, "base_config": BASE_CONFIG,
          "settings": {s.name: {"what": s.what, "overrides": [list(o) for o in s.overrides]} for s in SETTINGS},
          "rows": [pt.row_json(r) for r in rows]}


def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--settings", nargs="+", choices=SETTING_NAMES, default=list(SETTING_NAMES),
                      help="settings to run (default: all)")
  parser.add_argument("--entries", nargs="+", default=list(RATES),
                      help="methods and variants (default: every built-in method)")
  parser.add_argument("--vary", nargs="+", action="extend", default=[], metavar="KEY=V1,V2",
                      help="one factor at a time: a row per value of KEY for every entry")
  parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds (default: 0 1 2)")
  parser.add_argument("--workdir", default="runs/suite", help="runs and tables (default: runs/suite)")
  parser.add_argument("--tables-only", action="store_true",
                      help="write the tables from the runs finished so far; train nothing")
  parser.add_argument("--table", default="suite",
                      help="the tables' name: <workdir>/<table>.md and .json (default: suite); runs are shared")
  parser.add_argument("--override", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                      help="config changes for every run, e.g. data.path=/data/fashion-mnist")
  parser.add_argument("--compile-cache", default=None,
                      help="JAX persistent compilation cache (default: <workdir>/jax_cache; none: off)")
  pt.add_executor_flags(parser)
  args = parser.parse_args(argv)
  if len(set(args.seeds)) != len(args.seeds) or len(set(args.entries)) != len(args.entries):
    print("error: --seeds and --entries must be distinct", file=sys.stderr)
    return 2
  if args.max_parallel < 0:
    print("error: --max-parallel must be >= 0", file=sys.stderr)
    return 2
  command = " ".join(["python -m experiments.suite"] + [shlex.quote(a) for a in argv])
  return pt.run_guarded(args, lambda: run(args, command))


def run(args, command: str) -> int:
  started = time.time()
  entries = [entry(name) for name in args.entries]
  settings = [s for s in SETTINGS if s.name in args.settings]
  base, applied = pt.base_config(BASE_CONFIG, args, args.override)
  changes = [(key, value) for key, values in pt.parse_only(base, args.vary).items() for value in values]
  rows = [make_row(base, s, e, args.seeds, args.workdir, change) for s in settings for e in entries
          for change in [()] + [c for c in changes if not config_check.unread_by(e.method, c[0], base)]]
  if args.tables_only:
    for row in rows:
      row.run = False
  write = lambda: pt._write(args.workdir, args.table, suite_markdown(rows, settings, command, args.seeds, applied),
                            suite_json(rows, command))
  finished = pt.execute(rows, write, args)
  print(f"tables in {args.workdir} ({pt.fmt_seconds(time.time() - started)})")
  return pt.exit_code(finished, args)


if __name__ == "__main__":
  sys.exit(main())
