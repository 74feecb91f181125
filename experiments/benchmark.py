"""Speed of pah_jax against a plain fine-tune step and a PyTorch reference of the official step.

  python experiments/benchmark.py --width 0.25 --batch-size 64 --steps 10 --out bench.json

In one process on one machine, images per second of:
  finetune       ResNet-18 + one linear head, cross-entropy, AdamW (backbone 1e-4, head 1e-3),
                 batch-statistics BatchNorm: what one backbone forward+backward costs.
  pah_step       pah_jax.train.make_train_step (official preset) at the last task (K-1 old
                 tasks), `jax.jit(step, donate_argnums=0)` on a fixed device-resident batch.
  pah_chunk      the same step driven by pah_jax.train.make_train_chunk, the real training
                 path (device-resident task data, per-epoch permutation, metric sums).
  torch_official experiments/torch_reference.py: the official step in PyTorch eager
                 (1 + 2(K-1) backbone passes per batch, second AdamW on the prototypes).
  torch_finetune the fine-tune step in PyTorch, for the official step's relative cost.
Each row: warm-up, then `--repeats` timings of `--steps` steps; the median is reported.
JAX compile time is reported apart (first call minus the steady-state step time).

With --sequence it also times a whole K-task PAH sequence (pah_jax.train.train_and_evaluate,
official preset) on synthetic CIFAR-shaped data (or real CIFAR-100 with --cifar-data-dir).
"""

import argparse
import ast
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as a script from anywhere: pah_jax and configs live at the root
  sys.path.insert(0, ROOT)

# bf16 dense peak (FLOP/s) of the GPUs this benchmark is meant for, to turn measured FLOP/s
# into model FLOP utilisation; --peak-tflops overrides (e.g. for fp32 or other devices).
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


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
                 help="override of the official preset, e.g. model.dtype=bfloat16 (repeatable)")
  p.add_argument("--chunk-loop", choices=("auto", "compiled", "python"), default="auto",
                 help="train.loop for the make_train_chunk row (auto: compiled on GPU/TPU, python on CPU)")
  p.add_argument("--skip-chunk", action="store_true", help="leave out the make_train_chunk row")
  p.add_argument("--skip-torch", action="store_true", help="leave out the PyTorch rows")
  p.add_argument("--torch-threads", type=int, default=0, help="0: the machine's CPU count")
  p.add_argument("--peak-tflops", type=float, default=0.0,
                 help="device peak for model FLOP utilisation (default: bf16 peak of a known GPU)")
  p.add_argument("--sequence", action="store_true", help="also time a whole K-task PAH sequence")
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


def _parse_value(text: str, current):
  """A --config value, typed like the key's current value (ConfigDict refuses type changes)."""
  if isinstance(current, bool):
    if text.lower() in ("true", "1"):
      return True
    if text.lower() in ("false", "0"):
      return False
    raise ValueError(f"expected true/false, got {text!r}")
  if isinstance(current, str):
    return text
  value = ast.literal_eval(text)
  return type(current)(value) if isinstance(current, (int, float)) else value


def official_config(args):
  """configs/default.py + configs/official.py, with the benchmark's shape and --config overrides."""
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
  for item in args.config:
    key, sep, text = item.partition("=")
    if not sep:
      raise SystemExit(f"error: --config {item!r} is not KEY=VALUE")
    *path, leaf = key.split(".")
    parent = config
    for part in path:
      if part not in parent:
        raise SystemExit(f"error: --config {key}: no such key (configs/default.py lists them)")
      parent = parent[part]
    if leaf not in parent:
      raise SystemExit(f"error: --config {key}: no such key (configs/default.py lists them)")
    parent[leaf] = _parse_value(text, parent[leaf])
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


def jax_peak_memory():
  """(bytes, source): the device allocator's peak where it reports one (GPU/TPU), else RSS.

  The device peak is the process's high-water mark so far (it cannot be reset), so rows are
  measured smallest first and each row's figure bounds its own peak from above.
  """
  import jax

  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return int(stats["peak_bytes_in_use"]), "jax device memory_stats()['peak_bytes_in_use']"
  return peak_rss_bytes(), "process peak RSS (VmHWM, reset before the row)"


