"""Sweeps: a config x a grid of overrides x seeds, each run in its own workdir, on one machine or
a SLURM cluster.

  python -m pah_jax.sweep --config=configs/fashion_mnist.py --workdir=runs/lr --seeds=0,1,2 \\
      --grid=optim.lr_backbone=1e-4,3e-4 --grid=method=pah,finetune [--executor=local --max-parallel=2]
  python -m pah_jax.sweep --workdir=runs/lr --status

Runs: the cartesian product of the grid's values (a "point"), times the seeds. Run (point,
seed) lives in DIR/<point>/seed_<n> and holds exactly what `python -m pah_jax.main` writes
for that config, so any run can be resumed, re-read or inspected alone. Grid values are parsed
as `--config.KEY=VALUE` is. DIR/sweep.json records the config, the grid and the seeds: rerunning
the same command runs only what is missing or unfinished (resuming the unfinished from their
checkpoints), and a different config or grid in the same DIR is refused.

Executors (`--executor`):
  inline          in this process, one run after another;
  local           up to --max-parallel processes at once, each pinned to one GPU
                  (CUDA_VISIBLE_DEVICES) when there are GPUs, else on the CPU;
  slurm           a submitit job array on a SLURM cluster (--slurm-* flags; logs under
                  DIR/logs/submitit); the command returns once the jobs are queued;
  submitit-local  submitit's local executor: the slurm path's code (pickled jobs, requeue on
                  preemption) run on this machine, waited for.
With --parallel-seeds a point's seeds are one job that trains them as one program
(`train.train_seeds`), else every (point, seed) is a job.

Preemption and time limits: a job's process saves a checkpoint on SIGUSR2 (SLURM's signal
before the time limit and on preemption, which submitit asks for) or SIGTERM, then stops; under
submitit the job is requeued and resumes from that checkpoint, ending exactly as an
uninterrupted run. A crashed run writes its error line to DIR/logs/<point>/seed_<n>.error and
the sweep goes on.

`--status` reads only the files under DIR (so it works while jobs run, from any machine that
shares the file system): every run as done (with AA and FM), running, stopped (a checkpoint,
no process: rerun the sweep), failed (with its error line) or queued (nothing yet).
DIR/table.md and DIR/table.json (per point: mean ± std of AA and FM over the finished seeds;
`runs`: one entry per run) are written from the runs' results.json files at the end of a sweep
and on every --status.

In code: `open_sweep` records a `Sweep` built in code (grid already parsed) as `create` does,
and `run_jobs` runs (sweep, point, seeds) jobs of several sweeps on one executor, calling back
after each job (the experiments' tables are sweeps run so).
"""

import contextlib
import dataclasses
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback

from absl import flags
from ml_collections import config_flags

from pah_jax import cli
from pah_jax import config_check
from pah_jax import overrides
from pah_jax.errors import Stopped
from pah_jax.errors import UserError

EXECUTORS = ("inline", "local", "submitit-local", "slurm")
MANIFEST = "sweep.json"

# Its own flag set, not absl's global one, which pah_jax.main defines --config and --workdir in:
# a process may import both (the experiments' tables use this module as a library).
_FLAGS = flags.FlagValues()
_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file of every run, e.g. configs/fashion_mnist.py.",
                                          flag_values=_FLAGS, lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The sweep's directory: one workdir per run below it.",
                               flag_values=_FLAGS)
_SEEDS = flags.DEFINE_list("seeds", None, "Seeds of every grid point, e.g. 0,1,2 (default: the config's seed).",
                           flag_values=_FLAGS)
_GRID = flags.DEFINE_multi_string("grid", [], "KEY=V1,V2,...: values of one config key (repeatable: the "
                                  "cartesian product). Values are parsed as --config.KEY=VALUE.", flag_values=_FLAGS)
_EXECUTOR = flags.DEFINE_enum("executor", "inline", EXECUTORS, "Where the runs execute.", flag_values=_FLAGS)
_MAX_PARALLEL = flags.DEFINE_integer("max-parallel", 0, "Runs at once (local: default one per GPU, else 1; "
                                     "slurm: the job array's parallelism, default unlimited).", flag_values=_FLAGS)
