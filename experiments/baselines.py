"""PAH against the baselines in one framework: methods x seeds on one config, as one table.

  python -m experiments.baselines --config configs/fashion_mnist.py --seeds 0 1 2 \\
      --lr-grid 1e-4 3e-4 1e-3 --workdir runs/baselines_fmnist [--executor local --max-parallel 2]

Every method (default: all of pah_jax.methods) trains with the same backbone, data, schedule
and metrics. With --lr-grid each method first runs once per backbone learning rate
(optim.lr_backbone; heads, hypernetwork and prototypes keep theirs) on --tune-seed, a seed
that is not in the table, and the table then uses the rate with the best average accuracy
(ties: lower forgetting). Writes <workdir>/baselines.md (AA and FM mean ± std, wall time) and
baselines.json (every accuracy matrix), and with a grid lr_grid.md / lr_grid.json.

Each (method, rate) is a sweep (`pah_jax.sweep`, as experiments/paper_tables.py's rows are):
the config with `method` set and the rate as a one-point grid, in <workdir>/<method>/lr_<rate>;
its runs are <workdir>/<method>/lr_<rate>/optim.lr_backbone=<rate>/seed_<n> (the grid's seed and
the table's seeds side by side). So a rerun resumes unfinished runs and re-reads finished ones.
The runs go to `--executor` (inline, local with --max-parallel, submitit-local, slurm) as in
experiments/paper_tables.py. With --executor slurm the command queues the grid's jobs and
returns; rerun the same command once they have finished and it picks each method's rate and
queues the table's jobs; once those have finished, the same command again writes the table.
"""

import argparse
import copy
import os
import shlex
import sys
import time

from experiments import paper_tables as pt
from pah_jax import methods
from pah_jax.errors import UserError


def _rate(lr: float) -> str:
  return f"{lr:g}"


def make_row(base, method: str, lr, seeds, workdir: str) -> pt.Row:
  """`method` at backbone rate `lr` (None: the config's) for `seeds`."""
  config = copy.deepcopy(base)
  config.method = method
  lr = config.optim.lr_backbone if lr is None else lr
  row = pt.make_row(config, os.path.join(workdir, method, f"lr_{_rate(lr)}"), (("optim.lr_backbone", lr),), seeds,
                    {"label": f"{method} lr {_rate(lr)}", "method": method, "lr_backbone": lr})
  row.info["description"] = methods.declaration(method).describe(row.config)
  return row


def best_rate(rows: list) -> pt.Row:
  """The row with the highest mean AA; ties (within 0.01) go to the lower mean FM."""
  def key(row):
    s = pt.row_stats(row)
    aa = s["average_accuracy"]["mean"] if s else float("-inf")
    fm = s["forgetting"]["mean"] if s and s["forgetting"]["mean"] is not None else 0.0
    return (round(aa, 2), -fm)
  return max(rows, key=key)


def grid_markdown(grid: dict, command: str, seed: int) -> str:
  rates = sorted({row.info["lr_backbone"] for rows in grid.values() for row in rows})
  lines = []
  for method, rows in grid.items():
    by_rate = {row.info["lr_backbone"]: row for row in rows}
    chosen = best_rate(rows).info["lr_backbone"] if all(r.results for r in rows) else None
    cells = []
    for lr in rates:
      s = pt.row_stats(by_rate[lr]) if lr in by_rate else {}
      cell = (f"{s['average_accuracy']['mean']:.2f} / " + (f"{s['forgetting']['mean']:.2f}"
                                                          if s["forgetting"]["mean"] is not None else pt._NONE)
              if s else pt._NONE)
      cells.append(f"**{cell}**" if lr == chosen else cell)
    lines.append([method] + cells)
  header = ["Method"] + [f"lr_backbone {_rate(lr)}: AA / FM" for lr in rates]
  return "\n".join([
      "# Learning-rate grid", "", f"Command: `{command}`  ",
      f"Tuning seed {seed} (not a table seed). Bold: the rate the table uses (best AA; ties: lower FM). "
      "Other learning rates (heads, hypernetwork, prototypes) as configured.", "",
      pt.markdown_table(header, lines)])