def time_loop(run, sync, steps: int, warmup: int, repeats: int) -> dict:
  """Times `run()` (one step, asynchronous allowed) with `sync()` closing each measurement."""
  t0 = time.perf_counter()
  run()
  sync()
  first = time.perf_counter() - t0
  for _ in range(warmup - 1):
    run()
  sync()
  per_step = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    for _ in range(steps):
      run()
    sync()
    per_step.append((time.perf_counter() - t0) / steps)
  return {"first_call_seconds": first, "seconds_per_step_repeats": per_step}


def summarize(timing: dict, batch_size: int, jax_row: bool) -> dict:
  median = statistics.median(timing["seconds_per_step_repeats"])
  row = {"seconds_per_step": median, "images_per_second": batch_size / median,
         "seconds_per_step_min": min(timing["seconds_per_step_repeats"]),
         "seconds_per_step_max": max(timing["seconds_per_step_repeats"]), **timing}
  if jax_row:
    # What the first call costs beyond a steady-state step: tracing, lowering and compiling.
    row["compile_seconds"] = max(timing["first_call_seconds"] - median, 0.0)
  return row


def flops_of(jitted, *args):
  """XLA's FLOP count of one call (from the lowered HLO; no extra compile)."""
  try:
    cost = jitted.lower(*args).cost_analysis()
    if isinstance(cost, (list, tuple)):
      cost = cost[0]
    return float(cost["flops"]) if cost and "flops" in cost else None
  except Exception:  # pylint: disable=broad-except
    return None  # cost analysis is optional information; some backends do not provide it


def synthetic_batch(rng, n, image_size, num_classes):
  images = rng.integers(0, 256, (n, image_size, image_size, 3), dtype=np.uint8)
  labels = (np.arange(n) % num_classes).astype(np.int32)
  return images, labels


# --------------------------------------------------------------------------- (a) finetune


def finetune_row(args, config) -> dict:
  """A minimal fine-tune step with pah_jax's step structure: state pytree in, state out."""
  import flax
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import optax

  from pah_jax import images as images_lib
  from pah_jax import losses
  from pah_jax import models

  dtype = jnp.bfloat16 if config.model.dtype == "bfloat16" else jnp.float32
  backbone = models.ResNet18(width=config.model.width, stem=config.model.stem, dtype=dtype)
  c, s = args.classes_per_task, args.image_size
  mean = std = (0.5, 0.5, 0.5)  # official preset: data.normalization = half
  o = config.optim

  @flax.struct.dataclass
  class State:
    step: jax.Array
    params: dict
    batch_stats: dict
    opt_state: optax.OptState

  adamw = lambda lr: optax.adamw(lr, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay)
  tx = optax.multi_transform({"backbone": adamw(o.lr_backbone), "head": adamw(o.lr_hypernet)},
                             lambda params: {g: jax.tree_util.tree_map(lambda _, g=g: g, t) for g, t in params.items()})

  @jax.jit
  def init(key):
    k_b, k_h = jax.random.split(key)
    variables = backbone.init(k_b, jnp.zeros((1, s, s, 3)), train=False)
    head = nn.initializers.lecun_normal()(k_h, (c, backbone.feature_dim))
    params = {"backbone": variables["params"], "head": head}
    return State(jnp.zeros((), jnp.int32), params, variables["batch_stats"], tx.init(params))

  def step(state, images_u8, labels):
    images = images_lib.to_backbone_channels(images_lib.normalize(images_u8, mean, std))

    def loss_fn(params):
      features, updates = backbone.apply({"params": params["backbone"], "batch_stats": state.batch_stats},
                                         images, train=True, mutable=["batch_stats"])
      logits = features @ params["head"].T
      return losses.cross_entropy(logits, labels), (updates["batch_stats"], jnp.mean(jnp.argmax(logits, -1) == labels))

    (loss, (batch_stats, accuracy)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                         opt_state=opt_state), {"loss": loss, "train_accuracy": accuracy}

  rng = np.random.default_rng(args.seed)
  images, labels = (jax.device_put(a) for a in synthetic_batch(rng, args.batch_size, s, c))
  jstep = jax.jit(step, donate_argnums=0)
  holder = {"state": init(jax.random.PRNGKey(args.seed))}
  flops = flops_of(jstep, holder["state"], images, labels)

  def run():
    holder["state"], _ = jstep(holder["state"], images, labels)

  timing = time_loop(run, lambda: jax.block_until_ready(holder["state"]), args.steps, args.warmup, args.repeats)
  row = summarize(timing, args.batch_size, jax_row=True)
  row["flops_per_step"] = flops
  row["peak_memory_bytes"], row["peak_memory_source"] = jax_peak_memory()
  del holder, images, labels
  return row