_PARALLEL_SEEDS = flags.DEFINE_bool("parallel-seeds", False, "Each grid point's seeds as one job that trains "
                                    "them as one program (train.train_seeds).", flag_values=_FLAGS)
_STATUS = flags.DEFINE_bool("status", False, "Print every run's state and write the tables; run nothing.",
                            flag_values=_FLAGS)
_SLURM_PARTITION = flags.DEFINE_string("slurm-partition", "", "SLURM partition (slurm executor).", flag_values=_FLAGS)
_SLURM_TIME = flags.DEFINE_integer("slurm-time", 240, "Time limit of each job, minutes (slurm executor). A job "
                                   "that reaches it saves, is requeued and resumes.", flag_values=_FLAGS)
_SLURM_GPUS = flags.DEFINE_integer("slurm-gpus-per-job", 1, "GPUs per job (slurm executor).", flag_values=_FLAGS)
_SLURM_MEM = flags.DEFINE_integer("slurm-mem", 0, "Memory per job, GB (slurm executor; 0 = the cluster's default).",
                                  flag_values=_FLAGS)
_JOB = flags.DEFINE_string("job", None, "Internal (local executor): run the job POINT:SEED[,SEED] of --workdir.",
                           flag_values=_FLAGS)


# --------------------------------------------------------------------------- the sweep's runs


@dataclasses.dataclass(frozen=True)
class Point:
  """One combination of the grid's values: ((key, value), ...) in the grid's order."""

  values: tuple

  @property
  def name(self) -> str:
    """Its directory: key=value pairs joined by '__' ("base" for an empty grid)."""
    if not self.values:
      return "base"
    return "__".join(f"{key}={_text(value)}" for key, value in self.values).replace(os.sep, "_")

  def as_dict(self) -> dict:
    return dict(self.values)


def _text(value) -> str:
  return repr(value) if isinstance(value, float) else str(value)


@dataclasses.dataclass(frozen=True)
class Sweep:
  """What DIR/sweep.json records: the base config (as JSON), the grid and the seeds."""

  directory: str
  config: dict
  grid: tuple  # ((key, (value, ...)), ...)
  seeds: tuple
  parallel_seeds: bool = False

  @property
  def points(self) -> list[Point]:
    keys = [key for key, _ in self.grid]
    return [Point(tuple(zip(keys, combo))) for combo in itertools.product(*[values for _, values in self.grid])]

  def jobs(self) -> list[tuple[Point, tuple]]:
    """(point, seeds) per job: every seed alone, or a point's seeds together."""
    if self.parallel_seeds:
      return [(p, self.seeds) for p in self.points]
    return [(p, (s,)) for p in self.points for s in self.seeds]

  def workdir(self, point: Point, seed: int) -> str:
    return os.path.join(self.directory, point.name, f"seed_{seed}")

  def log_path(self, point: Point, seed: int, suffix: str) -> str:
    return os.path.join(self.directory, "logs", point.name, f"seed_{seed}.{suffix}")

  def run_config(self, point: Point, seed: int):
    """The config of run (point, seed): the base config, the point's values, the seed."""
    import ml_collections  # pylint: disable=g-import-not-at-top

    config = ml_collections.ConfigDict(self.config)
    _add_missing_keys(config)
    for key, value in point.values:
      _set(config, key, value)
    config.seed = seed
    return config

  def manifest(self) -> dict:
    return {"config": self.config, "grid": [[k, list(v)] for k, v in self.grid], "seeds": list(self.seeds),
            "parallel_seeds": self.parallel_seeds}

  @classmethod
  def read(cls, directory: str) -> "Sweep":
    path = os.path.join(directory, MANIFEST)
    if not os.path.isfile(path):
      raise UserError(f"{directory} holds no sweep ({MANIFEST} is missing): start one with --config")
    with open(path) as f:
      m = json.load(f)
    return cls(directory, m["config"], tuple((k, tuple(v)) for k, v in m["grid"]), tuple(m["seeds"]),
               m.get("parallel_seeds", False))