def table_markdown(rows: list, command: str, seeds, applied, label: str, wall: float) -> str:
  lines = []
  for row in rows:
    s = pt.row_stats(row)
    total = sum(r["seconds"] for r in row.results.values())
    lines.append([row.info["method"], row.info["description"], _rate(row.info["lr_backbone"]), pt._seeds_done(row),
                  pt.fmt_measured(s, "average_accuracy"), pt.fmt_measured(s, "forgetting"), pt._wall(s),
                  pt.fmt_seconds(total) if row.results else pt._NONE])
  header = ["Method", "What", "lr_backbone", "Seeds", "AA", "FM", "Wall time / run", "Wall time, all seeds"]
  runs_total = sum(r["seconds"] for row in rows for r in row.results.values())
  shown = ", ".join(f"`{k}={v!r}`" for k, v in applied) or "none"
  return "\n".join([
      f"# Baselines on {label}", "", f"Command: `{command}`  ",
      f"Seeds: {', '.join(map(str, seeds))}; overrides: {shown}  ",
      "AA (average accuracy) and FM (forgetting, Chaudhry et al. 2018) in %, mean ± sample std over "
      "seeds; joint training has no sequence, so no forgetting. Wall time = each run's training and "
      "evaluation, compiling its programs included (the runs share JAX's persistent compilation cache; "
      f"data loading and initialisation excluded). Table runs: {pt.fmt_seconds(runs_total)} in all; "
      f"this invocation's wall time {pt.fmt_seconds(wall)}.", "",
      pt.markdown_table(header, lines)])


def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", default="configs/fashion_mnist.py", help="the config every method runs")
  parser.add_argument("--methods", nargs="+", default=list(methods.BUILTIN),
                      help="methods: built-in names or method module paths (default: every built-in)")
  parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="table seeds (default: 0 1 2)")
  parser.add_argument("--lr-grid", nargs="+", type=float, default=[], metavar="LR",
                      help="backbone learning rates to tune each method over (default: none, the config's)")
  parser.add_argument("--tune-seed", type=int, default=100, help="seed of the grid runs (default: 100)")
  parser.add_argument("--workdir", default="runs/baselines", help="runs and tables (default: runs/baselines)")
  parser.add_argument("--override", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                      help="config changes for every run, e.g. train.epochs=1")
  parser.add_argument("--compile-cache", default=None,
                      help="JAX persistent compilation cache (default: <workdir>/jax_cache; none: off)")
  pt.add_executor_flags(parser)
  args = parser.parse_args(argv)
  if len(set(args.methods)) != len(args.methods):
    print(f"error: --methods must be distinct (got {' '.join(args.methods)})", file=sys.stderr)
    return 2
  try:
    for m in args.methods:
      methods.declaration(m)
  except UserError as e:
    print(f"error: --methods: {e}", file=sys.stderr)
    return 2
  if len(set(args.seeds)) != len(args.seeds) or args.tune_seed in args.seeds and args.lr_grid:
    print("error: --seeds must be distinct and must not contain --tune-seed", file=sys.stderr)
    return 2
  if any(lr <= 0 for lr in args.lr_grid):
    print("error: --lr-grid rates must be > 0", file=sys.stderr)
    return 2
  if args.max_parallel < 0:
    print("error: --max-parallel must be >= 0", file=sys.stderr)
    return 2
  command = " ".join(["python -m experiments.baselines"] + [shlex.quote(a) for a in argv])
  return pt.run_guarded(args, lambda: tables(args, command))


def tables(args, command: str) -> int:
  """The grid (with --lr-grid), then the table at each method's best rate."""
  started = time.time()
  base, applied = pt.base_config(args.config, args, args.override)
  label = pt.benchmark_label(base)
  chosen = {m: None for m in args.methods}
  if args.lr_grid:
    grid = {m: [make_row(base, m, lr, [args.tune_seed], args.workdir) for lr in args.lr_grid] for m in args.methods}
    write_grid = lambda: pt._write(args.workdir, "lr_grid", grid_markdown(grid, command, args.tune_seed),
                                   {m: [pt.row_json(r) for r in rows] for m, rows in grid.items()})
    if not pt.execute([row for rows in grid.values() for row in rows], write_grid, args,
                      then="pick each method's rate and run the table"):
      return pt.exit_code(False, args)
    chosen = {m: best_rate(rows).info["lr_backbone"] for m, rows in grid.items()}
  rows = [make_row(base, m, chosen[m], args.seeds, args.workdir) for m in args.methods]
  table_started = time.time()
  write = lambda: pt._write(args.workdir, "baselines",
                            table_markdown(rows, command, args.seeds, applied, label, time.time() - table_started),
                            {"command": command, "rows": [pt.row_json(r) for r in rows]})
  finished = pt.execute(rows, write, args)
  print(f"tables in {args.workdir} ({pt.fmt_seconds(time.time() - started)})")
  return pt.exit_code(finished, args)


if __name__ == "__main__":
  sys.exit(main())
