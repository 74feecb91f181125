"""Seconds to save and restore a PAH train state: pah_jax's packed checkpoints against Orbax
saving every array of the state on its own (pah_jax's layout before packing).

  python -m experiments.checkpoint_speed --width 0.25 --repeats 4

The state is the benchmark's (experiments/benchmark.py): the official preset at the start of
the last of K tasks, frozen old model included. Prints a table and, with --out, writes JSON.
"""

import argparse
import statistics
import tempfile
import time

from experiments import benchmark


def _orbax_per_array(directory: str):
  """save(state), restore(template) with Orbax's StandardSave of the state pytree as it is."""
  import jax
  import orbax.checkpoint as ocp

  options = ocp.CheckpointManagerOptions(max_to_keep=2, create=True, enable_async_checkpointing=False)
  manager = ocp.CheckpointManager(directory, options=options)

  def save(state):
    manager.save(int(state.step), args=ocp.args.Composite(state=ocp.args.StandardSave(state)), force=True)
    manager.wait_until_finished()

  def restore(template):
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template)
    return manager.restore(manager.latest_step(),
                           args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))["state"]

  return save, restore, manager.close


def _packed(directory: str):
  from pah_jax import checkpointing

  ckpt = checkpointing.Checkpointer(directory, keep=2)
  meta = {"position": {"task": 0, "epoch": 0, "batch": 0}}
  return (lambda state: ckpt.save(state, meta)), ckpt.restore, ckpt.close


def measure(state, make, repeats: int) -> dict:
  import jax

  with tempfile.TemporaryDirectory() as directory:
    save, restore, close = make(directory)
    saves = []
    for _ in range(repeats):
      state = state.replace(step=state.step + 1)  # a new checkpoint each time
      t0 = time.perf_counter()
      save(state)
      saves.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    restored = restore(state)
    jax.block_until_ready(restored[0] if isinstance(restored, tuple) else restored)  # packed: (state, meta)
    restore_seconds = time.perf_counter() - t0
    close()
  return {"save_seconds": saves, "save_median": statistics.median(saves), "restore_seconds": restore_seconds}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--width", type=float, default=0.25)
  p.add_argument("--num-tasks", type=int, default=10)
  p.add_argument("--repeats", type=int, default=4)
  p.add_argument("--out", default="")
  args = p.parse_args(argv)
  import jax

  bench_args = benchmark.parse_args(["--width", str(args.width), "--num-tasks", str(args.num_tasks)])
  _, _, _, state, _ = benchmark._pah_setup(bench_args, benchmark.official_config(bench_args))  # pylint: disable=protected-access
  leaves = jax.tree_util.tree_leaves(state)
  result = {"width": args.width, "num_tasks": args.num_tasks, "arrays": len(leaves),
            "megabytes": sum(x.nbytes for x in leaves) / 1e6, "machine": benchmark.machine_info(),
            "load_average": benchmark.load_average(),
            "orbax_per_array": measure(state, _orbax_per_array, args.repeats),
            "packed": measure(state, _packed, args.repeats)}
  print(f"PAH state, width {args.width}, K = {args.num_tasks}: {result['arrays']} arrays, {result['megabytes']:.1f} MB")
  print("| layout | save s (median) | saves | restore s |\n|---|---:|---|---:|")
  for name in ("orbax_per_array", "packed"):
    r = result[name]
    print(f"| {name} | {r['save_median']:.3f} | {', '.join(f'{t:.3f}' for t in r['save_seconds'])} | "
          f"{r['restore_seconds']:.3f} |")
  if args.out:
    benchmark.write_json(args.out, result)
  return result


if __name__ == "__main__":
  main()