def _add_missing_keys(config) -> None:
  """Keys added to pah_jax after the sweep recorded its config get the value that reproduces
  what its earlier runs did (config_check.ADDED_KEYS), so a new run of an old sweep builds."""
  for key, value in config_check.ADDED_KEYS.items():
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
      node = node.get(part) if node is not None and part in node else None
    if node is not None and leaf not in node:
      node[leaf] = value


def _set(config, key: str, value) -> None:
  *parents, leaf = key.split(".")
  node = config
  for part in parents:
    node = node[part]
  node[leaf] = value


def parse_grid(config, items) -> tuple:
  """--grid KEY=V1,V2 items -> ((key, (value, ...)), ...), each value parsed as the command line
  parses --config.KEY=VALUE (a key given twice is an error)."""
  grid, seen = [], set()
  for item in items:
    key, sep, text = item.partition("=")
    if not sep or not key or not text:
      raise UserError(f"--grid {item}: expected KEY=V1,V2,..., e.g. optim.lr_backbone=1e-4,3e-4")
    if key in seen:
      raise UserError(f"--grid {key} is given twice: list all its values in one --grid")
    if key == "seed":
      raise UserError("--grid seed: give seeds with --seeds")
    seen.add(key)
    values = tuple(overrides.parse_value(config, key, v, option="--grid") for v in text.split(","))
    if len(set(map(repr, values))) != len(values):
      raise UserError(f"--grid {item}: a value is listed twice")
    grid.append((key, values))
  return tuple(grid)


def create(config, directory: str, grid_items, seeds, parallel_seeds: bool) -> Sweep:
  """The sweep of `config` x grid x seeds in `directory`: written to DIR/sweep.json, or checked
  against the one there (another config or grid is refused; new seeds join)."""
  from pah_jax import reporting  # pylint: disable=g-import-not-at-top

  grid = parse_grid(config, grid_items)
  seeds = tuple(int(s) for s in seeds) if seeds else (config.seed,)
  return open_sweep(Sweep(os.path.abspath(directory), reporting.jsonable(config), grid, seeds, parallel_seeds))


def open_sweep(sweep: Sweep) -> Sweep:
  """`create` for a sweep built in code (its grid already parsed): checks every run's config,
  then writes DIR/sweep.json or checks the sweep against the one there (another config or grid
  is refused; new seeds join). Returns the sweep as recorded: the recorded config, every seed."""
  import ml_collections  # pylint: disable=g-import-not-at-top

  seeds, directory = tuple(sweep.seeds), sweep.directory
  if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
    raise UserError(f"--seeds must be distinct non-negative integers (got {','.join(map(str, seeds))})")
  for point in sweep.points:  # every run's config must be valid before anything starts
    config_check.validate(sweep.run_config(point, seeds[0]))
  path = os.path.join(directory, MANIFEST)
  if os.path.isfile(path):
    old = Sweep.read(directory)
    if old.grid != sweep.grid:
      raise UserError(f"sweep directory {directory} was made for another grid ({_grid_text(old.grid)}): "
                      "use the same --grid or a new --workdir")
    try:
      config_check.check_same_config(old.config, ml_collections.ConfigDict(sweep.config))
    except UserError as e:
      raise UserError(f"sweep directory {directory}: {e}") from None
    sweep = dataclasses.replace(sweep, config=old.config, seeds=old.seeds + tuple(s for s in seeds if s not in
                                                                                  old.seeds))
  os.makedirs(directory, exist_ok=True)
  _write_json(path, sweep.manifest())
  return sweep


def _grid_text(grid) -> str:
  return " ".join(f"{k}={','.join(map(_text, v))}" for k, v in grid) or "no grid"


def _write_json(path: str, obj) -> None:
  from pah_jax import reporting  # pylint: disable=g-import-not-at-top

  reporting.atomic_write(path, json.dumps(obj, indent=2) + "\n")


# --------------------------------------------------------------------------- one job


