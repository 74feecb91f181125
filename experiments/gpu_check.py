"""One prepared check of pah_jax on one GPU: every figure docs/performance.md asks a GPU for, in one command.

  python -m experiments.gpu_check --out gpu_check.json [--budget-s 420] [--wheels DIR]
  python -m experiments.gpu_check --smoke --out /tmp/gpu_check_smoke.json   # toy sizes, CPU, < 2 min

Writes FILE (JSON) and a short Markdown summary beside it (FILE with .md), both rewritten after
every measurement, so a run stopped early keeps what it measured. In order of priority:

  sequence        the 10-task Split-CIFAR100 sequence at the official schedule (configs/official.py:
                  15 epochs, batch 64, imagenet stem, width 1.0; 4491 training and 1000 test images
                  per task) on synthetic CIFAR-shaped data, through pah_jax.train.train_and_evaluate
                  as `experiments/benchmark.py --sequence` runs it; per-task times, the first task's
                  compiles estimated apart (first task minus the mean later task), peak device memory.
  steps           fine-tune against PAH at the last task on the training path (train.make_train_chunk,
                  the compiled epoch loop on a GPU): batch 64, imagenet stem, fp32, and batch 512,
                  cifar stem, bf16, each with model.small_map_convs=conv and =matmul; XLA's FLOP
                  count and the model FLOP utilisation at batch 512 (bf16 dense peak of the device).
  torch           the PyTorch reference of the official step (experiments/torch_reference.py) and its
                  fine-tune step at batch 64, imagenet stem, fp32, when torch is importable.
  parallel_seeds  4 seeds as one program (pah_jax.train.train_seeds) on the sequence's schedule, stopped
                  after its first 3 tasks; per-task time against the 1-seed sequence's same tasks.

The rows, their timing (compile and warm-up first, then round-robin repeats, the median
reported), the FLOP count and the peak table are experiments/benchmark.py's, imported.

Budget. --budget-s counts from the process's start, imports and compiles included. A measurement
whose estimated cost no longer fits is skipped and recorded in "skipped" with the reason; the
training runs (sequence, parallel_seeds) are asked to stop (SIGUSR2, pah_jax's own stop request:
a checkpoint, then `Stopped`) shortly before the budget ends and report the tasks they finished;
anything still running at the end of the budget (a compile) is cut off: the JSON is written
with "status": "stopped by the budget" and the process exits with code 3.
Exit codes: 0 all measured or skipped with a reason, 1 a measurement failed (its traceback is in
"errors"), 2 the check could not start (a missing module: see --wheels), 3 stopped by the budget.

Dependencies. The check needs jax (with CUDA on a GPU), flax, optax, orbax-checkpoint, chex,
absl-py, numpy and ml-collections; torch is optional. tensorflow-datasets, tensorboardX, tqdm,
matplotlib and submitit are not needed: the data are synthetic (.npz), and pah_jax.reporting
skips TensorBoard events, progress bars and plots when their packages are absent. ml-collections
is the config type of every pah_jax config, so a machine without it gets its pure-Python wheel
from a folder (--wheels DIR; wheels are zip files that Python imports from sys.path). Fill the
folder on a machine with network access and copy it along:

  pip download --no-deps --only-binary=:all: --dest wheels ml-collections
  # PyYAML and absl-py, which ml-collections imports, come with flax and orbax-checkpoint.

Only pure-Python wheels (`*-none-any.whl`) are used; they go at the end of sys.path, so
installed packages win.

--smoke runs the same code at toy sizes (width 1/16, 3 tasks of 16x16 images, a few steps, 2 of
the 3 tasks for the parallel seeds) on the CPU (JAX_PLATFORMS=cpu unless set) in under 2 minutes;
tests/gpu_check_test.py runs it.
"""

import time

START = time.monotonic()  # the budget counts from here

import argparse  # noqa: E402 (after START on purpose)
import contextlib  # noqa: E402
import datetime  # noqa: E402
import gc  # noqa: E402
import importlib  # noqa: E402
import importlib.metadata  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import traceback  # noqa: E402

# The check's sizes. Step groups are named by stem and dtype; their batch sizes are in them.
FULL = {
    "width": 1.0, "num_tasks": 10, "classes_per_task": 10, "image_size": 32,
    "sequence": {"epochs": 15, "batch_size": 64, "train_per_task": 4491, "test_per_task": 1000},
    "steps": {
        "imagenet_fp32": {"batch_size": 64, "stem": "imagenet", "dtype": "float32", "steps": 50, "repeats": 3,
                          "count_flops": False},
        "cifar_bf16": {"batch_size": 512, "stem": "cifar", "dtype": "bfloat16", "steps": 30, "repeats": 3,
                       "count_flops": True},
    },
    "torch": {"batch_size": 64, "stem": "imagenet", "dtype": "float32", "steps": 10, "warmup": 2, "repeats": 3},
    "parallel_seeds": {"seeds": 4, "tasks": 3},
    # Rough costs on one H100/H200 (compiles included), from the H100 runs in docs/performance.md: a
    # measurement starts only if this much of the budget is left. The training runs stop
    # themselves at the budget, so theirs is the least that still gives a later task's time.
    "estimates_s": {"sequence": 110, "steps:imagenet_fp32": 35, "steps:cifar_bf16": 45, "torch": 35,
                    "parallel_seeds": 70},
}
SMOKE = {
    "width": 0.0625, "num_tasks": 3, "classes_per_task": 2, "image_size": 16,
    "sequence": {"epochs": 1, "batch_size": 8, "train_per_task": 32, "test_per_task": 16},
    "steps": {
        "imagenet_fp32": {"batch_size": 8, "stem": "imagenet", "dtype": "float32", "steps": 2, "repeats": 1,
                          "count_flops": False},
        "cifar_bf16": {"batch_size": 16, "stem": "cifar", "dtype": "bfloat16", "steps": 2, "repeats": 1,
                       "count_flops": True},
    },
    "torch": {"batch_size": 8, "stem": "imagenet", "dtype": "float32", "steps": 1, "warmup": 1, "repeats": 1},
    "parallel_seeds": {"seeds": 4, "tasks": 2},
    "estimates_s": {"sequence": 10, "steps:imagenet_fp32": 5, "steps:cifar_bf16": 5, "torch": 5,
                    "parallel_seeds": 10},
}
SMALL_MAP_CONVS = ("conv", "matmul")
# Before the budget ends: training runs are asked to stop this much earlier (a checkpoint and
# the JSON still to write); everything is cut off this much earlier.
SOFT_MARGIN_S = {"full": 15.0, "smoke": 3.0}
HARD_MARGIN_S = 2.0
# Not needed on the check's path (and absent on the GPU machine this check is for).
NOT_NEEDED = ("tensorflow_datasets", "tensorboardX", "tqdm", "matplotlib", "submitit")
NEEDED = ("jax", "flax", "optax", "orbax.checkpoint", "chex", "absl", "numpy", "yaml", "ml_collections")
DISTRIBUTIONS = ("jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda12-pjrt", "jax-cuda13-plugin", "jax-cuda13-pjrt",
                 "flax", "optax", "orbax-checkpoint", "chex", "absl-py", "numpy", "ml-collections", "PyYAML",
                 "torch")