# --------------------------------------------------------------------------- (b) PAH


def _pah_setup(args, config):
  """Networks, the official step and a train state at the start of task K-1 (K-1 old tasks)."""
  import jax

  from pah_jax import optim
  from pah_jax import pah
  from pah_jax import prototypes as prototypes_lib
  from pah_jax import train

  k, c, s = args.num_tasks, args.classes_per_task, args.image_size
  mean = std = (0.5, 0.5, 0.5)
  rng = np.random.default_rng(args.seed)
  # Prototypes initialised as the official preset does, from one synthetic image per class.
  task_images = [synthetic_batch(rng, c, s, c) for _ in range(k)]
  p = config.pah
  init_protos, _ = prototypes_lib.initial_prototypes(
      [x for x, _ in task_images], [y for _, y in task_images], num_classes=c, size=p.prototype_size,
      channels=p.prototype_channels or 3, init=p.prototype_init, semantic_init=p.semantic_init,
      mean=mean, std=std, random_mean=p.random_init_mean, random_std=p.random_init_std, seed=config.seed)
  nets = pah.build_networks(config, k, c)
  settings = train.StepSettings.from_config(config, mean, std)
  step = train.make_train_step(nets, settings, optim.main_optimizer(config.optim),
                               optim.prototype_optimizer(config.optim))
  state = train.create_state(nets, config, init_protos, (s, s, 3))
  # A teacher with buffers of its own, as after a real task (end_task of a trained model),
  # then the task-start work of task K-1 (its prototypes, the teacher's prototype logits).
  state = state.replace(old_params=jax.tree_util.tree_map(lambda x: x.copy(), state.params),
                        old_batch_stats=jax.tree_util.tree_map(lambda x: x.copy(), state.batch_stats))
  state = train.make_begin_task(nets, init_protos)(state, k - 1)
  return nets, step, state


def pah_step_row(args, config) -> dict:
  import jax
  import jax.numpy as jnp

  _, step, state = _pah_setup(args, config)
  rng = np.random.default_rng(args.seed + 1)
  images, labels = (jax.device_put(a) for a in synthetic_batch(rng, args.batch_size, args.image_size,
                                                                args.classes_per_task))
  task_id = jnp.asarray(args.num_tasks - 1, jnp.int32)
  jstep = jax.jit(step, donate_argnums=0)
  flops = flops_of(jstep, state, images, labels, task_id)
  holder = {"state": state}
  del state

  def run():
    holder["state"], _ = jstep(holder["state"], images, labels, task_id)

  timing = time_loop(run, lambda: jax.block_until_ready(holder["state"]), args.steps, args.warmup, args.repeats)
  row = summarize(timing, args.batch_size, jax_row=True)
  row["task_id"] = args.num_tasks - 1
  row["flops_per_step"] = flops
  row["peak_memory_bytes"], row["peak_memory_source"] = jax_peak_memory()
  del holder
  return row