def run_job(sweep: Sweep, point: Point, seeds: tuple) -> bool:
  """Trains (or resumes, or re-reads) the runs of `point` for `seeds` in this process. A failure
  is written to each run's .error file (its last line) and .log (the traceback), and returns
  False; a stop request (SIGINT/SIGTERM/SIGUSR2, after saving) raises `Stopped`."""
  from pah_jax import train  # pylint: disable=g-import-not-at-top

  for s in seeds:
    os.makedirs(os.path.dirname(sweep.log_path(point, s, "error")), exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
      os.remove(sweep.log_path(point, s, "error"))
  try:
    config = sweep.run_config(point, seeds[0])
    train.use_compilation_cache(config.train.compilation_cache)
    if len(seeds) == 1:
      train.train_and_evaluate(config, sweep.workdir(point, seeds[0]))
    else:
      train.train_seeds(config, seeds, [sweep.workdir(point, s) for s in seeds])
    return True
  except Stopped:
    raise
  except Exception as e:  # pylint: disable=broad-except
    line = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {cli.last_line(e)}"
    for s in seeds:
      with open(sweep.log_path(point, s, "error"), "w") as f:
        f.write(f"error: {line}\n")
      with open(sweep.log_path(point, s, "log"), "a") as f:
        traceback.print_exc(file=f)
    print(f"{point.name} seeds {','.join(map(str, seeds))}: error: {line}", file=sys.stderr, flush=True)
    return False


class SubmititJob:
  """A sweep job as submitit runs it. On SLURM's time-limit or preemption signal (USR2) the
  training loop saves a checkpoint and stops (`checkpointing.StopRequests`); then submitit's
  own handler, re-sent the signal, calls `checkpoint`, which resubmits this same job, and
  requeues it: the requeued job resumes from the checkpoint."""

  def __call__(self, directory: str, point_name: str, seeds: tuple) -> bool:
    sweep = Sweep.read(directory)
    point = {p.name: p for p in sweep.points}[point_name]
    try:
      return run_job(sweep, point, tuple(seeds))
    except Stopped as e:
      handler = signal.getsignal(e.signum)  # submitit's again, now that training has saved
      if callable(handler):
        handler(e.signum, None)
      raise

  def checkpoint(self, *args, **kwargs):
    import submitit  # pylint: disable=g-import-not-at-top

    return submitit.helpers.DelayedSubmission(SubmititJob(), *args, **kwargs)


# --------------------------------------------------------------------------- executors


def _pending(sweep: Sweep) -> list[tuple[Point, tuple]]:
  """The jobs with a run that has no results.json yet."""
  return [(p, seeds) for p, seeds in sweep.jobs()
          if not all(os.path.isfile(os.path.join(sweep.workdir(p, s), "results.json")) for s in seeds)]


def _bind(sweep: Sweep | None, jobs) -> list[tuple[Sweep, Point, tuple, str]]:
  """(sweep, point, seeds, name) per job. `jobs`: (point, seeds) pairs of `sweep`, or with
  sweep=None (sweep, point, seeds) triples of one or several sweeps (a table made of several
  sweeps runs them in one go), named by their directories."""
  if sweep is not None:
    jobs = [(sweep, p, seeds) for p, seeds in jobs]
  return [(s, p, tuple(seeds), f"{p.name if sweep is not None else os.path.relpath(os.path.join(s.directory, p.name))}"
           f" seeds {','.join(map(str, seeds))}") for s, p, seeds in jobs]


def run_inline(sweep: Sweep | None, jobs, done=None) -> None:
  """The jobs one after another in this process; `done()` after each."""
  for s, point, seeds, name in _bind(sweep, jobs):
    print(f"== {name}", flush=True)
    run_job(s, point, seeds)
    if done is not None:
      done()


def visible_gpus() -> list[str]:
  """GPU ids for CUDA_VISIBLE_DEVICES: the caller's own list, else those nvidia-smi lists."""
  if os.environ.get("CUDA_VISIBLE_DEVICES", "").strip():
    return [g for g in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if g.strip()]
  if shutil.which("nvidia-smi") is None:
    return []
  try:
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
  except (OSError, subprocess.SubprocessError):
    return []
  return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def run_local(sweep: Sweep | None, jobs, max_parallel: int, done=None) -> None:
  """Each job in its own process (`--job`), at most `max_parallel` at once, each pinned to a
  free GPU when there are GPUs; `done()` after each ends. SIGINT/SIGTERM are passed on: every
  process saves and stops."""
  gpus = visible_gpus()
  slots = max_parallel or max(len(gpus), 1)
  free = list(gpus)
  queue, running = _bind(sweep, jobs), {}  # running: process -> (name, gpu, log file)
  try:
    while queue or running:
      while queue and len(running) < slots and (free or not gpus):
        s, point, seeds, name = queue.pop(0)
        gpu = free.pop(0) if gpus else None
        env = dict(os.environ)
        if gpu is None:
          env["JAX_PLATFORMS"] = env.get("JAX_PLATFORMS", "cpu")
        else:
          env["CUDA_VISIBLE_DEVICES"] = gpu
        log_path = s.log_path(point, seeds[0], "log")
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        log = open(log_path, "a")  # noqa: SIM115 (closed when its process ends)
        cmd = [sys.executable, "-m", "pah_jax.sweep", f"--workdir={s.directory}",
               f"--job={point.name}:{','.join(map(str, seeds))}"]
        running[subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)] = (name, gpu, log)
        print(f"== {name} started{'' if gpu is None else f' on GPU {gpu}'} (log: {os.path.relpath(log_path)})",
              flush=True)
      time.sleep(0.2)
      for proc in [p for p in running if p.poll() is not None]:
        name, gpu, log = running.pop(proc)
        log.close()
        if gpu is not None:
          free.append(gpu)
        print(f"== {name} {'done' if proc.returncode == 0 else f'exit code {proc.returncode}'}", flush=True)
        if done is not None:
          done()
  except KeyboardInterrupt:
    for proc in running:
      proc.send_signal(signal.SIGTERM)
    for proc in running:
      proc.wait()
    raise


