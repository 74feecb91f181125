"""Seeds in parallel versus separate runs: same accuracy matrices? how much faster?

  python -m experiments.parallel_seeds --config configs/fashion_mnist.py --seeds 0 1 2 3 \\
      --workdir runs/parallel_seeds

Trains every seed as a separate run (<workdir>/separate/seed_<n>), then all seeds as one
vmapped program (<workdir>/parallel/seed_<n>, `train.parallel_seeds`), and writes
<workdir>/parallel_seeds.md and .json: per seed AA / FM both ways, the largest difference
between the two accuracy matrices (points), and the wall times (each run's `seconds`:
training, evaluation and compilation, no persistent compilation cache, as separate processes
would pay). Rerunning re-reads finished runs.
"""

import argparse
import json
import os
import sys

import numpy as np

from experiments import paper_tables as pt
from pah_jax.errors import UserError


def compare(separate: list[dict], parallel: list[dict], seeds) -> dict:
  runs = []
  for s, a, b in zip(seeds, separate, parallel):
    ra, rb = np.asarray(a["accuracy_matrix"], float), np.asarray(b["accuracy_matrix"], float)
    runs.append({"seed": s, "separate": {k: a[k] for k in ("average_accuracy", "forgetting", "seconds")},
                 "parallel": {k: b[k] for k in ("average_accuracy", "forgetting")},
                 "max_abs_difference": float(np.nanmax(np.abs(ra - rb))),
                 "accuracy_matrix_separate": a["accuracy_matrix"], "accuracy_matrix_parallel": b["accuracy_matrix"]})
  separate_seconds = float(sum(r["seconds"] for r in separate))
  parallel_seconds = float(parallel[0]["seconds"])  # one program: every seed records its time
  return {"runs": runs, "separate_seconds": separate_seconds, "parallel_seconds": parallel_seconds,
          "speedup": separate_seconds / parallel_seconds,
          "max_abs_difference": max(r["max_abs_difference"] for r in runs)}


def markdown(result: dict, command: str, machine: str) -> str:
  lines = ["# Seeds in parallel versus separate runs", "", f"Command: `{command}`  ", f"Machine: {machine}", "",
           "| seed | separate AA / FM | parallel AA / FM | max abs difference of R (points) |", "|---|---|---|---|"]
  for r in result["runs"]:
    a, b = r["separate"], r["parallel"]
    lines.append(f"| {r['seed']} | {a['average_accuracy']:.2f} / {a['forgetting']:.2f} | "
                 f"{b['average_accuracy']:.2f} / {b['forgetting']:.2f} | {r['max_abs_difference']:.2f} |")
  lines += ["", f"Wall time: {len(result['runs'])} separate runs {result['separate_seconds']:.0f} s, "
            f"one parallel program {result['parallel_seconds']:.0f} s (speed-up {result['speedup']:.2f}x)."]
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", default="configs/fashion_mnist.py")
  parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3])
  parser.add_argument("--workdir", default="runs/parallel_seeds")
  parser.add_argument("--override", nargs="+", action="extend", default=[], metavar="KEY=VALUE")
  args = parser.parse_args(argv)
  try:
    config = pt.load_config(args.config)
    pt.apply_overrides(config, args.override)
    import jax  # pylint: disable=g-import-not-at-top

    from pah_jax import train  # pylint: disable=g-import-not-at-top

    separate = []
    for s in args.seeds:
      c = config.copy_and_resolve_references()
      c.seed = s
      separate.append(train.train_and_evaluate(c, os.path.join(args.workdir, "separate", f"seed_{s}")))
    parallel = train.train_seeds(
        config, args.seeds, train.seed_workdirs(os.path.join(args.workdir, "parallel"), args.seeds))
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  result = compare(separate, parallel, args.seeds)
  device = jax.devices()[0]
  machine = f"{jax.default_backend()} ({device.device_kind}), {os.cpu_count()} CPU cores"
  command = "python -m experiments.parallel_seeds " + " ".join(argv if argv is not None else sys.argv[1:])
  result |= {"command": command, "machine": machine, "config": args.config, "overrides": args.override}
  with open(os.path.join(args.workdir, "parallel_seeds.json"), "w") as f:
    json.dump(result, f, indent=1)
  with open(os.path.join(args.workdir, "parallel_seeds.md"), "w") as f:
    f.write(markdown(result, command, machine))
  print(markdown(result, command, machine))
  return 0


if __name__ == "__main__":
  sys.exit(main())