def pah_chunk_row(args, config) -> dict:
  """make_train_chunk over a device-resident task of `steps` batches: one call per repeat."""
  import jax

  from pah_jax import train

  _, step, state = _pah_setup(args, config)
  compiled = train.use_compiled_loops(args.chunk_loop)
  chunk = train.make_train_chunk(step, args.batch_size, compiled)
  n = args.steps * args.batch_size
  rng = np.random.default_rng(args.seed + 2)
  x, y = synthetic_batch(rng, n, args.image_size, args.classes_per_task)
  images, labels = jax.device_put(x), jax.device_put(y)
  task_id = args.num_tasks - 1
  holder = {"state": state, "epoch": 0}
  del state

  def call(num_batches):
    holder["state"], metrics = chunk(holder["state"], images, labels, n, task_id, holder["epoch"], 0, num_batches)
    holder["epoch"] += 1  # a fresh permutation each call, as successive epochs
    return metrics

  def sync():
    jax.block_until_ready(holder["state"])

  # First call: one batch (compile + one step); then the rest of the warm-up in one chunk.
  t0 = time.perf_counter()
  call(1)
  sync()
  first = time.perf_counter() - t0
  if args.warmup > 1:
    call(min(args.warmup - 1, args.steps))
    sync()
  per_step = []
  for _ in range(args.repeats):
    t0 = time.perf_counter()
    metrics = call(args.steps)
    sync()
    per_step.append((time.perf_counter() - t0) / args.steps)
  row = summarize({"first_call_seconds": first, "seconds_per_step_repeats": per_step}, args.batch_size, jax_row=True)
  row["loop"] = "compiled" if compiled else "python"
  row["task_id"] = task_id
  row["last_metrics"] = {k: float(v) for k, v in jax.device_get(metrics).items()}
  row["peak_memory_bytes"], row["peak_memory_source"] = jax_peak_memory()
  del holder, images, labels
  return row


# --------------------------------------------------------------------------- (c) PyTorch


def torch_rows(args, config) -> dict:
  import torch

  import torch_reference  # experiments/ is this script's directory, hence on sys.path

  threads = args.torch_threads or os.cpu_count()
  torch.set_num_threads(threads)
  torch.manual_seed(args.seed)
  device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
  autocast = torch.bfloat16 if config.model.dtype == "bfloat16" else None
  k, c, s = args.num_tasks, args.classes_per_task, args.image_size
  rng = np.random.default_rng(args.seed + 3)
  x, y = synthetic_batch(rng, args.batch_size, s, c)
  images = torch.from_numpy(x).to(device)
  labels = torch.from_numpy(y).long().to(device)

  def sync():
    if device.type == "cuda":
      torch.cuda.synchronize()

  def peak_memory():
    if device.type == "cuda":
      return int(torch.cuda.max_memory_allocated()), "torch.cuda.max_memory_allocated()"
    return peak_rss_bytes(), "process peak RSS (VmHWM, reset before the row)"

  def reset():
    gc.collect()
    reset_peak_rss()
    if device.type == "cuda":
      torch.cuda.reset_peak_memory_stats()

  rows = {}
  reset()
  model = torch_reference.PAHModel(k, c, width=config.model.width, stem=config.model.stem,
                                   prototype_size=config.pah.prototype_size, hidden=config.hypernet.hidden,
                                   layers=config.hypernet.layers).to(device)
  o, p = config.optim, config.pah
  official = torch_reference.OfficialStep(model, lambda_sm=p.lambda_sm, lambda_sp=p.lambda_sp,
                                          temperature=p.temperature, lr_backbone=o.lr_backbone,
                                          lr_hypernet=o.lr_hypernet, lr_prototypes=o.lr_prototypes,
                                          weight_decay=o.weight_decay, autocast_dtype=autocast)
  timing = time_loop(lambda: official(images, labels, k - 1), sync, args.steps, args.warmup, args.repeats)
  rows["torch_official"] = summarize(timing, args.batch_size, jax_row=False)
  rows["torch_official"]["task_id"] = k - 1
  rows["torch_official"]["backbone_passes_per_step"] = {"images": 1 + 2 * (k - 1), "prototype_batches": 2 * (k - 1)}
  rows["torch_official"]["peak_memory_bytes"], rows["torch_official"]["peak_memory_source"] = peak_memory()
  del official, model

  reset()
  finetune = torch_reference.FinetuneStep(config.model.width, config.model.stem, c, lr_backbone=o.lr_backbone,
                                          lr_head=o.lr_hypernet, weight_decay=o.weight_decay,
                                          autocast_dtype=autocast).to(device)
  timing = time_loop(lambda: finetune(images, labels), sync, args.steps, args.warmup, args.repeats)
  rows["torch_finetune"] = summarize(timing, args.batch_size, jax_row=False)
  rows["torch_finetune"]["peak_memory_bytes"], rows["torch_finetune"]["peak_memory_source"] = peak_memory()
  for row in rows.values():
    row["device"] = str(device)
    row["threads"] = threads
    row["autocast"] = str(autocast) if autocast else None
  return rows


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
  row["peak_memory_bytes"], row["peak_memory_source"] = jax_peak_memory()
  return row