@dataclasses.dataclass(frozen=True)
class SlurmSettings:
  """What each SLURM job asks for (the --slurm-* flags)."""

  partition: str = ""
  time_min: int = 240  # a job that reaches it saves, is requeued and resumes
  gpus_per_job: int = 1
  mem_gb: int = 0  # 0: the cluster's default
  max_parallel: int = 0  # jobs of the array running at once; 0: no limit of ours


def run_submitit(sweep: Sweep | None, jobs, executor_name: str, slurm: SlurmSettings, wait: bool,
                 directory: str | None = None, done=None):
  """The jobs as submitit jobs (one job array on SLURM), or on submitit's local executor, which
  starts them all at once; with `wait`, `done()` after each ends. submitit's files go to
  <directory>/logs/submitit (default: the sweep's directory). Returns the submitit jobs."""
  if executor_name == "slurm" and shutil.which("sbatch") is None:
    raise UserError("--executor=slurm needs SLURM's sbatch on PATH (this machine has none): run on a "
                    "cluster's login node, or use --executor=local")
  import submitit  # pylint: disable=g-import-not-at-top

  directory = directory or sweep.directory
  folder = os.path.join(directory, "logs", "submitit")
  executor = submitit.AutoExecutor(folder=folder, cluster="slurm" if executor_name == "slurm" else "local")
  params = {"timeout_min": slurm.time_min, "gpus_per_node": slurm.gpus_per_job if executor_name == "slurm" else 0,
            "tasks_per_node": 1, "nodes": 1, "name": f"pah_jax_sweep_{os.path.basename(directory)}"}
  if executor_name == "slurm":
    # USR2 two minutes before the time limit: the job saves, stops and is requeued.
    params.update(slurm_signal_delay_s=120, slurm_array_parallelism=slurm.max_parallel or 256)
    if slurm.partition:
      params["slurm_partition"] = slurm.partition
    if slurm.mem_gb:
      params["mem_gb"] = slurm.mem_gb
  executor.update_parameters(**params)
  with executor.batch():
    submitted = [executor.submit(SubmititJob(), s.directory, p.name, seeds) for s, p, seeds, _ in _bind(sweep, jobs)]
  print(f"submitted {len(submitted)} jobs ({', '.join(j.job_id for j in submitted[:4])}"
        f"{', ...' if len(submitted) > 4 else ''}); logs under {folder}", flush=True)
  if wait:
    for job in submitted:
      try:
        job.result()
      except Exception as e:  # pylint: disable=broad-except
        print(f"job {job.job_id}: {cli.last_line(e)}", file=sys.stderr, flush=True)
      if done is not None:
        done()
  return submitted


