"""The result tables of the docs, written from the results files under experiments/results/.

  python -m experiments.report            # rewrite every generated table in README.md and docs/
  python -m experiments.report --check    # exit 1 (and name the files) if any table is stale

A generated table sits between two markers in a Markdown file:

  <!-- report: NAME -->
  ...written by this module...
  <!-- /report -->

and NAME is one of `TABLES`. Everything outside the markers is left alone. So a number in the
docs is the number in its results file: rerun an experiment, commit its JSON, run this, commit
the docs (CI runs --check, so the two cannot drift apart).
"""

import argparse
import glob
import json
import os
import re
import sys

from pah_jax import metrics

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPOSITORY, "experiments", "results")
NONE = "—"
_BLOCK = re.compile(r"(<!-- report: ([a-z0-9_]+) -->\n)(.*?)(<!-- /report -->)", re.S)


def _load(name: str) -> dict:
  with open(os.path.join(RESULTS, name)) as f:
    return json.load(f)


def _ms(stat) -> str:
  """mean ± std of a {"mean", "std"} dict (or None)."""
  if not stat or stat.get("mean") is None:
    return NONE
  return f"{stat['mean']:.2f} ± {stat['std']:.2f}"


def _mean_std(values) -> dict | None:
  values = [v for v in values if v is not None]
  if not values:
    return None
  mean, std = metrics.mean_std(values)
  return {"mean": mean, "std": std}


def _row_plasticity(row: dict) -> dict | None:
  return _mean_std([metrics.plasticity(r["accuracy_matrix"]) for r in row["runs"]])


