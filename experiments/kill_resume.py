"""Kill a run with SIGKILL at random moments, resume it each time, compare with an uninterrupted run.

  python -m experiments.kill_resume --kills 5 --out experiments/results/kill_resume.json

A small synthetic `.npz` task sequence is trained with a checkpoint after every step. Each
kill waits until the run has made 1-4 new checkpoints, then a random 0-0.5 s more, so kills
land at random points of steps and checkpoint writes (never before any progress). After the
kills the run is completed and its results.json (without `seconds`) must equal the uninterrupted run's, bit for bit.
"""

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_npz(path, num_classes=6, train_per_class=64, test_per_class=10, size=12, seed=0):
  rng = np.random.default_rng(seed)

  def split(per_class):
    y = rng.permutation(np.repeat(np.arange(num_classes), per_class))
    x = rng.integers(0, 80, (len(y), size, size, 1)).astype(np.uint8)
    for i, c in enumerate(y):
      r, col = divmod(int(c) * 3, size - 3)
      x[i, r:r + 3, col:col + 3] = 255
    return x, y.astype(np.int64)

  (x_train, y_train), (x_test, y_test) = split(train_per_class), split(test_per_class)
  np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def command(npz, workdir, num_tasks, epochs):
  return [sys.executable, "-m", "pah_jax.main", "--config=configs/default.py", f"--workdir={workdir}",
          "--config.data.name=npz", f"--config.data.path={npz}", f"--config.data.num_tasks={num_tasks}",
          "--config.model.width=0.125", "--config.pah.prototype_size=4", f"--config.train.epochs={epochs}",
          "--config.train.batch_size=16", "--config.train.eval_batch_size=32",
          "--config.train.log_every_steps=1", "--config.train.checkpoint_every_steps=1"]


def run(cmd, **kwargs):
  env = {**os.environ, "PYTHONPATH": ROOT}
  return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kwargs)


def results_without_time(workdir):
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  results.pop("seconds")
  return results


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--kills", type=int, default=5)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", default="")
  parser.add_argument("--num-tasks", type=int, default=3, help="tasks of 2 classes, 8 steps per epoch")
  parser.add_argument("--epochs", type=int, default=2)
  args = parser.parse_args()
  rnd = random.Random(args.seed)
  tmp = tempfile.mkdtemp(prefix="kill_resume_")
  try:
    npz = os.path.join(tmp, "data.npz")
    make_npz(npz, num_classes=2 * args.num_tasks)
    cmd = lambda workdir: command(npz, workdir, args.num_tasks, args.epochs)
    reference = os.path.join(tmp, "reference")
    t0 = time.time()
    proc = run(cmd(reference))
    _, err = proc.communicate()
    wall = time.time() - t0
    if proc.returncode != 0:
      sys.exit(f"reference run failed:\n{err.decode()[-3000:]}")
    expected = results_without_time(reference)

    workdir = os.path.join(tmp, "killed")
    kills = []
    ckpt_dir = os.path.join(workdir, "checkpoints")
    newest = lambda: max([int(s) for s in os.listdir(ckpt_dir) if s.isdigit()] or [0]) if os.path.isdir(ckpt_dir) else 0
    while len(kills) < args.kills:
      start, target = newest(), newest() + rnd.randint(1, 4)
      proc = run(cmd(workdir))
      while proc.poll() is None and newest() < target:
        time.sleep(0.05)
      if proc.poll() is not None:
        break  # finished before the kill: nothing left to interrupt
      extra = rnd.uniform(0.0, 0.5)
      time.sleep(extra)
      proc.send_signal(signal.SIGKILL)
      proc.wait()
      # Orbax writes into a temporary directory and renames it when complete: one left behind
      # means this kill cut a checkpoint write short.
      partial = [d for d in os.listdir(ckpt_dir) if "tmp" in d] if os.path.isdir(ckpt_dir) else []
      kills.append({"from_step": start, "killed_after_step": target, "extra_seconds": round(extra, 2),
                    "newest_checkpoint_after_kill": newest(), "during_checkpoint_write": bool(partial)})
      print(f"kill {len(kills)}: SIGKILL {extra:.2f} s after checkpoint step {target} "
            f"(run resumed from step {start}){', during a checkpoint write' if partial else ''}", flush=True)
    proc = run(cmd(workdir))
    _, err = proc.communicate()
    if proc.returncode != 0:
      sys.exit(f"resumed run failed:\n{err.decode()[-3000:]}")
    got = results_without_time(workdir)
    same = got == expected
    report = {"kills": kills, "identical_results": same, "reference_seconds": round(wall, 1),
              "average_accuracy": got["average_accuracy"], "accuracy_matrix": got["accuracy_matrix"]}
    print(json.dumps(report, indent=2))
    if args.out:
      os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
      with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    sys.exit(0 if same and len(kills) == args.kills else 1)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
  main()