def run_jobs(sweep: Sweep | None, jobs, executor: str, max_parallel: int = 0, slurm: SlurmSettings = SlurmSettings(),
             directory: str | None = None, done=None) -> None:
  """`jobs` (pairs of `sweep`, or triples: see `_bind`) on `executor` (EXECUTORS): inline, local
  and submitit-local return when every job has ended, calling `done()` after each; slurm returns
  once the jobs are queued. `max_parallel`: local's processes at once, slurm's array parallelism."""
  if executor == "inline":
    run_inline(sweep, jobs, done)
  elif executor == "local":
    run_local(sweep, jobs, max_parallel, done)
  elif executor in EXECUTORS:
    run_submitit(sweep, jobs, executor, dataclasses.replace(slurm, max_parallel=max_parallel), executor != "slurm",
                 directory, done)
  else:
    raise UserError(f"--executor={executor}: expected one of {', '.join(EXECUTORS)}")


# --------------------------------------------------------------------------- status and tables


def run_status(sweep: Sweep, point: Point, seed: int) -> dict:
  """One run's state, from its files: done / running / failed / stopped / queued."""
  from pah_jax import checkpointing  # pylint: disable=g-import-not-at-top

  workdir = sweep.workdir(point, seed)
  entry = {"point": point.as_dict(), "seed": seed, "status": "queued", "average_accuracy": None,
           "forgetting": None, "plasticity": None, "accuracy_matrix": None}
  results = os.path.join(workdir, "results.json")
  if os.path.isfile(results):
    with open(results) as f:
      r = json.load(f)
    from pah_jax import metrics  # pylint: disable=g-import-not-at-top

    return entry | {"status": "done", "average_accuracy": r["average_accuracy"], "forgetting": r["forgetting"],
                    "plasticity": metrics.plasticity(r["accuracy_matrix"]), "accuracy_matrix": r["accuracy_matrix"]}
  if checkpointing.lock_is_live(os.path.join(workdir, "lock")):
    return entry | {"status": "running"}
  error = sweep.log_path(point, seed, "error")
  if os.path.isfile(error):
    with open(error) as f:
      return entry | {"status": "failed", "error": f.read().strip()}
  checkpoints = os.path.join(workdir, "checkpoints")
  if os.path.isdir(checkpoints) and any(d.isdigit() for d in os.listdir(checkpoints)):
    return entry | {"status": "stopped"}
  return entry


def table(sweep: Sweep) -> dict:
  """Per point: mean ± std of AA, FM and plasticity over its finished seeds; every run's entry."""
  from pah_jax import metrics  # pylint: disable=g-import-not-at-top

  runs = [run_status(sweep, p, s) for p in sweep.points for s in sweep.seeds]
  rows = []
  for p in sweep.points:
    done = [r for r in runs if r["point"] == p.as_dict() and r["status"] == "done"]
    row = {"point": p.as_dict(), "name": p.name, "seeds_done": len(done), "seeds": len(sweep.seeds)}
    for key in ("average_accuracy", "forgetting", "plasticity"):
      values = [r[key] for r in done if r[key] is not None]
      mean, std = metrics.mean_std(values) if values else (None, None)
      row[key] = {"mean": mean, "std": std}
    rows.append(row)
  return {"grid": [[k, list(v)] for k, v in sweep.grid], "seeds": list(sweep.seeds), "rows": rows, "runs": runs}


def _cell(stat: dict) -> str:
  if stat["mean"] is None:
    return "missing"
  return f"{stat['mean']:.2f} ± {stat['std']:.2f}"