def _seconds(s) -> str:
  if s is None:
    return NONE
  return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def table(header: list[str], rows: list[list[str]]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


# --------------------------------------------------------------------------- the tables


def official() -> str:
  """configs/fashion_mnist_official.py against the authors' code at the same setting."""
  d = _load("fmnist_official_padded.json")
  runs = sorted(d["runs"], key=lambda r: r["seed"])
  authors = d["authors_code_seeds_0_2"]

  def line(label, aa, fm):
    a, f = _mean_std(aa), _mean_std(fm)
    return [label, ", ".join(f"{v:.2f}" for v in aa), ", ".join(f"{v:.2f}" for v in fm), _ms(a), _ms(f)]

  rows = [line("the authors' code, seeds 0-2", authors["average_accuracy"], authors["forgetting"])]
  for n in (3, len(runs)):
    rows.append(line(f"pah_jax, seeds 0-{n - 1}", [r["average_accuracy"] for r in runs[:n]],
                     [r["forgetting"] for r in runs[:n]]))
  return table(["Run", "AA per seed", "FM per seed", "AA", "FM"], rows)


def torch_official() -> str:
  """The official algorithm written in PyTorch on pah_jax's own task split (the cross-check)."""
  d = _load("torch_official_fmnist.json")
  runs = sorted(d["runs"], key=lambda r: r["seed"])
  aa, fm = d["average_accuracy"], d["forgetting"]
  return table(["Run", "AA / FM per seed", "AA", "FM"],
               [["PyTorch reference of the official algorithm (28x28, unpadded)",
                 ", ".join(f"{r['average_accuracy']:.2f} / {r['forgetting']:.2f}" for r in runs),
                 f"{aa[0]:.2f} ± {aa[1]:.2f}", f"{fm[0]:.2f} ± {fm[1]:.2f}"]])


def baselines() -> str:
  """Every method at the calibration scale (configs/fashion_mnist.py), its tuned rate, 3 seeds."""
  d = _load("baselines_fmnist.json")
  rows = [[r["method"], r["description"], f"{r['lr_backbone']:g}", f"{len(r['runs'])}/{len(r['seeds'])}",
           _ms(r["average_accuracy"]), _ms(r["forgetting"]), _ms(_row_plasticity(r)), _seconds(r["seconds"]["mean"])]
          for r in d["rows"]]
  return table(["Method", "What", "lr_backbone", "Seeds", "AA", "FM", "Plasticity", "Wall time / run"], rows)


def lr_grid() -> str:
  """Each method's AA / FM over the backbone learning rates on the tuning seed; bold: chosen."""
  d = _load("baselines_fmnist_lr_grid.json")
  chosen = {r["method"]: r["lr_backbone"] for r in _load("baselines_fmnist.json")["rows"]}
  rates = sorted({r["lr_backbone"] for rows in d.values() for r in rows})
  out = []
  for method, rows in d.items():
    by = {r["lr_backbone"]: r for r in rows}
    cells = []
    for lr in rates:
      r = by.get(lr)
      if r is None or not r["runs"]:
        cells.append(NONE)
        continue
      fm = r["forgetting"]["mean"]
      cell = f"{r['average_accuracy']['mean']:.2f} / " + (NONE if fm is None else f"{fm:.2f}")
      cells.append(f"**{cell}**" if lr == chosen.get(method) else cell)
    out.append([method] + cells)
  return table(["Method"] + [f"lr_backbone {lr:g}: AA / FM" for lr in rates], out)


def ablation() -> str:
  """The paper's ablations on Split-FashionMNIST next to the paper's Split-CIFAR100 values."""
  d = _load("ablation_fmnist.json")

  def paper(r, i):
    p = r.get("paper")
    if not p:
      return NONE
    mean, std = p[["average_accuracy", "forgetting"][i]]
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"

  rows = []
  for r in d["rows"]:
    value = r["value"]
    setting = (f"{value}x{value}" if r["key"] == "pah.prototype_size" else
               f"{value:g}" if isinstance(value, float) else str(value)) + (" (base)" if r["is_base"] else "")
    rows.append([r["group"], setting, f"{len(r['runs'])}/{len(r['seeds'])}", _ms(r["average_accuracy"]),
                 paper(r, 0), _ms(r["forgetting"]), paper(r, 1)])
  return table(["Ablation", "Setting", "Seeds", "AA (ours)", "AA (paper, CIFAR)", "FM (ours)", "FM (paper, CIFAR)"],
               rows)


def _suite_rows():
  d = _load("fmnist_suite.json")
  settings = list(dict.fromkeys(r["setting"] for r in d["rows"]))
  entries = list(dict.fromkeys(r["entry"] for r in d["rows"]))
  return d, settings, entries, {(r["setting"], r["entry"]): r for r in d["rows"]}


def suite() -> str:
  """The offline suite: AA / FM / plasticity of every entry on every setting that has runs."""
  d, settings, entries, by = _suite_rows()
  parts = []
  for s in settings:
    rows = []
    for e in entries:
      r = by.get((s, e))
      if r is None:
        continue
      rows.append([e, f"{r['lr_backbone']:g}", f"{len(r['runs'])}/{len(r['seeds'])}", _ms(r.get("average_accuracy")),
                   _ms(r.get("forgetting")), _ms(r.get("plasticity")), _seconds((r.get("seconds") or {}).get("mean"))])
    parts.append(f"**{s}**: {d['settings'][s]['what']}\n\n"
                 + table(["Entry", "lr_backbone", "Seeds", "AA", "FM", "Plasticity", "Wall time / run"], rows))
  return "\n\n".join(parts)


def _factor_table(name: str) -> str:
  """One factor at a time on suite settings (a `--vary` table): per setting and entry, each change
  that has runs against the entry's base row, Δ on paired seeds (the change minus the base on each seed both ran,
  averaged), so a row run on fewer seeds is compared with the base on those seeds only."""
  groups: dict[tuple, list] = {}
  for r in _load(name)["rows"]:
    if r["runs"] or not r["change"]:  # changes not run: not shown
      groups.setdefault((r["setting"], r["entry"].split(",")[0]), []).append(r)
  return "\n\n".join(_one_setting_factors(rows) for rows in groups.values())


def _one_setting_factors(rows: list[dict]) -> str:
  base = next(r for r in rows if not r["change"])
  base_runs = {run["seed"]: run for run in base["runs"]}

  def value(run, metric):
    return metrics.plasticity(run["accuracy_matrix"]) if metric == "plasticity" else run[metric]

  def delta(r, metric):
    pairs = [(value(run, metric), value(base_runs[run["seed"]], metric)) for run in r["runs"]
             if run["seed"] in base_runs]
    if r is base or not pairs:
      return NONE
    return f"{sum(a - b for a, b in pairs) / len(pairs):+.2f}"

  def seeds(r):
    shown = f"{len(r['runs'])}/{len(r['seeds'])}"
    if len(r["runs"]) == len(base["runs"]):
      return shown
    return f"{shown} (seed {', '.join(str(run['seed']) for run in r['runs'])})"

  def stat(r, metric):  # one seed has no spread to show
    return f"{r[metric]['mean']:.2f}" if len(r["runs"]) == 1 else _ms(r.get(metric))

  out = [["(base)" if r is base else f"`{r['change'][0]}={r['change'][1]}`", seeds(r),
          stat(r, "average_accuracy"), delta(r, "average_accuracy"), stat(r, "forgetting"),
          delta(r, "forgetting"), stat(r, "plasticity"), delta(r, "plasticity")] for r in rows]
  return (f"Setting `{base['setting']}`, entry `{base['entry']}`, seeds {', '.join(map(str, base['seeds']))}; Δ: the "
          "change minus the base "
          "on the same seeds, averaged.\n\n"
          + table(["Change", "Seeds", "AA", "ΔAA", "FM", "ΔFM", "Plasticity", "Δplasticity"], out))


def factors() -> str:
  """PAH one factor at a time on the suite's n300_seq setting."""
  return _factor_table("fmnist_factors.json")


def plus_attempts() -> str:
  """PAH+ candidates one at a time on the suite's 300-image settings, where PAH+ misses its bar."""
  return _factor_table("fmnist_plus_attempts.json")


def _aa_fm(r) -> str:
  """A suite row's mean AA / FM, naming the seeds when not all of them have run."""
  if r is None or not r.get("runs"):
    return NONE
  fm = r["forgetting"]["mean"]
  seeds = "" if len(r["runs"]) == len(r["seeds"]) else f" ({len(r['runs'])} of {len(r['seeds'])} seeds)"
  return f"{r['average_accuracy']['mean']:.2f} / " + (NONE if fm is None else f"{fm:.2f}") + seeds


def plus() -> str:
  """PAH+ against LwF (and fine-tuning, the floor) on every suite setting it ran: the bar is LwF's
  AA - 0.5 and FM <= 1.0."""
  _, settings, _, by = _suite_rows()
  rows = []
  for s in settings:
    p, lwf = by.get((s, "pah_plus")), by.get((s, "lwf"))
    if not p or not p["runs"] or not lwf or not lwf["runs"]:
      continue
    aa, fm, bar = p["average_accuracy"]["mean"], p["forgetting"]["mean"], lwf["average_accuracy"]["mean"] - 0.5
    met = {"AA": aa >= bar, "FM": fm <= 1.0}
    verdict = "yes" if all(met.values()) else ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in met.items())
    rows.append([s, _aa_fm(p), _aa_fm(lwf), _aa_fm(by.get((s, "finetune"))), f"{bar:.2f}", verdict])
  return table(["Setting", "PAH+ AA / FM", "LwF AA / FM", "Fine-tuning AA / FM", "bar: AA >=", "met?"], rows)


