"""Speed of pah_jax's PAH step against its own fine-tune step and a PyTorch reference of the official step.

  python -m experiments.benchmark --width 0.25 --batch-size 64 --steps 10 --out bench.json

In one process on one machine, images per second of:
  finetune       pah_jax's own `finetune` method (config.method = "finetune": shared backbone,
                 stored linear heads, cross-entropy, AdamW with the heads at optim.lr_heads)
                 through pah_jax.train.make_train_step at the last task, `jax.jit(step,
                 donate_argnums=0)` on a fixed device-resident batch: what one backbone
                 forward+backward costs in training.
  pah_step       the same for the PAH method (official preset) at the last task (K-1 old tasks).
  finetune_chunk / pah_chunk
                 the same steps driven by pah_jax.train.make_train_chunk, the real training
                 path (device-resident task data, per-epoch permutation, metric sums).
  torch_official experiments/torch_reference.py: the official step in PyTorch eager
                 (1 + 2(K-1) backbone passes per batch, second AdamW on the prototypes).
  torch_finetune the fine-tune step in PyTorch, for the official step's relative cost.
Every row is compiled and warmed up first, then all rows are timed round-robin, `--repeats`
times `--steps` steps each, so load from other jobs on a shared machine hits them alike; the
median repeat is reported. JAX compile time is reported apart (first call minus the
steady-state step time). PyTorch is timed with each of `--torch-threads` and compared at its
fastest. --breakdown times the phases of the library's PAH step (`Method.phases`) apart, with
XLA's FLOP counts. JAX rows run on pah_jax's data mesh over all devices (the batch split,
state replicated), as training does. `--config KEY=VALUE` overrides are parsed as the command
line's `--config.KEY=VALUE` (pah_jax/overrides.py).

With --sequence it also times a whole K-task PAH sequence (pah_jax.train.train_and_evaluate,
official preset) on synthetic CIFAR-shaped data (or real CIFAR-100 with --cifar-data-dir).
docs/performance.md has the figures, the machines and the commands.
"""

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time

import numpy as np

from experiments import device_profile
from pah_jax import overrides
from pah_jax.errors import UserError