# --------------------------------------------------------------------------- report


def machine_info() -> dict:
  import jax

  info = {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
          "processor": platform.processor() or platform.machine(), "jax": jax.__version__,
          "jax_backend": jax.default_backend(), "jax_devices": [d.device_kind for d in jax.devices()]}
  try:
    with open("/proc/cpuinfo") as f:
      names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    if names:
      info["cpu_model"] = names[0]
  except OSError:
    pass
  try:
    import torch

    info["torch"] = torch.__version__
  except ImportError:
    info["torch"] = None
  return info


def _peak_flops(args, device_kind: str):
  if args.peak_tflops:
    return args.peak_tflops * 1e12
  for name, peak in PEAK_BF16_FLOPS.items():
    if name in device_kind:
      return peak
  return None


def ratios(rows: dict) -> dict:
  out = {}
  ft = rows.get("finetune")
  for name in ("pah_step", "pah_chunk"):
    if ft and name in rows:
      out[f"{name}_over_finetune_step_time"] = rows[name]["seconds_per_step"] / ft["seconds_per_step"]
    if "torch_official" in rows and name in rows:
      out[f"{name}_over_torch_official_throughput"] = (rows[name]["images_per_second"]
                                                       / rows["torch_official"]["images_per_second"])
  if "torch_official" in rows and "torch_finetune" in rows:
    out["torch_official_over_torch_finetune_step_time"] = (rows["torch_official"]["seconds_per_step"]
                                                           / rows["torch_finetune"]["seconds_per_step"])
  return out


def targets(r: dict) -> dict:
  """The issue's two step-level targets, for each JAX path measured."""
  out = {}
  for name in ("pah_step", "pah_chunk"):
    key = f"{name}_over_finetune_step_time"
    if key in r:
      out[f"{name}: step <= 1.5x finetune"] = r[key] <= 1.5
    key = f"{name}_over_torch_official_throughput"
    if key in r:
      out[f"{name}: throughput >= 5x torch official"] = r[key] >= 5.0
  return out