def glance() -> str:
  """README: every entry of the offline suite, AA / FM, one column per setting (named as in SETTINGS)."""
  _, settings, entries, by = _suite_rows()
  return table(["Method"] + [f"`{s}`" for s in settings], [[e] + [_aa_fm(by.get((s, e))) for s in settings]
                                                           for e in entries])


def speed() -> str:
  """PAH's step against fine-tuning's and against the authors' PyTorch step, per machine."""
  cases = [("H100, batch 64, imagenet stem, fp32, full width", "h100/imagenet_b64_fp32.json"),
           ("H100, batch 512, cifar stem, bf16, full width", "h100/cifar_b512_bf16_with_torch.json"),
           ("2-core CPU, batch 64, imagenet stem, full width", "bench_cpu_w100_small_map_convs_matmul.json"),
           ("2-core CPU, batch 64, imagenet stem, width 0.25", "bench_cpu_w025_small_map_convs_matmul.json")]
  rows = []
  for label, name in cases:
    r = _load(name)["ratios"]
    rows.append([label, f"{r['pah_step_over_finetune_step_time']:.2f}",
                 f"{r['pah_chunk_over_finetune_chunk_step_time']:.2f}",
                 f"{r['pah_step_over_torch_official_throughput']:.1f}x",
                 f"{r['pah_chunk_over_torch_official_throughput']:.1f}x", f"`experiments/results/{name}`"])
  return table(["Machine and step", "PAH / fine-tune step time (jitted step)", "(training path)",
                "PAH / PyTorch official throughput (jitted step)", "(training path)", "Results file"], rows)


TABLES = {"official": official, "torch_official": torch_official, "baselines": baselines, "lr_grid": lr_grid,
          "ablation": ablation, "suite": suite, "factors": factors, "plus": plus,
          "plus_attempts": plus_attempts, "glance": glance, "speed": speed}


# --------------------------------------------------------------------------- the files


def documents() -> list[str]:
  return [os.path.join(REPOSITORY, "README.md")] + sorted(glob.glob(os.path.join(REPOSITORY, "docs", "*.md")))


def render(text: str, path: str) -> str:
  """`text` with every generated block rewritten; an unknown table name is an error."""
  def replace(m):
    name = m.group(2)
    if name not in TABLES:
      raise SystemExit(f"error: {os.path.relpath(path, REPOSITORY)} asks for table {name!r}; "
                       f"known: {', '.join(TABLES)}")
    return m.group(1) + TABLES[name]().rstrip() + "\n" + m.group(4)

  return _BLOCK.sub(replace, text)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a generated table is stale")
  args = parser.parse_args(argv)
  stale = []
  for path in documents():
    with open(path) as f:
      text = f.read()
    new = render(text, path)
    if new != text:
      stale.append(os.path.relpath(path, REPOSITORY))
      if not args.check:
        with open(path, "w") as f:
          f.write(new)
  if args.check and stale:
    print(f"stale generated tables in {', '.join(stale)}: run python -m experiments.report", file=sys.stderr)
    return 1
  print(("rewrote " + ", ".join(stale)) if stale and not args.check else "every generated table is up to date")
  return 0


if __name__ == "__main__":
  sys.exit(main())