def table_markdown(t: dict) -> str:
  keys = [k for k, _ in t["grid"]]
  header = keys + ["AA", "FM", "plasticity", "seeds done"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for row in t["rows"]:
    cells = [_text(row["point"][k]) for k in keys] + [_cell(row[m]) for m in ("average_accuracy", "forgetting",
                                                                                 "plasticity")]
    cells.append(f"{row['seeds_done']}/{row['seeds']}")
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def write_tables(sweep: Sweep) -> dict:
  t = table(sweep)
  _write_json(os.path.join(sweep.directory, "table.json"), t)
  with open(os.path.join(sweep.directory, "table.md"), "w") as f:
    f.write(f"Seeds {','.join(map(str, sweep.seeds))}; mean ± std over the finished seeds. AA, FM and "
            "plasticity (mean accuracy on each task right after learning it) in %.\n\n")
    f.write(table_markdown(t))
  return t


def print_status(sweep: Sweep) -> dict:
  t = write_tables(sweep)
  counts = {}
  for r in t["runs"]:
    counts[r["status"]] = counts.get(r["status"], 0) + 1
    point = Point(tuple(r["point"].items())).name
    detail = ""
    if r["status"] == "done":
      fm = "-" if r["forgetting"] is None else f"{r['forgetting']:.2f}"
      detail = f"AA {r['average_accuracy']:.2f}  FM {fm}"
    elif r["status"] == "failed":
      detail = r["error"]
    print(f"{point}  seed {r['seed']}: {r['status']}  {detail}".rstrip())
  summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
  print(f"{summary}; tables: {os.path.join(sweep.directory, 'table.md')}")
  return t


# --------------------------------------------------------------------------- command line


def _job(spec: str) -> None:
  sweep = Sweep.read(_WORKDIR.value)
  name, _, seeds = spec.rpartition(":")
  points = {p.name: p for p in sweep.points}
  if name not in points:
    raise UserError(f"--job {spec}: no point {name} in this sweep")
  if not run_job(sweep, points[name], tuple(int(s) for s in seeds.split(","))):
    sys.exit(1)


def main(argv: list[str]) -> None:
  cli.parse_flags(argv, _FLAGS, usage=__doc__)
  try:
    if not _WORKDIR.value:
      raise UserError("--workdir is required: the sweep's directory")
    if _JOB.value:
      _job(_JOB.value)
      return
    if _STATUS.value:
      print_status(Sweep.read(_WORKDIR.value))
      return
    config = _CONFIG.value
    if config is None:
      raise UserError("--config is required to start or continue a sweep (or pass --status)")
    if _MAX_PARALLEL.value < 0:
      raise UserError("--max-parallel must be >= 0")
    config_check.validate(config)
    sweep = create(config, _WORKDIR.value, _GRID.value, _SEEDS.value, _PARALLEL_SEEDS.value)
    jobs = _pending(sweep)
    total = len(sweep.points) * len(sweep.seeds)
    print(f"sweep {sweep.directory}: {len(sweep.points)} points x {len(sweep.seeds)} seeds = {total} runs; "
          f"{len(jobs)} job(s) to run ({_EXECUTOR.value}) on {socket.gethostname()}", flush=True)
    slurm = SlurmSettings(partition=_SLURM_PARTITION.value, time_min=_SLURM_TIME.value,
                          gpus_per_job=_SLURM_GPUS.value, mem_gb=_SLURM_MEM.value)
    run_jobs(sweep, jobs, _EXECUTOR.value, _MAX_PARALLEL.value, slurm)
    if _EXECUTOR.value == "slurm":
      print(f"follow it with: python -m pah_jax.sweep --workdir={_WORKDIR.value} --status")
      return
    print_status(sweep)
  except UserError as e:
    cli.fail(str(e))
  except Stopped as e:
    print(str(e), file=sys.stderr)
    sys.exit(128 + e.signum)
  except KeyboardInterrupt:
    print("stopped: rerun the same command to continue the sweep", file=sys.stderr)
    sys.exit(130)


def run() -> None:
  """The `pah-jax-sweep` console script."""
  main(sys.argv)


if __name__ == "__main__":
  run()