WHEEL = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)\.whl$")


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--out", required=True, help="the JSON to write (the Markdown summary goes beside it, .md)")
  p.add_argument("--budget-s", type=float, default=420.0,
                 help="wall-clock budget in seconds from the process's start, compiles included")
  p.add_argument("--smoke", action="store_true", help="toy sizes on the CPU: the same code path in under 2 minutes")
  p.add_argument("--wheels", default="", metavar="DIR",
                 help="a folder of pure-Python wheels (e.g. ml-collections) to import from where not installed")
  p.add_argument("--skip", action="append", default=[], choices=("sequence", "steps", "torch", "parallel_seeds"),
                 help="leave a measurement out (repeatable)")
  p.add_argument("--peak-tflops", type=float, default=0.0,
                 help="one device's peak for the utilisation (default: experiments/benchmark.py's bf16 table)")
  p.add_argument("--keep-workdirs", action="store_true", help="keep the training runs' workdirs (printed)")
  args = p.parse_args(argv)
  if args.budget_s <= 0:
    p.error("--budget-s must be > 0")
  return args


# --------------------------------------------------------------------------- the report


class Report:
  """The results dict, written (JSON and Markdown) after every change, from the main thread or
  from the budget's watchdog (a lock keeps the two apart)."""

  def __init__(self, path: str, data: dict):
    self.path, self.data = path, data
    self.lock = threading.RLock()
    self.md_path = (path[:-5] if path.endswith(".json") else path) + ".md"

  def set(self, key, value, write=True):
    with self.lock:
      self.data[key] = value
      if write:
        self.write()

  def skip(self, name: str, reason: str):
    with self.lock:
      self.data["skipped"].append({"measurement": name, "reason": reason})
      print(f"  skipped {name}: {reason}", flush=True)
      self.write()

  def write(self):
    with self.lock:
      self.data["elapsed_s"] = round(time.monotonic() - START, 1)
      self.data["benchmarks_row"] = benchmarks_row(self.data)
      os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
      for path, text in ((self.path, json.dumps(_jsonable(self.data), indent=2) + "\n"),
                         (self.md_path, markdown(self.data))):
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
          f.write(text)
        os.replace(tmp, path)


def _jsonable(x):
  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, float):
    return x if x == x and abs(x) != float("inf") else None
  if x is None or isinstance(x, (str, int, bool)):
    return x
  try:
    return float(x)
  except (TypeError, ValueError):
    return str(x)


def _ms(seconds):
  return "-" if seconds is None else f"{1e3 * seconds:.2f}"


def _f(x, fmt="{:.2f}"):
  return "-" if x is None else fmt.format(x)


def _get(d, *keys):
  for k in keys:
    if not isinstance(d, dict) or k not in d:
      return None
    d = d[k]
  return d


def benchmarks_row(d: dict) -> str:
  """The line this run adds to docs/performance.md's "GPU check" table."""
  v, sq = d.get("versions", {}), d.get("sequence") or {}
  cuda = v.get("cuda", {}) or {}

  def pair(group, key):
    return " / ".join(_f(_get(d, "steps", group, mode, "ratios", key)) for mode in SMALL_MAP_CONVS)

  def mfu(mode):
    u = _get(d, "steps", "cifar_bf16", mode, "flop_rates", "pah_chunk_utilisation")
    return "-" if u is None else f"{100 * u:.1f}%"

  seq = "-"
  if sq.get("total_seconds") is not None:
    seq = (f"{sq['total_seconds']:.1f} ({_f(sq.get('first_task_seconds'), '{:.1f}')} first, "
           f"{_f(sq.get('later_tasks_mean_seconds'), '{:.1f}')} later{', stopped' if sq.get('stopped') else ''})")
  torch_ratio = " / ".join(_f(_get(d, "torch", "pah_chunk_over_torch_official_throughput", m), "{:.1f}")
                           for m in SMALL_MAP_CONVS)
  seeds = _get(d, "parallel_seeds", "later_task_time_ratio")
  peak = _get(d, "peak_device_memory", "bytes")
  date = (d.get("started_utc") or "")[:10]
  device = (d.get("machine") or {}).get("device_kind", "-")
  stack = (f"{v.get('jax', '-')} / {cuda.get('runtime', '-')} / "
           f"{(d.get('machine') or {}).get('nvidia_driver') or '-'}")
  return (f"| {date}{' (smoke)' if d.get('smoke') else ''} | {device} | {stack} | {seq} | "
          f"{pair('imagenet_fp32', 'pah_chunk_over_finetune_chunk_step_time')} | "
          f"{pair('cifar_bf16', 'pah_chunk_over_finetune_chunk_step_time')} | {mfu('conv')} / {mfu('matmul')} | "
          f"{torch_ratio} | {_f(seeds)} | {'-' if peak is None else f'{peak / 2**30:.2f}'} | "
          f"{os.path.basename(d.get('out', ''))} |")


