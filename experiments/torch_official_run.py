"""The official PAH algorithm in PyTorch over a whole task sequence, on pah_jax's own data.

  python -m experiments.torch_official_run --config configs/fashion_mnist_official.py \\
      --seeds 0 1 2 --out runs/torch_official.json

A cross-check of the `official` preset: the same tasks, subsample, initial prototypes (and the
images removed for them), epochs, batch size and accuracy protocol as `pah_jax.main` with that
config, but every update is the PyTorch step of experiments/torch_reference.py (written from
as the authors' code runs it: per-old-task backbone passes, two AdamW optimisers, batch statistics everywhere).
If both give the same accuracy matrices up to seed noise, a gap to the authors' numbers lies
outside the algorithm (backbone, data, harness). Only the weights' initial draws and the
data order differ from pah_jax (PyTorch's generator, NumPy's permutation).

Prints and writes (--out) each seed's accuracy matrix, AA and FM, and their mean and std.
PyTorch is a benchmark-only dependency (requirements-benchmark.txt).
"""

import argparse
import json
import os
import sys
import time

import numpy as np

from experiments import paper_tables as pt
from pah_jax import data as data_lib
from pah_jax import methods
from pah_jax import metrics
from pah_jax import train as train_lib
from pah_jax.errors import UserError
from pah_jax.methods import pah as pah_method


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--config", default="configs/fashion_mnist_official.py")
  p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
  p.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE",
                 help="config changes, parsed as the command line's --config.KEY=VALUE, "
                      "e.g. model.conv_init=pytorch")
  p.add_argument("--out", default="", help="JSON of every matrix (default: print only)")
  return p.parse_args(argv)


def check_supported(config) -> None:
  """The PyTorch step implements the official preset only; refuse anything else."""
  wanted = {"method": "pah", "pah.prototype_update": "official", "pah.kl_direction": "new_old",
            "pah.old_task_reduction": "sum", "model.batch_norm": "batch", "data.normalization": "half",
            "pah.prototype_channels": 1, "hypernet.activation": "leaky_relu", "hypernet.use_bias": False,
            "hypernet.head_bias": False, "train.augment": False, "train.eval_accuracy": "batch_mean",
            "pah.lambda_hp": 0.0, "model.dtype": "float32", "model.pretrained": ""}
  for key, value in wanted.items():
    if pt.get_key(config, key) != value:
      raise SystemExit(f"error: the PyTorch reference runs the official preset only: {key} must be {value!r}")
  for key in ("model.teacher_batch_norm", "model.prototype_batch_norm", "model.eval_batch_norm"):
    if pt.get_key(config, key) not in ("", "batch"):
      raise SystemExit(f"error: the PyTorch reference uses batch statistics everywhere: {key}")


def run_seed(config, seed: int) -> dict:
  import torch  # pylint: disable=g-import-not-at-top

  from experiments import torch_reference  # pylint: disable=g-import-not-at-top

  config = config.copy_and_resolve_references()
  config.seed = seed
  tasks = data_lib.load_tasks(config.data, seed)
  k, c = len(tasks.tasks), tasks.num_classes_per_task
  p, o, t = config.pah, config.optim, config.train
  # pah_jax.main's own initial prototypes and training sets (init images removed).
  setup = train_lib.make_setup(config, tasks)
  protos, _ = pah_method.initial_prototypes(setup)
  train = train_lib.training_sets(methods.build(setup), tasks)

  torch.manual_seed(seed)
  model = torch_reference.PAHModel(k, c, width=config.model.width, stem=config.model.stem,
                                   prototype_size=p.prototype_size, hidden=config.hypernet.hidden,
                                   layers=config.hypernet.layers, in_channels=tasks.image_shape[-1],
                                   conv_init=config.model.conv_init)
  with torch.no_grad():
    model.prototypes.copy_(torch.from_numpy(protos.reshape(k, -1)))
  step = torch_reference.OfficialStep(model, lambda_sm=p.lambda_sm, lambda_sp=p.lambda_sp, temperature=p.temperature,
                                      lr_backbone=o.lr_backbone, lr_hypernet=o.lr_hypernet,
                                      lr_prototypes=o.lr_prototypes, weight_decay=o.weight_decay)
  rng = np.random.default_rng([seed, 0x7047])
  acc = np.full((k, k), np.nan)
  for task_id in range(k):
    if task_id:
      step.new_task()
      # The official code re-draws nothing between tasks; pah_jax's begin_task resets P_k to its
      # initial value because unseen rows only received weight decay: do the same.
      with torch.no_grad():
        model.prototypes[task_id].copy_(torch.from_numpy(protos[task_id].reshape(-1)))
    x, y = train[task_id]
    for _ in range(t.epochs):
      order = rng.permutation(len(y))
      for b in range(len(y) // t.batch_size):  # full batches only, as pah_jax
        idx = order[b * t.batch_size:(b + 1) * t.batch_size]
        step(torch.from_numpy(x[idx]), torch.from_numpy(y[idx].astype(np.int64)), task_id)
    for j in range(task_id + 1):
      acc[task_id, j] = evaluate(model, tasks.tasks[j], j, t.batch_size, rng)
    print(f"seed {seed} task {task_id}: {np.round(acc[task_id, :task_id + 1], 2)}", flush=True)
  return {"seed": seed, "accuracy_matrix": acc.tolist(), "average_accuracy": metrics.average_accuracy(acc),
          "forgetting": metrics.forgetting(acc)}


def evaluate(model, task, task_id: int, batch_size: int, rng) -> float:
  """The official protocol: mean of per-batch accuracies (%) over shuffled batches, batch
  statistics (the model stays in train mode)."""
  import torch  # pylint: disable=g-import-not-at-top

  from experiments import torch_reference  # pylint: disable=g-import-not-at-top

  order = rng.permutation(len(task.y_test))
  accs = []
  with torch.no_grad():
    for b in range(0, len(order), batch_size):
      idx = order[b:b + batch_size]
      pred = model.logits(torch_reference.to_input(torch.from_numpy(task.x_test[idx])), task_id).argmax(-1).numpy()
      accs.append(np.mean(pred == task.y_test[idx]))
  return 100.0 * float(np.mean(accs))


def main(argv=None) -> int:
  args = parse_args(argv)
  try:
    config = pt.load_config(args.config)
    pt.apply_overrides(config, args.override)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  check_supported(config)
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(os.cpu_count() or 1)
  runs, start = [], time.time()
  for seed in args.seeds:
    t0 = time.time()
    run = run_seed(config, seed)
    run["seconds"] = time.time() - t0
    runs.append(run)
    print(f"seed {seed}: AA {run['average_accuracy']:.2f} FM {run['forgetting']:.2f} ({run['seconds']:.0f} s)",
          flush=True)
  aa = metrics.mean_std([r["average_accuracy"] for r in runs])
  fm = metrics.mean_std([r["forgetting"] for r in runs])
  summary = {"config": args.config, "override": args.override, "runs": runs, "average_accuracy": aa,
             "forgetting": fm, "seconds": time.time() - start}
  print(f"mean over {len(runs)} seeds: AA {aa[0]:.2f} ± {aa[1]:.2f}, FM {fm[0]:.2f} ± {fm[1]:.2f}")
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
      json.dump(summary, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