# Dense bf16 tensor-core peaks (FLOP/s, vendor data sheets) of the GPUs this benchmark is meant
# for, matched in order against jax's device_kind, to turn measured FLOP/s into a utilisation;
# --peak-tflops overrides (e.g. an fp32 run: H100 SXM has 67 TFLOP/s without tensor cores).
PEAK_BF16_FLOPS = (("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12))


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--width", type=float, default=1.0, help="ResNet-18 width factor (1.0: 64-512 channels)")
  p.add_argument("--stem", choices=("imagenet", "cifar"), default="imagenet",
                 help="backbone stem (official code: imagenet)")
  p.add_argument("--batch-size", type=int, default=64)
  p.add_argument("--num-tasks", type=int, default=10, help="K; the PAH step runs at task K-1")
  p.add_argument("--classes-per-task", type=int, default=10)
  p.add_argument("--image-size", type=int, default=32)
  p.add_argument("--steps", type=int, default=20, help="timed steps per repeat")
  p.add_argument("--warmup", type=int, default=2, help="untimed steps before timing (the first compiles)")
  p.add_argument("--repeats", type=int, default=3, help="timed repeats; the median is reported")
  p.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                 help="override of the official preset, parsed as the command line's --config.KEY=VALUE, "
                      "e.g. model.dtype=bfloat16 (repeatable)")
  p.add_argument("--chunk-loop", choices=("auto", "compiled", "python"), default="auto",
                 help="train.loop for the make_train_chunk row (auto: compiled on GPU/TPU, python on CPU)")
  p.add_argument("--traced-chunk", action="store_true",
                 help="compiled chunk rows with a traced number of steps (an unknown loop trip count), "
                      "as pah_jax ran them before: for comparison")
  p.add_argument("--skip-chunk", action="store_true", help="leave out the make_train_chunk row")
  p.add_argument("--skip-torch", action="store_true", help="leave out the PyTorch rows")
  p.add_argument("--flops-only", action="store_true",
                 help="count the finetune and pah_step rows' FLOPs (XLA, lowered for CPU) and run nothing: "
                      "where a backend cannot count them (GPU), run this on a CPU with the same flags")
  p.add_argument("--torch-threads", default="",
                 help="comma-separated thread counts to time PyTorch with (default: the CPU count and 1); "
                      "the fastest is compared against")
  p.add_argument("--torch-steps", type=int, default=0,
                 help="timed steps per repeat of the PyTorch rows (default: --steps); the official step "
                      "at K-1 old tasks is slow")
  p.add_argument("--breakdown", action="store_true",
                 help="also time the phases of the library's PAH step apart (its Method.phases, the teacher "
                      "and prototype forwards, the whole step) with their XLA FLOP counts")
  p.add_argument("--profile", action="store_true",
                 help="after timing, trace one repeat of every JAX row with jax.profiler: kernels per step, "
                      "device busy time and launch gaps, costliest kernels (experiments/device_profile.py)")
  p.add_argument("--peak-tflops", type=float, default=0.0,
                 help="one device's peak for FLOP utilisation (default: a known GPU's bf16 peak, bf16 runs only)")
  p.add_argument("--sequence", action="store_true", help="also time a whole K-task PAH sequence")
  p.add_argument("--sequence-only", action="store_true",
                 help="time only the sequence (a process of its own: a device's peak memory cannot be reset)")
  p.add_argument("--epochs", type=int, default=15, help="--sequence: epochs per task")
  p.add_argument("--sequence-batch-size", type=int, default=64, help="--sequence: batch size")
  p.add_argument("--train-per-task", type=int, default=4491,
                 help="--sequence: synthetic training images per task that are trained on (the official "
                      "preset's C prototype-init images are generated on top)")
  p.add_argument("--test-per-task", type=int, default=1000, help="--sequence: synthetic test images per task")
  p.add_argument("--cifar-data-dir", default="",
                 help="--sequence: TFDS data_dir holding cifar100; real Split-CIFAR100 instead of synthetic")
  p.add_argument("--sequence-workdir", default="", help="--sequence: keep the run here (default: a temp dir)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", default="", help="write all results as JSON here")
  args = p.parse_args(argv)
  for name in ("steps", "warmup", "repeats", "batch_size", "num_tasks", "classes_per_task"):
    if getattr(args, name) < 1:
      p.error(f"--{name.replace('_', '-')} must be >= 1")
  return args


# --------------------------------------------------------------------------- config


def official_config(args):
  """configs/default.py + configs/official.py, with the benchmark's shape and --config overrides
  (a wrong key or value raises UserError)."""
  from configs import default
  from configs import official

  config = official.apply(default.get_config())
  config.seed = args.seed
  # The step rows use synthetic batches; npz is the data set whose class count follows the file
  # (--sequence writes or names the real data).
  config.data.name = "npz"
  config.model.width = args.width
  config.model.stem = args.stem
  config.data.num_tasks = args.num_tasks
  config.train.batch_size = args.batch_size
  # Compile times are part of what is measured: no programs from earlier runs (--config
  # train.compilation_cache=DIR times a warm rerun of --sequence-only).
  config.train.compilation_cache = ""
  overrides.apply(config, args.config, option="--config")
  from pah_jax.prototypes import OFFICIAL_CROP_ORIGIN  # pylint: disable=g-import-not-at-top

  if args.image_size < OFFICIAL_CROP_ORIGIN + config.pah.prototype_size:
    # Toy images too small for the official crop's fixed offset: cut the prototypes at the
    # centre instead (which pixels start a prototype does not change what a step costs).
    config.pah.crop_position = "center"
  return config


# --------------------------------------------------------------------------- measuring


def load_average():
  try:
    return [round(x, 2) for x in os.getloadavg()]
  except OSError:
    return None


def reset_peak_rss() -> bool:
  """Resets the kernel's peak-RSS mark (Linux), so each row reports its own peak."""
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    return True
  except OSError:
    return False


def peak_rss_bytes() -> int:
  """Peak resident set since the last reset (Linux VmHWM), else the process's max RSS."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return rss if sys.platform == "darwin" else rss * 1024  # bytes on macOS, KiB on Linux


def current_rss_bytes():
  """Resident set now (Linux), else None."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("VmRSS:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return None


def jax_bytes_in_use():
  """Device bytes in use now where the allocator reports it (GPU/TPU), else None."""
  import jax

  return (jax.devices()[0].memory_stats() or {}).get("bytes_in_use")


def jax_peak_memory():
  """(bytes, source): the device allocator's peak where it reports one (GPU/TPU), else RSS.

  The device peak is the process's high-water mark so far (it cannot be reset), so rows are
  measured smallest first and each row's figure bounds its own peak from above.
  """
  import jax

  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return int(stats["peak_bytes_in_use"]), "jax device memory_stats()['peak_bytes_in_use']"
  return peak_rss_bytes(), "process peak RSS during the row's setup, compile and warm-up (VmHWM reset before it)"


class Timed:
  """A row being measured: `run()` advances `steps` training steps (asynchronously is fine),
  `sync()` waits for them. `warm_up()` makes the first call `first` (one step, compile
  included) and the warm-up `warm`; `time_once()` adds one timed repeat of `run`. Rows are timed
  round-robin (`time_rows`), so a load change on a shared machine hits every row alike instead
  of skewing their ratios."""

  def __init__(self, run, sync, steps: int, first, warm, first_steps: int = 1):
    self.run, self.sync, self.steps, self.first, self.warm = run, sync, steps, first, warm
    self.first_steps = first_steps  # training steps the first call runs besides compiling
    self.first_call_seconds = None
    self.per_step = []

  def warm_up(self):
    t0 = time.perf_counter()
    self.first()
    self.sync()
    self.first_call_seconds = time.perf_counter() - t0
    self.warm()
    self.sync()

  def time_once(self):
    t0 = time.perf_counter()
    self.run()
    self.sync()
    self.per_step.append((time.perf_counter() - t0) / self.steps)

  def timing(self) -> dict:
    return {"first_call_seconds": self.first_call_seconds, "first_call_steps": self.first_steps,
            "seconds_per_step_repeats": self.per_step}


def step_runner(step_once, sync, steps: int, warmup: int) -> Timed:
  """A Timed over single calls: the first compiles, `warmup - 1` more warm up, runs of `steps`."""

  def repeat(n):
    for _ in range(n):
      step_once()

  return Timed(lambda: repeat(steps), sync, steps, first=step_once, warm=lambda: repeat(warmup - 1))


def time_rows(timers: dict, repeats: int) -> dict:
  """Round-robin: repeat r of every row before repeat r + 1 of any."""
  for _ in range(repeats):
    for timer in timers.values():
      timer.time_once()
  return {name: timer.timing() for name, timer in timers.items()}


def time_loop(run, sync, steps: int, warmup: int, repeats: int) -> dict:
  """One row on its own (PyTorch rows, breakdown parts)."""
  timer = step_runner(run, sync, steps, warmup)
  timer.warm_up()
  for _ in range(repeats):
    timer.time_once()
  return timer.timing()


def summarize(timing: dict, batch_size: int, jax_row: bool) -> dict:
  median = statistics.median(timing["seconds_per_step_repeats"])
  row = {"seconds_per_step": median, "images_per_second": batch_size / median,
         "seconds_per_step_min": min(timing["seconds_per_step_repeats"]),
         "seconds_per_step_max": max(timing["seconds_per_step_repeats"]), **timing}
  if jax_row:
    # What the first call costs beyond a steady-state step: tracing, lowering and compiling.
    row["compile_seconds"] = max(timing["first_call_seconds"] - timing["first_call_steps"] * median, 0.0)
  return row


def flops_of(jitted, *args):
  """XLA's FLOP count of one call, from the HLO lowered for CPU (no compile).

  Lowered for CPU on every backend: GPU backends count FLOPs only after compiling, and then
  leave out the convolutions (cuDNN custom calls), which would make a utilisation meaningless.
  The count is the program's, not the device's, so it serves any device's timing.
  """
  try:
    traced = jitted.trace(*args)
  except Exception:  # pylint: disable=broad-except
    return None  # cost analysis is optional information
  for lower in (lambda: traced.lower(lowering_platforms=("cpu",)), traced.lower):
    try:
      cost = lower().cost_analysis()
    except Exception:  # pylint: disable=broad-except
      continue
    if isinstance(cost, (list, tuple)):
      cost = cost[0] if cost else None
    if cost and cost.get("flops", 0) > 0:
      return float(cost["flops"])
  return None


def data_mesh(batch_size: int):
  """pah_jax's 1-D `data` mesh over every device: batches split, state and data replicated.

  On one device this is plain single-device placement; with several (GPUs, or CPU devices
  from --xla_force_host_platform_device_count) every row runs the library's multi-device path.
  """
  from pah_jax import sharding

  mesh = sharding.data_mesh()
  if batch_size % mesh.size:
    raise SystemExit(f"error: --batch-size {batch_size} must be divisible by the {mesh.size} devices")
  return mesh


def synthetic_batch(rng, n, image_size, num_classes):
  images = rng.integers(0, 256, (n, image_size, image_size, 3), dtype=np.uint8)
  labels = (np.arange(n) % num_classes).astype(np.int32)
  return images, labels


# --------------------------------------------------------------------------- (a), (b) the library's steps

MEAN = STD = (0.5, 0.5, 0.5)  # the official preset's data.normalization = half


def _setup(args, config):
  """The base.Setup a run of `config` on the benchmark's synthetic tasks would build."""
  from pah_jax import networks
  from pah_jax.methods import base

  k, c, s = args.num_tasks, args.classes_per_task, args.image_size
  return base.Setup(config=config, nets=networks.build_networks(config, k, c), num_tasks=k, num_classes=c,
                    image_shape=(s, s, 3), mean=MEAN, std=STD)


def _state_at_last_task(args, method, config, mesh):
  """train.create_state, then the end of task K-2 and the start of task K-1 as the loop runs
  them (PAH: a frozen teacher, the task's prototypes, the teacher's prototype logits)."""
  import jax

  from pah_jax import sharding
  from pah_jax import train

  state = train.create_state(method, config)
  if method.end_task is not None:  # PAH's freezes the current model as the teacher, from the state alone
    state = method.end_task(state, None, None, 0, args.num_tasks - 2)
    # The step donates its state: the current model gets buffers of its own, apart from the teacher's.
    copy = lambda tree: jax.tree_util.tree_map(lambda x: x.copy(), tree)
    state = state.replace(params=copy(state.params), batch_stats=copy(state.batch_stats))
  if method.begin_task is not None:
    state = jax.jit(method.begin_task)(state, args.num_tasks - 1)
  return sharding.replicate(state, mesh)


def _finetune_setup(args, config):
  """pah_jax's own `finetune` method, built by `methods.build` as a run with config.method =
  "finetune" builds it (heads at optim.lr_heads), its loop step (`train.make_train_step`) and a
  train state at the start of task K-1."""
  from pah_jax import methods
  from pah_jax import train

  config = config.copy_and_resolve_references()
  config.method = "finetune"
  mesh = data_mesh(args.batch_size)
  method = methods.build(_setup(args, config))
  step = train.make_train_step(method, augment=False, mean=MEAN, std=STD, mesh=mesh)
  return method, step, _state_at_last_task(args, method, config, mesh), mesh


def _pah_setup(args, config):
  """The PAH method (pah_jax.methods.pah, official preset), its networks, its loop step and a
  train state at the start of task K-1 (K-1 old tasks)."""
  from pah_jax import prototypes as prototypes_lib
  from pah_jax import train
  from pah_jax.methods import pah as pah_method

  k, c, s = args.num_tasks, args.classes_per_task, args.image_size
  mesh = data_mesh(args.batch_size)
  rng = np.random.default_rng(args.seed)
  # Prototypes initialised as the preset does, from one synthetic image per class.
  task_images = [synthetic_batch(rng, c, s, c) for _ in range(k)]
  init_protos, _ = prototypes_lib.initial_prototypes(
      [x for x, _ in task_images], [y for _, y in task_images],
      prototypes_lib.InitSettings.from_config(config.pah, 3), num_classes=c, mean=MEAN, std=STD, seed=config.seed)
  setup = _setup(args, config)
  method = pah_method.build(setup, init_protos)
  step = train.make_train_step(method, augment=False, mean=MEAN, std=STD, mesh=mesh)
  state = _state_at_last_task(args, method, config, mesh)
  return method, pah_method.hypernet_networks(setup), step, state, mesh


def _step_row(args, step, state, mesh):
  """jax.jit(step, donate_argnums=0) on a fixed device-resident batch of task K-1: (Timed, facts)."""
  import jax
  import jax.numpy as jnp

  from pah_jax import sharding

  rng = np.random.default_rng(args.seed + 1)
  images, labels = sharding.replicate(synthetic_batch(rng, args.batch_size, args.image_size,
                                                     args.classes_per_task), mesh)
  task_id = jnp.asarray(args.num_tasks - 1, jnp.int32)
  jstep = jax.jit(step, donate_argnums=0)
  facts = {"task_id": args.num_tasks - 1, "flops_per_step": flops_of(jstep, state, images, labels, task_id)}
  if args.flops_only:
    return None, facts
  holder = {"state": state}
  del state

  def run():
    holder["state"], _ = jstep(holder["state"], images, labels, task_id)

  timer = step_runner(run, lambda: jax.block_until_ready(holder["state"]), args.steps, args.warmup)
  timer.warm_up()
  return timer, facts


def prepare_finetune(args, config):
  """The `finetune` method's loop step, jitted with its state donated, on a fixed batch."""
  _, step, state, mesh = _finetune_setup(args, config)
  return _step_row(args, step, state, mesh)


def prepare_pah_step(args, config):
  """The PAH method's loop step, jitted with its state donated, on a fixed batch."""
  _, _, step, state, mesh = _pah_setup(args, config)
  return _step_row(args, step, state, mesh)


def prepare_pah_chunk(args, config):
  """make_train_chunk over a device-resident task of `steps` batches: one call per repeat."""
  method, _, step, state, mesh = _pah_setup(args, config)
  return _chunk_row(args, method, step, state, mesh)


def prepare_finetune_chunk(args, config):
  """The `finetune` method through the same make_train_chunk path: pah_chunk's twin, the same
  loop, data placement and mesh, so their ratio is the cost of PAH's extra work alone (on a GPU
  the compiled loop also removes the per-step dispatch that the jitted-step rows pay)."""
  method, step, state, mesh = _finetune_setup(args, config)
  return _chunk_row(args, method, step, state, mesh)


def _chunk_row(args, method, step, state, mesh):
  import jax

  from pah_jax import sharding
  from pah_jax import train

  compiled = train.use_compiled_loops(args.chunk_loop)
  chunk = train.make_train_chunk(step, args.batch_size, compiled, method.metric_names,
                                 static_length=not args.traced_chunk)
  n = args.steps * args.batch_size
  rng = np.random.default_rng(args.seed + 2)
  x, y = synthetic_batch(rng, n, args.image_size, args.classes_per_task)
  images, labels = sharding.replicate((x, y), mesh)  # as train._train_task places a task
  task_id = args.num_tasks - 1
  holder = {"state": state, "epoch": 0}
  del state

  def call():
    # One epoch of `steps` batches; each call the next epoch, with a fresh permutation.
    holder["state"], holder["metrics"] = chunk(holder["state"], images, labels, n, task_id,
                                               holder["epoch"] * args.steps, args.steps)
    holder["epoch"] += 1

  # The first call compiles the loop (with a static length, for exactly this length) and runs
  # a whole chunk, whose steps summarize() subtracts from it.
  timer = Timed(call, lambda: jax.block_until_ready(holder["state"]), args.steps, first=call, warm=call,
                first_steps=args.steps)
  timer.warm_up()
  facts = {"loop": "compiled" if compiled else "python", "task_id": task_id,
           "static_length": compiled and not args.traced_chunk}
  facts["last_metrics"] = lambda: {k: float(v) for k, v in jax.device_get(holder["metrics"]).items()}
  return timer, facts


# --------------------------------------------------------------------------- (c) PyTorch


def usable_cpus() -> int:
  """CPUs this process may run on (taskset/cgroup affinity), else the machine's count."""
  try:
    return len(os.sched_getaffinity(0))
  except (AttributeError, OSError):
    return os.cpu_count() or 1


def torch_thread_counts(args) -> list[int]:
  """Thread counts to time PyTorch with: the machine's cores, and 1.

  On a machine shared with other jobs, OpenMP's barriers make PyTorch with one thread per core
  many times slower (a descheduled thread stalls every operator), while one thread is immune;
  timing both and comparing against the faster keeps the reference at its best.
  """
  counts = [int(t) for t in args.torch_threads.split(",") if t.strip()] if args.torch_threads else [usable_cpus(), 1]
  return list(dict.fromkeys(counts))


def prepare_torch(args, config) -> dict:
  """The official step and a fine-tune step in PyTorch, once per thread count, warmed up.

  Returns {name: (Timed, facts)} with names torch_official_<n>t and torch_finetune_<n>t; they
  join the JAX rows in the round-robin timing.
  """
  import torch

  from experiments import torch_reference

  device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
  autocast = torch.bfloat16 if config.model.dtype == "bfloat16" else None
  k, c, s = args.num_tasks, args.classes_per_task, args.image_size
  o, p = config.optim, config.pah
  rng = np.random.default_rng(args.seed + 3)
  x, y = synthetic_batch(rng, args.batch_size, s, c)
  images = torch.from_numpy(x).to(device)
  labels = torch.from_numpy(y).long().to(device)

  def sync():
    if device.type == "cuda":
      torch.cuda.synchronize()

  def official_step():
    torch.manual_seed(args.seed)
    model = torch_reference.PAHModel(k, c, width=config.model.width, stem=config.model.stem,
                                     prototype_size=p.prototype_size, hidden=config.hypernet.hidden,
                                     layers=config.hypernet.layers).to(device)
    step = torch_reference.OfficialStep(model, lambda_sm=p.lambda_sm, lambda_sp=p.lambda_sp,
                                        temperature=p.temperature, lr_backbone=o.lr_backbone,
                                        lr_hypernet=o.lr_hypernet, lr_prototypes=o.lr_prototypes,
                                        weight_decay=o.weight_decay, autocast_dtype=autocast)
    return lambda: step(images, labels, k - 1)

  def finetune_step():
    torch.manual_seed(args.seed)
    step = torch_reference.FinetuneStep(config.model.width, config.model.stem, c, lr_backbone=o.lr_backbone,
                                        lr_head=o.lr_heads, weight_decay=o.weight_decay,
                                        autocast_dtype=autocast).to(device)
    return lambda: step(images, labels)

  out = {}
  # Thread counts only matter for the CPU; a GPU row is timed once.
  for threads in torch_thread_counts(args) if device.type == "cpu" else [torch.get_num_threads()]:
    for kind, build in (("official", official_step), ("finetune", finetune_step)):
      gc.collect()
      before = current_rss_bytes()
      reset_peak_rss()
      if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
      torch.set_num_threads(threads)
      step_once = build()

      def run_one(step_once=step_once, threads=threads):
        torch.set_num_threads(threads)  # rows with other thread counts run in between
        step_once()

      t0 = time.perf_counter()
      timer = step_runner(run_one, sync, args.torch_steps or args.steps, args.warmup)
      timer.warm_up()
      facts = {"device": str(device), "threads": threads, "autocast": str(autocast) if autocast else None}
      if device.type == "cuda":
        facts["peak_memory_bytes"], facts["peak_memory_source"] = (int(torch.cuda.max_memory_allocated()),
                                                                   "torch.cuda.max_memory_allocated()")
      else:
        facts["peak_memory_bytes"], facts["peak_memory_source"] = (
            peak_rss_bytes(), "process peak RSS during the row's setup and warm-up (VmHWM reset before it)")
        facts["rss_before_row_bytes"] = before
      if kind == "official":
        facts["task_id"] = k - 1
        facts["backbone_passes_per_step"] = {"image_batches": 1 + 2 * (k - 1), "prototype_batches": 2 * (k - 1)}
      out[f"torch_{kind}_{threads}t"] = (timer, facts)
      print(f"  torch_{kind}_{threads}t: warmed up in {time.perf_counter() - t0:.0f} s", flush=True)
  return out


# --------------------------------------------------------------------------- breakdown


def breakdown_rows(args, config) -> dict:
  """The library's PAH step taken apart, each part its own jit on the same state and batch (the
  parts overlap, so their sum exceeds the fused step):

    teacher_forward         the frozen old model on the images (`networks.image_logits`, as
                            phase 1 calls it): all old heads from one pass
    prototype_forward       the student on every task's prototypes (`networks.prototype_logits`)
    <each of Method.phases> the pieces of the PAH step as `pah_jax.methods.pah` builds them:
                            main_loss_and_grad (phase 1: teacher, student, L_hm + lambda_sm L_sm
                            and its gradient), main_update (phase 1 and the main AdamW update),
                            prototype_loss_and_grad (phase 2 at the state's parameters)
    full_step_no_donation   the loop's step (`train.make_train_step`), state not donated

  Every part gets the batch as the loop's step hands it to the method (split over the mesh,
  normalised on the device). Of a phase's outputs a part keeps what the step uses, so XLA
  prunes the rest as it does in the fused step: phase 2 feeds only the prototypes' optimiser,
  so only its loss and the prototypes' gradient are kept.
  """
  import jax
  import jax.numpy as jnp

  from pah_jax import images as images_lib
  from pah_jax import networks
  from pah_jax import sharding
  from pah_jax.methods import base

  method, nets, step, state, mesh = _pah_setup(args, config)
  rng = np.random.default_rng(args.seed + 1)
  x, y = sharding.replicate(synthetic_batch(rng, args.batch_size, args.image_size, args.classes_per_task), mesh)
  task_id = jnp.asarray(args.num_tasks - 1, jnp.int32)

  def on_batch(fn):  # the batch as make_train_step hands it to the method (no augmentation)
    def part(st, x, y):
      x, y = sharding.split_batch(x, mesh), sharding.split_batch(y, mesh)
      return fn(st, base.Batch(images_lib.normalize(x, MEAN, STD), x, y, task_id))
    return part

  used = {"prototype_loss_and_grad": lambda out: (out[0], out[1]["prototypes"])}
  parts = {
      "teacher_forward": on_batch(lambda st, b: networks.image_logits(
          nets, st.extra["old_params"], st.extra["old_batch_stats"], b.images,
          batch_statistics=nets.teacher_batch_stats)[0]),
      "prototype_forward": on_batch(lambda st, b: networks.prototype_logits(
          nets, st.params, st.batch_stats, batch_statistics=nets.prototype_batch_stats)),
  }
  for name, phase in method.phases.items():
    keep = used.get(name, lambda out: out)
    parts[name] = on_batch(lambda st, b, phase=phase, keep=keep: keep(phase(st, b)))
  parts["full_step_no_donation"] = lambda st, x, y: step(st, x, y, task_id)

  out = {}
  for name, fn in parts.items():
    jitted = jax.jit(fn)
    holder = {}

    def run(jitted=jitted, holder=holder):
      holder["out"] = jitted(state, x, y)

    timing = time_loop(run, lambda holder=holder: jax.block_until_ready(holder["out"]), args.steps, 1, args.repeats)
    row = summarize(timing, args.batch_size, jax_row=True)
    out[name] = {"seconds": row["seconds_per_step"], "compile_seconds": row["compile_seconds"],
                 "flops": flops_of(jitted, state, x, y)}
    print(f"  breakdown {name}: {1e3 * row['seconds_per_step']:.1f} ms", flush=True)
  return out


# --------------------------------------------------------------------------- (d) sequence


def write_synthetic_npz(path, args):
  """K*C classes; task t = classes [tC, (t+1)C) as the sequential class order cuts them."""
  rng = np.random.default_rng(args.seed + 4)
  k, c, s = args.num_tasks, args.classes_per_task, args.image_size
  # The official preset removes one prototype-init image per class from training: add them.
  per_task_train = args.train_per_task + c
  xs, ys, xt, yt = [], [], [], []
  for t in range(k):
    xs.append(rng.integers(0, 256, (per_task_train, s, s, 3), dtype=np.uint8))
    ys.append(t * c + np.arange(per_task_train) % c)
    xt.append(rng.integers(0, 256, (args.test_per_task, s, s, 3), dtype=np.uint8))
    yt.append(t * c + np.arange(args.test_per_task) % c)
  np.savez(path, x_train=np.concatenate(xs), y_train=np.concatenate(ys).astype(np.int64),
           x_test=np.concatenate(xt), y_test=np.concatenate(yt).astype(np.int64))


def _task_end_seconds(workdir):
  """{task index: run seconds at its end} from the task-end checkpoints' JSON metadata."""
  found = {}
  base = os.path.join(workdir, "checkpoints")
  for root, _, files in os.walk(base):
    for name in files:
      try:
        with open(os.path.join(root, name)) as f:
          meta = json.load(f)
      except (OSError, ValueError, UnicodeDecodeError):
        continue
      if isinstance(meta, dict) and "seconds" in meta and "position" in meta:
        pos = meta["position"]
        if pos.get("epoch") == 0 and pos.get("batch") == 0 and pos.get("task", 0) > 0:
          found[pos["task"] - 1] = float(meta["seconds"])
  return found


def sequence_row(args, config) -> dict:
  from pah_jax import train

  tmp = tempfile.mkdtemp(prefix="pah_benchmark_")
  workdir = args.sequence_workdir or os.path.join(tmp, "run")
  config = config.copy_and_resolve_references()
  config.train.epochs = args.epochs
  config.train.batch_size = args.sequence_batch_size
  config.train.keep_checkpoints = args.num_tasks + 1  # keep every task end: per-task times
  if args.cifar_data_dir:
    config.data.name, config.data.path, data = "cifar100", args.cifar_data_dir, "cifar100"
  else:
    npz = os.path.join(tmp, "synthetic.npz")
    write_synthetic_npz(npz, args)
    config.data.name, config.data.path, data = "npz", npz, "synthetic"
  train.use_compilation_cache(config.train.compilation_cache)  # "" unless --config sets one
  t0 = time.perf_counter()
  results = train.train_and_evaluate(config, workdir)
  wall = time.perf_counter() - t0
  ends = _task_end_seconds(workdir)
  per_task = [ends[t] - ends.get(t - 1, 0.0) for t in range(args.num_tasks) if t in ends]
  row = {"data": data, "total_seconds": float(results["seconds"]), "wall_seconds_in_process": wall,
         "first_task_seconds": per_task[0] if per_task else None,
         "per_task_seconds": per_task, "epochs": args.epochs, "batch_size": args.sequence_batch_size,
         "train_images_per_task": args.train_per_task, "test_images_per_task": args.test_per_task,
         "steps_per_task": args.epochs * (args.train_per_task // args.sequence_batch_size),
         "average_accuracy": results.get("average_accuracy"), "workdir": workdir if args.sequence_workdir else None}
  if len(per_task) > 1:
    row["later_tasks_mean_seconds"] = statistics.mean(per_task[1:])
  row["peak_memory_bytes"], source = jax_peak_memory()
  row["peak_memory_source"] = source if source.startswith("jax") else "process peak RSS during the whole sequence"
  return row


# --------------------------------------------------------------------------- report


def cpu_model() -> str:
  """The CPU's model name (/proc/cpuinfo), else what platform knows."""
  try:
    with open("/proc/cpuinfo") as f:
      names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    if names:
      return names[0]
  except OSError:
    pass
  return platform.processor() or platform.machine()


def machine_info() -> dict:
  import jax

  info = {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
          "usable_cpus": usable_cpus(),
          "processor": platform.processor() or platform.machine(), "jax": jax.__version__,
          "jax_backend": jax.default_backend(), "jax_devices": [d.device_kind for d in jax.devices()],
          "jax_device_count": jax.device_count(), "cpu_model": cpu_model()}
  try:
    import torch

    info["torch"] = torch.__version__
  except ImportError:
    info["torch"] = None
  return info


def _peak_flops(args, device_kind: str, dtype: str):
  """The peak to divide by: --peak-tflops, else a known GPU's bf16 peak for a bf16 run."""
  if args.peak_tflops:
    return args.peak_tflops * 1e12
  if dtype != "bfloat16":
    return None  # a float32 run against a bf16 tensor-core peak would say little
  for name, peak in PEAK_BF16_FLOPS:
    if name in device_kind:
      return peak
  return None


# Each PAH row and the fine-tune row on the same path it is compared with.
BASELINE_OF = {"pah_step": "finetune", "pah_chunk": "finetune_chunk"}
JAX_ROWS = ("finetune", "pah_step", "finetune_chunk", "pah_chunk")


def ratios(rows: dict) -> dict:
  """Step-time, throughput and FLOP ratios of whichever rows were measured (--flops-only rows
  carry FLOPs but no timings)."""
  out = {}
  ft = rows.get("finetune")
  timed = {name: row for name, row in rows.items() if "seconds_per_step" in row}
  for name, base in BASELINE_OF.items():
    if base in timed and name in timed:
      out[f"{name}_over_{base}_step_time"] = timed[name]["seconds_per_step"] / timed[base]["seconds_per_step"]
    if "torch_official" in timed and name in timed:
      out[f"{name}_over_torch_official_throughput"] = (timed[name]["images_per_second"]
                                                       / timed["torch_official"]["images_per_second"])
  if ft and ft.get("flops_per_step") and rows.get("pah_step", {}).get("flops_per_step"):
    # The floor the step-time ratio could reach if every pass ran as efficiently as the main one.
    out["pah_step_over_finetune_flops"] = rows["pah_step"]["flops_per_step"] / ft["flops_per_step"]
  if "torch_official" in rows and "torch_finetune" in rows:
    out["torch_official_over_torch_finetune_step_time"] = (rows["torch_official"]["seconds_per_step"]
                                                           / rows["torch_finetune"]["seconds_per_step"])
  return out


def targets(r: dict) -> dict:
  """The issue's two step-level targets, for each JAX path measured."""
  out = {}
  for name, base in BASELINE_OF.items():
    key = f"{name}_over_{base}_step_time"
    if key in r:
      out[f"{name}: step <= 1.5x {base}"] = r[key] <= 1.5
    key = f"{name}_over_torch_official_throughput"
    if key in r:
      out[f"{name}: throughput >= 5x torch official"] = r[key] >= 5.0
  return out


def _table_line(label, row, note):
  compile_s = f"{row['compile_seconds']:.1f}" if "compile_seconds" in row else "-"
  mem = f"{row['peak_memory_bytes'] / 2**20:.0f}" if row.get("peak_memory_bytes") else "-"
  return (f"{label:<22}{row['images_per_second']:>10.1f}{1e3 * row['seconds_per_step']:>10.1f}"
          f"{compile_s:>10}{mem:>9}  {note}")


def format_table(results: dict) -> str:
  rows, settings = results["rows"], results["settings"]
  lines = []
  rows = {name: row for name, row in rows.items() if "images_per_second" in row}  # not --flops-only's
  if rows:
    lines += [f"{'row':<22}{'images/s':>10}{'ms/step':>10}{'compile s':>10}{'peak MiB':>9}  notes", "-" * 86]
  notes = {"finetune": f"JAX jit(make_train_step), finetune method, task {settings['num_tasks'] - 1}",
           "pah_step": f"JAX jit(make_train_step), task {settings['num_tasks'] - 1}",
           "finetune_chunk": "JAX make_train_chunk, finetune method, {loop} loop",
           "pah_chunk": "JAX make_train_chunk, {loop} loop"}
  for name in JAX_ROWS:
    if name in rows:
      lines.append(_table_line(name, rows[name], notes[name].format(loop=rows[name].get("loop", ""))))
  for threads, pair in results.get("torch_by_threads", {}).items():
    used = rows.get("torch_official", {}).get("threads") == int(threads)
    for name, note in (("torch_official", "PyTorch eager, official step"),
                       ("torch_finetune", "PyTorch eager, fine-tune")):
      label = f"{name} {threads}t" + ("*" if used else "")
      lines.append(_table_line(label, pair[name], note))
  if results.get("torch_by_threads"):
    lines.append("(* the PyTorch thread count compared against: the faster official step)")
  if rows:
    lines.append("")
  for key, value in results["ratios"].items():
    lines.append(f"{key:<52}{value:9.2f}")
  for key, ok in results["targets"].items():
    lines.append(f"target {key:<45}{'met' if ok else 'NOT met':>9}")
  m = results.get("flop_rates")
  if m:
    line = f"XLA FLOP/s: finetune {m['finetune_flops_per_second']:.3g}, pah_step {m['pah_step_flops_per_second']:.3g}"
    if m.get("peak_flops"):
      line += (f"; utilisation of {m['peak_flops']:.3g}: finetune {100 * m['finetune_utilisation']:.1f}%, "
               f"pah_step {100 * m['pah_step_utilisation']:.1f}%")
    lines.append(line)
  if "breakdown" in results:
    lines.append("")
    lines.append(f"{'PAH step part (own jit)':<28}{'ms':>9}{'GFLOP':>9}{'GFLOP/s':>9}")
    for name, part in results["breakdown"].items():
      gf = part["flops"] / 1e9 if part.get("flops") else float("nan")
      lines.append(f"{name:<28}{1e3 * part['seconds']:>9.1f}{gf:>9.3f}{gf / part['seconds']:>9.2f}")
  if "profile" in results:
    lines += ["", device_profile.format_profile(results["profile"])]
  if "sequence" in results:
    sq = results["sequence"]
    first = sq["first_task_seconds"]
    if lines:
      lines.append("")
    lines.append(f"sequence ({sq['data']}, {settings['num_tasks']} tasks x {sq['epochs']} epochs, batch "
                 f"{sq['batch_size']}, {sq['train_images_per_task']} train images/task): total "
                 f"{sq['total_seconds']:.1f} s, first task "
                 + (f"{first:.1f} s (compile included)" if first is not None else "n/a")
                 + (f", later tasks {sq['later_tasks_mean_seconds']:.1f} s each" if "later_tasks_mean_seconds" in sq
                    else ""))
  return "\n".join(lines)


def measure_steps(args, config, results) -> None:
  """Rows (a)-(c), the ratios and targets, FLOP rates, and with --breakdown the step's parts."""
  rows = results["rows"]
  if args.flops_only:
    for name, prepare in (("finetune", prepare_finetune), ("pah_step", prepare_pah_step)):
      rows[name] = prepare(args, config)[1]
      print(f"  {name}: {rows[name]['flops_per_step']:.4g} FLOP per step", flush=True)
    results["ratios"] = ratios(rows)
    return
  # Compile and warm up every row, smallest first (a device's peak memory cannot be reset, so
  # each row's figure bounds its own), then time them round-robin.
  plan = [("finetune", prepare_finetune), ("pah_step", prepare_pah_step)]
  if not args.skip_chunk:
    plan += [("finetune_chunk", prepare_finetune_chunk), ("pah_chunk", prepare_pah_chunk)]
  timers, facts = {}, {}
  for name, prepare in plan:
    gc.collect()
    before, device_before = current_rss_bytes(), jax_bytes_in_use()
    reset_peak_rss()
    t0 = time.perf_counter()
    timers[name], facts[name] = prepare(args, config)
    facts[name]["peak_memory_bytes"], facts[name]["peak_memory_source"] = jax_peak_memory()
    if device_before is not None:  # the peak includes earlier rows' buffers, still alive
      facts[name]["device_bytes_in_use_before_row"] = device_before
    elif before is not None:
      facts[name]["rss_before_row_bytes"] = before
    print(f"  {name}: compiled and warmed up in {time.perf_counter() - t0:.0f} s", flush=True)
  if not args.skip_torch:
    for name, (timer, row_facts) in prepare_torch(args, config).items():
      timers[name], facts[name] = timer, row_facts
  load = load_average()
  print(f"  timing {len(timers)} rows round-robin, {args.repeats} repeats ...", flush=True)
  timings = time_rows(timers, args.repeats)
  if args.profile:
    results["profile"] = {name: device_profile.profile(timer.run, timer.sync, timer.steps)
                          for name, timer in timers.items() if name in JAX_ROWS}
  timed = {}
  for name, timing in timings.items():
    row = summarize(timing, args.batch_size, jax_row=not name.startswith("torch"))
    row.update({k: (v() if callable(v) else v) for k, v in facts[name].items()})
    row["load_average"] = [load, load_average()]
    timed[name] = row
    print(f"  {name}: {row['images_per_second']:.1f} images/s", flush=True)
  del timers, facts
  for name in JAX_ROWS:
    if name in timed:
      rows[name] = timed.pop(name)
  if timed:  # PyTorch: compare against the thread count with the faster official step
    by_threads = {}
    for name, row in timed.items():
      by_threads.setdefault(str(row["threads"]), {})[name.rsplit("_", 1)[0]] = row
    results["torch_by_threads"] = by_threads
    rows.update(min(by_threads.values(), key=lambda pair: pair["torch_official"]["seconds_per_step"]))
  if args.breakdown:
    gc.collect()
    results["breakdown"] = breakdown_rows(args, config)
  results["ratios"] = ratios(rows)
  results["targets"] = targets(results["ratios"])
  peak = _peak_flops(args, results["machine"]["jax_devices"][0], config.model.dtype)
  if peak:  # XLA counts the global program's FLOPs: compare with every device's peak together
    peak *= results["machine"]["jax_device_count"]
  if rows["pah_step"].get("flops_per_step") and rows["finetune"].get("flops_per_step"):
    rates = {name: rows[name]["flops_per_step"] / rows[name]["seconds_per_step"] for name in ("finetune", "pah_step")}
    results["flop_rates"] = {"finetune_flops_per_second": rates["finetune"],
                             "pah_step_flops_per_second": rates["pah_step"], "peak_flops": peak,
                             "finetune_utilisation": rates["finetune"] / peak if peak else None,
                             "pah_step_utilisation": rates["pah_step"] / peak if peak else None}


def main(argv=None):
  args = parse_args(argv)
  from pah_jax import config_check

  try:
    config = official_config(args)
    config_check.validate(config)
  except UserError as e:  # one line and exit code 2, as the command line
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  import jax

  results = {"settings": {**vars(args), "model_dtype": config.model.dtype, "task_id": args.num_tasks - 1},
             "machine": machine_info(), "load_average_start": load_average(), "rows": {}, "ratios": {},
             "targets": {}}
  m = results["machine"]
  print(f"machine: {m['cpu_count']} CPUs ({m['usable_cpus']} usable), jax {jax.__version__} on "
        f"{jax.default_backend()} ({m['jax_device_count']} x {m['jax_devices'][0]}), "
        f"load {results['load_average_start']}", flush=True)
  if not args.sequence_only:
    measure_steps(args, config, results)
  if args.sequence or args.sequence_only:
    gc.collect()
    reset_peak_rss()
    print("  sequence ...", flush=True)
    results["sequence"] = sequence_row(args, config)
  results["load_average_end"] = load_average()
  table = format_table(results)
  results["table"] = table
  print(table)
  if args.out:
    write_json(args.out, results)
  return results


def write_json(path: str, data: dict) -> None:
  """`data` as indented JSON at `path`, creating its directory."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    json.dump(data, f, indent=2)
    f.write("\n")


if __name__ == "__main__":
  main()