def markdown(d: dict) -> str:
  m, v = d.get("machine") or {}, d.get("versions") or {}
  lines = [f"# pah_jax GPU check{' (smoke: toy sizes)' if d.get('smoke') else ''}", "",
           f"Started {d.get('started_utc')}, {d.get('elapsed_s')} s of a {d.get('budget_s')} s budget; "
           f"status: **{d.get('status')}**.  ",
           f"Device: {m.get('device_kind', '?')} x {m.get('device_count', '?')} ({m.get('backend', '?')}); "
           f"JAX {v.get('jax')}, jaxlib {v.get('jaxlib')}, CUDA {json.dumps(v.get('cuda'))}, "
           f"driver {m.get('nvidia_driver') or '-'}; small_map_convs=auto runs "
           f"{m.get('small_map_convs_auto', '?')} here.", ""]
  sq = d.get("sequence")
  if isinstance(sq, dict) and "total_seconds" in sq:
    lines += [f"**Sequence** ({sq.get('tasks_done')} of {sq.get('num_tasks')} tasks x {sq.get('epochs')} epochs, "
              f"batch {sq.get('batch_size')}, {sq.get('small_map_convs')}): total {sq['total_seconds']:.1f} s, "
              f"first task {_f(sq.get('first_task_seconds'), '{:.1f}')} s (compiles about "
              f"{_f(sq.get('compile_seconds_estimate'), '{:.1f}')} s), later tasks "
              f"{_f(sq.get('later_tasks_mean_seconds'), '{:.2f}')} s each; peak "
              f"{_f((sq.get('peak_memory_bytes') or 0) / 2**30, '{:.2f}')} GiB"
              + ("; **stopped by the budget**" if sq.get("stopped") else ""), ""]
  steps = d.get("steps") or {}
  if any(isinstance(g, dict) and any(mode in g for mode in SMALL_MAP_CONVS) for g in steps.values()):
    lines += ["| step group | small_map_convs | finetune_chunk ms | pah_chunk ms | PAH / fine-tune | "
              "compile s (ft / PAH) | TFLOP/s (ft / PAH) | utilisation (ft / PAH) |",
              "|---|---|---:|---:|---:|---|---|---|"]
    for group, g in steps.items():
      for mode in SMALL_MAP_CONVS:
        r = _get(g, mode)
        if not r or "rows" not in r:
          continue
        ft, pah, fr = r["rows"].get("finetune_chunk", {}), r["rows"].get("pah_chunk", {}), r.get("flop_rates") or {}
        tf = " / ".join(_f((fr.get(f"{n}_flops_per_second") or 0) / 1e12 or None, "{:.1f}")
                        for n in ("finetune_chunk", "pah_chunk"))
        ut = " / ".join("-" if fr.get(f"{n}_utilisation") is None else f"{100 * fr[f'{n}_utilisation']:.1f}%"
                        for n in ("finetune_chunk", "pah_chunk"))
        lines.append(f"| {group} (batch {r['settings']['batch_size']}) | {mode} | {_ms(ft.get('seconds_per_step'))} | "
                     f"{_ms(pah.get('seconds_per_step'))} | "
                     f"{_f(r['ratios'].get('pah_chunk_over_finetune_chunk_step_time'))} | "
                     f"{_f(ft.get('compile_seconds'), '{:.1f}')} / {_f(pah.get('compile_seconds'), '{:.1f}')} | "
                     f"{tf} | {ut} |")
    lines.append("")
    for group, g in steps.items():
      c = _get(g, "comparison")
      if c:
        lines.append(f"{group}: the PAH training path is {c['pah_chunk_matmul_over_conv']:.2f}x as long with matmul "
                     f"as with conv (fine-tune {c['finetune_chunk_matmul_over_conv']:.2f}x): **{c['faster_for_pah']}** "
                     "is faster here.")
    lines.append("")
  t = d.get("torch")
  if isinstance(t, dict) and "rows" in t:
    o, f = t["rows"].get("torch_official", {}), t["rows"].get("torch_finetune", {})
    lines += [f"**PyTorch reference** ({t.get('device')}, batch {t.get('batch_size')}): official step "
              f"{_ms(o.get('seconds_per_step'))} ms, fine-tune {_ms(f.get('seconds_per_step'))} ms; PAH training path "
              "/ official throughput: " + ", ".join(
                  f"{mode} {_f(t['pah_chunk_over_torch_official_throughput'].get(mode), '{:.1f}')}x"
                  for mode in SMALL_MAP_CONVS), ""]
  ps = d.get("parallel_seeds")
  if isinstance(ps, dict) and "per_task_seconds" in ps:
    lines += [f"**Parallel seeds**: {ps['seeds']} seeds in one program, tasks {ps.get('per_task_seconds')} s; "
              f"1 seed, the same tasks {ps.get('one_seed_per_task_seconds')} s; later task "
              f"{_f(ps.get('later_task_time_ratio'))}x the time for {ps['seeds']}x the runs "
              f"({_f(ps.get('seed_tasks_per_second_gain'))}x the seed-tasks per second)", ""]
  pk = d.get("peak_device_memory") or {}
  if pk.get("bytes"):
    lines += [f"Peak memory {pk['bytes'] / 2**30:.2f} GiB ({pk.get('source')}).", ""]
  for s in d.get("skipped", []):
    lines.append(f"- skipped {s['measurement']}: {s['reason']}")
  for e in d.get("errors", []):
    lines.append(f"- **failed** {e['measurement']}: {e['error']}")
  lines += ["", "docs/performance.md row:", "", d.get("benchmarks_row", "")]
  return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- setup