def format_table(results: dict) -> str:
  rows = results["rows"]
  lines = [f"{'row':<16}{'images/s':>12}{'ms/step':>11}{'compile s':>11}{'peak MiB':>10}  notes",
           "-" * 78]
  notes = {"finetune": "JAX, 1 backbone fwd+bwd",
           "pah_step": f"JAX jit step, task {results['settings']['num_tasks'] - 1}",
           "pah_chunk": "JAX make_train_chunk ({loop} loop)",
           "torch_official": "PyTorch eager, official step",
           "torch_finetune": "PyTorch eager, fine-tune"}
  for name, row in rows.items():
    compile_s = f"{row['compile_seconds']:.1f}" if "compile_seconds" in row else "-"
    mem = f"{row['peak_memory_bytes'] / 2**20:.0f}" if row.get("peak_memory_bytes") else "-"
    note = notes.get(name, "").format(loop=row.get("loop", ""))
    lines.append(f"{name:<16}{row['images_per_second']:>12.1f}{1e3 * row['seconds_per_step']:>11.1f}"
                 f"{compile_s:>11}{mem:>10}  {note}")
  lines.append("")
  for key, value in results["ratios"].items():
    lines.append(f"{key:<52}{value:8.2f}")
  for key, ok in results["targets"].items():
    lines.append(f"target {key:<45}{'met' if ok else 'NOT met':>8}")
  if "mfu" in results:
    m = results["mfu"]
    lines.append(f"pah_step XLA FLOP/s {m['pah_step_flops_per_second']:.3g}"
                 + (f", utilisation {100 * m['pah_step']:.1f}% of {m['peak_flops']:.3g}" if m.get("pah_step") else ""))
  if "sequence" in results:
    sq = results["sequence"]
    first = sq["first_task_seconds"]
    lines.append(f"sequence ({sq['data']}, {results['settings']['num_tasks']} tasks x {sq['epochs']} epochs, "
                 f"{sq['train_images_per_task']} images/task): total {sq['total_seconds']:.1f} s, first task "
                 + (f"{first:.1f} s (compile included)" if first is not None else "n/a"))
  return "\n".join(lines)


def main(argv=None):
  args = parse_args(argv)
  config = official_config(args)
  from pah_jax import config_check
  from pah_jax.errors import UserError

  try:
    config_check.validate(config)
  except UserError as e:
    raise SystemExit(f"error: {e}") from e
  import jax

  results = {"settings": {**vars(args), "config_overrides": args.config,
                          "model_dtype": config.model.dtype, "task_id": args.num_tasks - 1},
             "machine": machine_info(), "load_average_start": load_average(), "rows": {}}
  print(f"machine: {results['machine']['cpu_count']} CPUs, jax {jax.__version__} on "
        f"{jax.default_backend()} ({results['machine']['jax_devices'][0]}), load {results['load_average_start']}",
        flush=True)
  rows = results["rows"]
  # Smallest first: the device's peak memory cannot be reset, so each row's peak bounds its own.
  plan = [("finetune", finetune_row), ("pah_step", pah_step_row)]
  if not args.skip_chunk:
    plan.append(("pah_chunk", pah_chunk_row))
  for name, fn in plan:
    gc.collect()
    reset_peak_rss()
    t0 = time.perf_counter()
    rows[name] = fn(args, config)
    print(f"  {name}: {rows[name]['images_per_second']:.1f} images/s ({time.perf_counter() - t0:.0f} s)", flush=True)
  if not args.skip_torch:
    gc.collect()
    rows.update(torch_rows(args, config))
    for name in ("torch_official", "torch_finetune"):
      print(f"  {name}: {rows[name]['images_per_second']:.1f} images/s", flush=True)
  results["ratios"] = ratios(rows)
  results["targets"] = targets(results["ratios"])
  peak = _peak_flops(args, results["machine"]["jax_devices"][0])
  flops = rows["pah_step"].get("flops_per_step")
  if flops:
    achieved = flops / rows["pah_step"]["seconds_per_step"]
    results["mfu"] = {"pah_step_flops_per_second": achieved, "peak_flops": peak,
                      "pah_step": achieved / peak if peak else None,
                      "finetune": (rows["finetune"]["flops_per_step"] / rows["finetune"]["seconds_per_step"] / peak
                                   if peak and rows["finetune"].get("flops_per_step") else None)}
  if args.sequence:
    gc.collect()
    reset_peak_rss()
    results["sequence"] = sequence_row(args, config)
  results["load_average_end"] = load_average()
  table = format_table(results)
  results["table"] = table
  print(table)
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
      json.dump(results, f, indent=2)
      f.write("\n")
  return results


if __name__ == "__main__":
  main()