def add_wheels(directory: str) -> dict:
  """Puts the pure-Python wheels in `directory` at the end of sys.path."""
  used, refused = [], []
  for name in sorted(os.listdir(directory)):
    if not name.endswith(".whl"):
      continue
    m = WHEEL.match(name)
    if m and m["abi"] == "none" and m["plat"] == "any":
      sys.path.append(os.path.abspath(os.path.join(directory, name)))
      used.append(name)
    else:
      refused.append({"wheel": name, "reason": "not a pure-Python wheel: compiled code cannot be imported from a zip"})
  return {"directory": os.path.abspath(directory), "used": used, "refused": refused}


def module_origins() -> dict:
  """Where each needed module comes from, and whether the unneeded ones are installed (without
  importing them; `main` records at the end which of them the check's path imported)."""
  out = {"needed": {}, "not_needed": {}}
  for name in NEEDED:
    try:
      out["needed"][name] = getattr(importlib.import_module(name), "__file__", None) or "(namespace)"
    except ImportError as e:
      out["needed"][name] = None
      out.setdefault("missing", []).append(f"{name}: {e}")
  for name in NOT_NEEDED:
    try:
      spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
      spec = None
    out["not_needed"][name] = "absent" if spec is None else "installed"
  return out


def versions() -> dict:
  out = {"python": platform.python_version()}
  for dist in DISTRIBUTIONS:
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
      out[dist] = importlib.metadata.version(dist)
  try:  # JAX's own record of the CUDA libraries it loaded (private, so guarded)
    from jax._src.lib import cuda_versions  # pylint: disable=g-import-not-at-top

    cuda = {}
    if cuda_versions is not None:
      for key, fn in (("runtime", "cuda_runtime_get_version"), ("driver_api", "cuda_driver_get_version"),
                      ("cudnn", "cudnn_get_version"), ("cublas", "cublas_get_version")):
        with contextlib.suppress(Exception):
          cuda[key] = getattr(cuda_versions, fn)()
      for key in ("runtime", "driver_api"):  # 12080 -> "12.8"
        if isinstance(cuda.get(key), int):
          cuda[key] = f"{cuda[key] // 1000}.{cuda[key] % 1000 // 10}"
    out["cuda"] = cuda or None
  except Exception:  # pylint: disable=broad-except
    out["cuda"] = None
  return out


def device_facts() -> dict:
  import jax  # pylint: disable=g-import-not-at-top

  from pah_jax import models  # pylint: disable=g-import-not-at-top

  dev = jax.devices()[0]
  out = {"backend": jax.default_backend(), "device_kind": dev.device_kind, "device_count": jax.device_count(),
         "small_map_convs_auto": models.resolve_small_map_convs("auto")}
  stats = dev.memory_stats() or {}
  if "bytes_limit" in stats:
    out["device_memory_limit_bytes"] = int(stats["bytes_limit"])
  if shutil.which("nvidia-smi"):
    try:
      proc = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,power.limit",
                             "--format=csv,noheader"], capture_output=True, text=True, timeout=20, check=False)
      first = proc.stdout.strip().splitlines()[0] if proc.stdout.strip() else ""
      out["nvidia_smi"] = first
      if first:
        out["nvidia_driver"] = first.split(",")[1].strip()
    except (OSError, subprocess.SubprocessError, IndexError):
      pass
  return out


# --------------------------------------------------------------------------- budget


class Budget:
  """Time left, training runs asked to stop before the end, a watchdog that cuts off the rest."""

  def __init__(self, seconds: float, soft_margin: float, report: Report):
    self.end = START + seconds
    self.soft_end = self.end - soft_margin
    self.report = report
    self.current = None
    self._stop_watch = threading.Event()
    if time.monotonic() >= self.end - HARD_MARGIN_S:  # spent already (start-up, a tiny budget)
      self._cut_off()
    threading.Thread(target=self._watchdog, daemon=True).start()

  def _watchdog(self):
    while time.monotonic() < self.end - HARD_MARGIN_S:
      if self._stop_watch.wait(0.25):
        return
    self._cut_off()

  def _cut_off(self):
    """Writes what there is and ends the process (a compile cannot be interrupted otherwise)."""
    # Kept until the process ends, so the main thread writes no more (if it holds the lock
    # longer than this, the write below goes ahead without it and is retried on a clash).
    self.report.lock.acquire(timeout=HARD_MARGIN_S / 2)  # pylint: disable=consider-using-with
    self.report.data["status"] = "stopped by the budget"
    if self.current:
      self.report.data["skipped"].append({"measurement": self.current,
                                          "reason": "cut off by the budget while it ran (nothing of it kept)"})
    for _ in range(3):  # the main thread may add a key while the JSON is written: try again
      try:
        self.report.write()
        break
      except Exception:  # pylint: disable=broad-except
        time.sleep(0.05)
    print(f"gpu_check: budget of {self.end - START:.0f} s reached during {self.current}; "
          f"wrote {self.report.path}", file=sys.stderr, flush=True)
    os._exit(3)

  def close(self):
    self._stop_watch.set()


class StopWhen:
  """While a training run is in progress: asks it to stop (SIGUSR2, which pah_jax's training loop
  honours at its next chunk end after a checkpoint) once `done()` says so or the budget's soft
  end comes. Outside a run SIGUSR2 is ignored (the handler installed by `main`)."""

  def __init__(self, budget: Budget, done=None):
    self.budget, self.done, self.reason = budget, done, None
    self._quit = threading.Event()
    self._thread = threading.Thread(target=self._watch, daemon=True)

  def _watch(self):
    while not self._quit.wait(0.2 if self.reason is None else 1.0):
      if self.reason is None:
        if self.done is not None and self.done():
          self.reason = "planned"
        elif time.monotonic() >= self.budget.soft_end:
          self.reason = "budget"
      if self.reason is not None:
        # Again every second until the run ends: a request that came before the loop installed
        # its handler went to main's (which ignores it), and one during a run that already has one
        # goes the same way, so repeating is harmless.
        os.kill(os.getpid(), signal.SIGUSR2)

  def __enter__(self):
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._quit.set()
    self._thread.join()


# --------------------------------------------------------------------------- measurements


class Check:
  def __init__(self, args, sizes: dict, report: Report):
    from experiments import benchmark  # pylint: disable=g-import-not-at-top

    self.args, self.sizes, self.report, self.bench = args, sizes, report, benchmark
    self.budget = None  # set by main
    self.tmp = tempfile.mkdtemp(prefix="pah_gpu_check_")

  # ----- helpers

  def bench_args(self, *, stem, batch_size, dtype, small_map_convs=None, steps=1, warmup=1, repeats=1, extra=()):
    """experiments/benchmark.py's arguments for these sizes."""
    s = self.sizes
    argv = ["--width", str(s["width"]), "--stem", stem, "--batch-size", str(batch_size), "--num-tasks",
            str(s["num_tasks"]), "--classes-per-task", str(s["classes_per_task"]), "--image-size",
            str(s["image_size"]), "--steps", str(steps), "--warmup", str(warmup), "--repeats", str(repeats),
            "--config", f"model.dtype={dtype}"]
    if small_map_convs:
      argv += ["--config", f"model.small_map_convs={small_map_convs}"]
    if self.args.peak_tflops:
      argv += ["--peak-tflops", str(self.args.peak_tflops)]
    return self.bench.parse_args(argv + [str(x) for x in extra])

  def config(self, bargs):
    from pah_jax import config_check  # pylint: disable=g-import-not-at-top

    config = self.bench.official_config(bargs)
    config_check.validate(config)
    return config

  def note_peak(self, after: str):
    """The highest peak so far: the device allocator's (it cannot be reset, so it is the
    process's), or on a CPU the process's peak RSS since benchmark.py last reset it."""
    nbytes, source = self.bench.jax_peak_memory()
    with self.report.lock:
      old = self.report.data.get("peak_device_memory") or {}
      if nbytes >= (old.get("bytes") or 0):
        self.report.data["peak_device_memory"] = {"bytes": int(nbytes), "source": source, "after": after}

  def run(self, name: str, fn, estimate_key: str | None = None):
    """Runs one measurement if its estimate fits the budget; records a skip or an error."""
    if name.split(":")[0] in self.args.skip:
      self.report.skip(name, "--skip")
      return None
    estimate = self.sizes["estimates_s"][estimate_key or name]
    left = self.budget.soft_end - time.monotonic()
    if left < estimate:
      self.report.skip(name, f"about {estimate:.0f} s needed, {max(left, 0):.0f} s of the budget left")
      return None
    print(f"{name} (about {estimate:.0f} s; {left:.0f} s left) ...", flush=True)
    self.budget.current = name
    t0 = time.monotonic()
    try:
      return fn()
    except Exception as e:  # pylint: disable=broad-except
      tb = traceback.format_exc()
      print(tb, file=sys.stderr, flush=True)
      with self.report.lock:
        self.report.data["errors"].append({"measurement": name, "error": f"{type(e).__name__}: {e}"[:500],
                                           "traceback_tail": tb[-3000:]})
        self.report.write()
      return None
    finally:
      self.budget.current = None
      print(f"{name}: {time.monotonic() - t0:.1f} s", flush=True)
      gc.collect()

  def _workdir(self, name):
    path = os.path.join(self.tmp, name)
    if self.args.keep_workdirs:
      print(f"  {name} workdir: {path}", flush=True)
    return path

  def _cleanup(self, path):
    if not self.args.keep_workdirs:
      shutil.rmtree(path, ignore_errors=True)

  # ----- sequence

  def sequence(self):
    from pah_jax import errors  # pylint: disable=g-import-not-at-top
    from pah_jax import models  # pylint: disable=g-import-not-at-top

    s = self.sizes["sequence"]
    workdir = self._workdir("sequence")
    bargs = self.bench_args(stem="imagenet", batch_size=s["batch_size"], dtype="float32", extra=[
        "--epochs", s["epochs"], "--sequence-batch-size", s["batch_size"], "--train-per-task", s["train_per_task"],
        "--test-per-task", s["test_per_task"], "--sequence-workdir", os.path.join(workdir, "run")])
    config = self.config(bargs)
    os.makedirs(workdir, exist_ok=True)
    self.bench.reset_peak_rss()
    t0 = time.perf_counter()
    tempdir, tempfile.tempdir = tempfile.tempdir, workdir  # sequence_row's data file: into our workdir
    try:
      with StopWhen(self.budget) as stop:
        try:
          row = self.bench.sequence_row(bargs, config)
          stopped = False
        except errors.Stopped:
          stopped = True
    finally:
      tempfile.tempdir = tempdir
    if stopped:  # what the finished tasks' checkpoints say
      ends = self.bench._task_end_seconds(bargs.sequence_workdir)  # pylint: disable=protected-access
      per_task = [ends[t] - ends.get(t - 1, 0.0) for t in range(bargs.num_tasks) if t in ends]
      row = {"data": "synthetic", "total_seconds": max(ends.values()) if ends else None,
             "wall_seconds_in_process": time.perf_counter() - t0, "per_task_seconds": per_task,
             "first_task_seconds": per_task[0] if per_task else None, "epochs": s["epochs"],
             "batch_size": s["batch_size"], "train_images_per_task": s["train_per_task"],
             "test_images_per_task": s["test_per_task"],
             "steps_per_task": s["epochs"] * (s["train_per_task"] // s["batch_size"])}
      if len(per_task) > 1:
        row["later_tasks_mean_seconds"] = statistics.mean(per_task[1:])
      row["peak_memory_bytes"], row["peak_memory_source"] = self.bench.jax_peak_memory()
    row.update({"stopped": stopped, "stop_reason": stop.reason if stopped else None, "num_tasks": bargs.num_tasks,
                "tasks_done": len(row.get("per_task_seconds") or []), "width": bargs.width, "stem": bargs.stem,
                "small_map_convs": models.resolve_small_map_convs(config.model.small_map_convs)})
    row.pop("workdir", None)
    if row.get("first_task_seconds") is not None and row.get("later_tasks_mean_seconds") is not None:
      # Every compile happens in the first task (step, epoch loop, begin_task, evaluation).
      row["compile_seconds_estimate"] = max(row["first_task_seconds"] - row["later_tasks_mean_seconds"], 0.0)
    if not stopped and row.get("total_seconds") is not None:
      row["target_two_minutes_met"] = row["total_seconds"] <= 120.0
    self.note_peak("sequence")
    self.report.set("sequence", row)
    self._cleanup(workdir)
    return row

  # ----- steps

  def step_pair(self, group: str, mode: str):
    """finetune_chunk and pah_chunk (experiments/benchmark.py's rows) for one step group and one
    small_map_convs, timed round-robin, with XLA's FLOP count where the group asks for it."""
    import jax  # pylint: disable=g-import-not-at-top
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    import numpy as np  # pylint: disable=g-import-not-at-top

    from pah_jax import sharding  # pylint: disable=g-import-not-at-top

    b = self.bench
    g = self.sizes["steps"][group]
    bargs = self.bench_args(stem=g["stem"], batch_size=g["batch_size"], dtype=g["dtype"], small_map_convs=mode,
                            steps=g["steps"], warmup=1, repeats=g["repeats"])
    config = self.config(bargs)
    timers, facts = {}, {}
    for name in ("finetune_chunk", "pah_chunk"):
      gc.collect()
      b.reset_peak_rss()
      t0 = time.perf_counter()
      if name == "finetune_chunk":
        method, step, state, mesh = b._finetune_setup(bargs, config)  # pylint: disable=protected-access
      else:
        method, _, step, state, mesh = b._pah_setup(bargs, config)  # pylint: disable=protected-access
      flops = None
      if g["count_flops"]:  # the loop's step on one batch, as benchmark.py's step rows count it
        x, y = sharding.replicate(b.synthetic_batch(np.random.default_rng(bargs.seed + 1), bargs.batch_size,
                                                    bargs.image_size, bargs.classes_per_task), mesh)
        flops = b.flops_of(jax.jit(step, donate_argnums=0), state, x, y,
                           jnp.asarray(bargs.num_tasks - 1, jnp.int32))
      timers[name], facts[name] = b._chunk_row(bargs, method, step, state, mesh)  # pylint: disable=protected-access
      del state
      facts[name]["flops_per_step"] = flops
      facts[name]["peak_memory_bytes"], facts[name]["peak_memory_source"] = b.jax_peak_memory()
      print(f"  {group} {mode} {name}: set up, compiled and warmed up in {time.perf_counter() - t0:.1f} s", flush=True)
    timings = b.time_rows(timers, bargs.repeats)
    rows = {}
    for name, timing in timings.items():
      row = b.summarize(timing, bargs.batch_size, jax_row=True)
      row.update({k: (v() if callable(v) else v) for k, v in facts[name].items()})
      rows[name] = row
      print(f"  {group} {mode} {name}: {1e3 * row['seconds_per_step']:.2f} ms/step", flush=True)
    del timers
    out = {"settings": {"batch_size": bargs.batch_size, "stem": bargs.stem, "dtype": g["dtype"],
                        "width": bargs.width, "small_map_convs": mode, "steps": bargs.steps, "repeats": bargs.repeats,
                        "task_id": bargs.num_tasks - 1, "loop": rows["pah_chunk"].get("loop")},
           "rows": rows, "ratios": b.ratios(rows)}
    if g["count_flops"] and all(rows[n].get("flops_per_step") for n in rows):
      machine = self.report.data["machine"]
      peak = b._peak_flops(bargs, machine["device_kind"], g["dtype"])  # pylint: disable=protected-access
      if peak:  # XLA counts the global program: every device's peak together
        peak *= machine["device_count"]
      rates = {n: rows[n]["flops_per_step"] / rows[n]["seconds_per_step"] for n in rows}
      out["flop_rates"] = {"peak_flops": peak,
                           "flops_counted_by": "XLA cost analysis of the step lowered for CPU (benchmark.flops_of)",
                           **{f"{n}_flops_per_second": r for n, r in rates.items()},
                           **{f"{n}_utilisation": (r / peak if peak else None) for n, r in rates.items()}}
    self.note_peak(f"steps:{group}:{mode}")
    with self.report.lock:
      self.report.data["steps"].setdefault(group, {})[mode] = out
      both = self.report.data["steps"][group]
      if all(m in both for m in SMALL_MAP_CONVS):
        t = {m: {n: both[m]["rows"][n]["seconds_per_step"] for n in ("finetune_chunk", "pah_chunk")}
             for m in SMALL_MAP_CONVS}
        both["comparison"] = {
            "pah_chunk_matmul_over_conv": t["matmul"]["pah_chunk"] / t["conv"]["pah_chunk"],
            "finetune_chunk_matmul_over_conv": t["matmul"]["finetune_chunk"] / t["conv"]["finetune_chunk"],
            "faster_for_pah": min(SMALL_MAP_CONVS, key=lambda m: t[m]["pah_chunk"])}
      self.report.write()
    return out

  # ----- torch

  def torch(self):
    import torch  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import

    b, t = self.bench, self.sizes["torch"]
    bargs = self.bench_args(stem=t["stem"], batch_size=t["batch_size"], dtype=t["dtype"], steps=t["steps"],
                            warmup=t["warmup"], repeats=t["repeats"], extra=["--torch-steps", t["steps"]])
    config = self.config(bargs)
    prepared = b.prepare_torch(bargs, config)
    timers = {name: timer for name, (timer, _) in prepared.items()}
    timings = b.time_rows(timers, bargs.repeats)
    by_threads = {}
    for name, timing in timings.items():
      row = b.summarize(timing, bargs.batch_size, jax_row=False)
      row.update(prepared[name][1])
      by_threads.setdefault(str(row["threads"]), {})[name.rsplit("_", 1)[0]] = row
    del timers, prepared
    best = min(by_threads.values(), key=lambda pair: pair["torch_official"]["seconds_per_step"])
    out = {"device": best["torch_official"]["device"], "batch_size": bargs.batch_size, "stem": bargs.stem,
           "dtype": t["dtype"], "width": bargs.width, "task_id": bargs.num_tasks - 1, "rows": best,
           "by_threads": by_threads, "torch_versions": torch_versions(),
           "torch_official_over_torch_finetune_step_time": (best["torch_official"]["seconds_per_step"]
                                                            / best["torch_finetune"]["seconds_per_step"]),
           "pah_chunk_over_torch_official_throughput": {}}
    for mode in SMALL_MAP_CONVS:  # against the same-sized PAH training path measured above
      pah = _get(self.report.data, "steps", "imagenet_fp32", mode, "rows", "pah_chunk")
      if pah and t["batch_size"] == self.sizes["steps"]["imagenet_fp32"]["batch_size"]:
        out["pah_chunk_over_torch_official_throughput"][mode] = (pah["images_per_second"]
                                                                 / best["torch_official"]["images_per_second"])
    self.report.set("torch", out)
    return out

  # ----- parallel seeds

  def parallel_seeds(self):
    from pah_jax import errors  # pylint: disable=g-import-not-at-top
    from pah_jax import train  # pylint: disable=g-import-not-at-top

    s, p = self.sizes["sequence"], self.sizes["parallel_seeds"]
    n_seeds, n_tasks = p["seeds"], min(p["tasks"], self.sizes["num_tasks"])
    workdir = self._workdir("parallel_seeds")
    bargs = self.bench_args(stem="imagenet", batch_size=s["batch_size"], dtype="float32", extra=[
        "--epochs", s["epochs"], "--sequence-batch-size", s["batch_size"], "--train-per-task", s["train_per_task"],
        "--test-per-task", s["test_per_task"]])
    config = self.config(bargs).copy_and_resolve_references()
    config.train.epochs, config.train.batch_size = s["epochs"], s["batch_size"]
    config.train.keep_checkpoints = n_tasks + 2
    os.makedirs(workdir, exist_ok=True)
    npz = os.path.join(workdir, "synthetic.npz")
    self.bench.write_synthetic_npz(npz, bargs)
    config.data.name, config.data.path = "npz", npz
    steps_per_task = s["epochs"] * (s["train_per_task"] // s["batch_size"])

    def run(count):
      seeds = list(range(count))
      dirs = train.seed_workdirs(os.path.join(workdir, f"seeds_{count}"), seeds)
      ckpts = os.path.join(dirs[0], "checkpoints")

      def done():  # the n_tasks-th task's end checkpoint is on disk
        try:
          return any(name.isdigit() and int(name) >= n_tasks * steps_per_task for name in os.listdir(ckpts))
        except OSError:
          return False

      t0 = time.perf_counter()
      # Stopped as planned, or by the budget: the finished tasks' checkpoints say how long they took.
      with StopWhen(self.budget, done if n_tasks < bargs.num_tasks else None) as stop, \
          contextlib.suppress(errors.Stopped):
        train.train_seeds(config, seeds, dirs)
      ends = self.bench._task_end_seconds(dirs[0])  # pylint: disable=protected-access
      per_task = [ends[t] - ends.get(t - 1, 0.0) for t in range(bargs.num_tasks) if t in ends][:n_tasks]
      return {"per_task_seconds": per_task, "wall_seconds": time.perf_counter() - t0,
              "stopped_by": stop.reason}

    reference = (self.report.data.get("sequence") or {}).get("per_task_seconds") or []
    if len(reference) >= 2:
      one = {"per_task_seconds": reference[:n_tasks], "source": "the sequence measurement (1 seed)"}
    else:  # no 1-seed sequence to compare with: run one on the same schedule
      one = {**run(1), "source": "a 1-seed run here (the sequence was not measured)"}
    many = run(n_seeds)
    out = {"seeds": n_seeds, "tasks_planned": n_tasks, "num_tasks": bargs.num_tasks, "epochs": s["epochs"],
           "batch_size": s["batch_size"], "steps_per_task": steps_per_task,
           "per_task_seconds": many["per_task_seconds"], "wall_seconds": many["wall_seconds"],
           "stopped_by": many["stopped_by"], "one_seed_per_task_seconds": one["per_task_seconds"],
           "one_seed_source": one["source"]}
    later = min(len(many["per_task_seconds"]), len(one["per_task_seconds"]))
    if later >= 2:  # the same later tasks (1..), compiles left out
      t_many = statistics.mean(many["per_task_seconds"][1:later])
      t_one = statistics.mean(one["per_task_seconds"][1:later])
      out.update({"later_tasks_compared": list(range(1, later)), "later_task_seconds": t_many,
                  "one_seed_later_task_seconds": t_one, "later_task_time_ratio": t_many / t_one,
                  "seed_tasks_per_second_gain": n_seeds * t_one / t_many})
    self.note_peak("parallel_seeds")
    self.report.set("parallel_seeds", out)
    self._cleanup(workdir)
    return out


def torch_versions() -> dict:
  import torch  # pylint: disable=g-import-not-at-top

  out = {"torch": torch.__version__, "cuda": torch.version.cuda}
  try:
    out["cudnn"] = torch.backends.cudnn.version()
    if torch.cuda.is_available():
      out["device"] = torch.cuda.get_device_name(0)
  except Exception:  # pylint: disable=broad-except
    pass
  return out


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
  args = parse_args(argv)
  # Room for PyTorch next to JAX in one process (as the H100 runs in docs/performance.md): JAX
  # allocates as it needs instead of taking 75% of the device at start.
  os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  if args.smoke:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_backend_optimization_level" not in flags:  # compiles dominate at toy sizes
      os.environ["XLA_FLAGS"] = f"{flags} --xla_backend_optimization_level=0".strip()
  sizes = SMOKE if args.smoke else FULL
  started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
  data = {"check": "experiments.gpu_check", "command": " ".join([sys.executable, "-m", "experiments.gpu_check",
                                                                  *(argv if argv is not None else sys.argv[1:])]),
          "out": args.out, "started_utc": started, "smoke": args.smoke, "budget_s": args.budget_s,
          "status": "running", "sizes": sizes,
          "env": {k: os.environ.get(k) for k in ("XLA_FLAGS", "XLA_PYTHON_CLIENT_PREALLOCATE", "JAX_PLATFORMS",
                                                 "JAX_COMPILATION_CACHE_DIR", "CUDA_VISIBLE_DEVICES")},
          "wheels": None, "skipped": [], "errors": [], "steps": {}}
  report = Report(args.out, data)
  # From here on the budget's watchdog guards the process (imports and the device's start too).
  budget = Budget(args.budget_s, SOFT_MARGIN_S["smoke" if args.smoke else "full"], report)
  if args.wheels:
    if not os.path.isdir(args.wheels):
      report.set("status", f"could not start: --wheels {args.wheels}: no such directory")
      print(f"error: --wheels {args.wheels}: no such directory", file=sys.stderr)
      return 2
    data["wheels"] = add_wheels(args.wheels)
  data["imports"] = module_origins()
  if data["imports"].get("missing"):
    data["status"] = "could not start: missing modules"
    report.write()
    print("error: missing " + "; ".join(data["imports"]["missing"]) + ". For ml-collections: "
          "pip download --no-deps --only-binary=:all: --dest wheels ml-collections, then --wheels wheels",
          file=sys.stderr)
    return 2
  # Outside a training run a stop request is nobody's: ignore it (StopWhen may send one late).
  signal.signal(signal.SIGUSR2, lambda signum, frame: None)
  data["versions"] = versions()
  data["machine"] = device_facts()
  check = Check(args, sizes, report)
  data["machine"].update(check.bench.machine_info())
  m = data["machine"]
  print(f"gpu_check: {m['device_kind']} x {m['device_count']} ({m['backend']}), jax {data['versions'].get('jax')}, "
        f"cuda {data['versions'].get('cuda')}, budget {args.budget_s:.0f} s{' (smoke)' if args.smoke else ''}",
        flush=True)
  check.budget = budget
  report.write()

  check.run("sequence", check.sequence)
  for group in sizes["steps"]:
    for mode in SMALL_MAP_CONVS:
      check.run(f"steps:{group}:{mode}", lambda group=group, mode=mode: check.step_pair(group, mode),
                estimate_key=f"steps:{group}")
  if importlib.util.find_spec("torch") is None and "torch" not in args.skip:
    report.skip("torch", "torch is not importable here")
  else:
    check.run("torch", check.torch)
  check.run("parallel_seeds", check.parallel_seeds)

  with report.lock:
    budget.close()
    # Installed extras get used (plots, TensorBoard events, progress bars); none is needed.
    data["imports"]["not_needed_but_imported"] = sorted(n for n in NOT_NEEDED if sys.modules.get(n) is not None)
    data["status"] = "complete" if not data["errors"] else "finished with errors"
    report.write()
  if not args.keep_workdirs:
    shutil.rmtree(check.tmp, ignore_errors=True)
  print(markdown(data))
  print(f"wrote {args.out} and {report.md_path} in {time.monotonic() - START:.0f} s", flush=True)
  return 1 if data["errors"] else 0


if __name__ == "__main__":
  sys.exit(main())
