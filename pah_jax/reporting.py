"""Everything a run writes for humans: the final table, results.json, plots, metric logs.

R is the K x K accuracy matrix in percent (see `metrics.py`); NaN = not measured.
"""

import importlib
import json
import math
import os
import sys
import tempfile
import time

import numpy as np

# The keys results.json must carry (docs/cli.md, "The workdir"); `extra` may not overwrite them.
_RESULT_KEYS = ("accuracy_matrix", "average_accuracy", "forgetting", "bwt", "config",
                "seconds")


def _matrix(R):
  R = np.asarray(R, dtype=np.float64)
  if R.ndim != 2 or R.shape[0] != R.shape[1] or R.shape[0] == 0:
    raise ValueError(f"accuracy matrix must be square and non-empty, got shape {R.shape}")
  return R


def format_table(R, summary, task_names=None):
  """Aligned text table of R (rows "after task i", columns "task j", '-' for NaN),
  followed by the AA, FM and BWT lines, all with 2 decimals.

  `summary` is `metrics.summarize(R)`; `task_names` optionally replaces "task j".
  """
  R = _matrix(R)
  K = R.shape[0]
  names = list(task_names) if task_names is not None else [f"task {j}" for j in range(K)]
  if len(names) != K:
    raise ValueError(f"got {len(names)} task names for {K} tasks")
  header = [""] + [str(n) for n in names]
  rows = [[f"after {names[i]}"] + ["-" if math.isnan(v) else f"{v:.2f}" for v in R[i]]
          for i in range(K)]
  widths = [max(len(r[c]) for r in [header] + rows) for c in range(K + 1)]

  def line(cells):
    # Row label left-aligned, numbers right-aligned so the decimal points line up.
    return "  ".join([cells[0].ljust(widths[0])] +
                     [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]).rstrip()

  out = [line(header)] + [line(r) for r in rows] + [""]
  for label, key in (("AA ", "average_accuracy"), ("FM ", "forgetting"), ("BWT", "bwt")):
    out.append(f"{label} = {_fmt(summary[key])}")
  return "\n".join(out)


def _fmt(value):
  if value is None:  # a metric stored as null (joint training has no forgetting)
    return "-"
  value = float(value)
  return "-" if math.isnan(value) else f"{value:.2f}"


def jsonable(obj):
  """Converts obj to plain JSON types; NaN/inf become None so the JSON stays strict."""
  if hasattr(obj, "to_dict"):  # ml_collections.ConfigDict and friends
    obj = obj.to_dict()
  if isinstance(obj, dict):
    return {str(k): jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple, np.ndarray)):
    return [jsonable(v) for v in obj]
  if isinstance(obj, (bool, np.bool_)):
    return bool(obj)
  if isinstance(obj, (int, np.integer)):
    return int(obj)
  if isinstance(obj, (float, np.floating)):
    return float(obj) if math.isfinite(obj) else None
  if obj is None or isinstance(obj, str):
    return obj
  # Anything else in a config (a class, an enum, a path) is kept as its readable form.
  return str(obj)


def write_results_json(path, R, summary, config_dict, seconds, extra=None):
  """Writes results.json atomically (a temporary file, then os.replace),
  so a crash never leaves a half-written file that a resumed run would trust.

  Keys: accuracy_matrix (K lists of K numbers, NaN -> null), average_accuracy,
  forgetting, bwt (from `summary`), config, seconds, then the keys of `extra`.
  The file is strict JSON (no NaN/Infinity tokens).
  """
  extra = dict(extra or {})
  clash = sorted(set(extra) & set(_RESULT_KEYS))
  if clash:
    raise ValueError(f"extra may not overwrite result keys {clash}")
  data = {
      "accuracy_matrix": _matrix(R),
      "average_accuracy": summary["average_accuracy"],
      "forgetting": summary["forgetting"],
      "bwt": summary["bwt"],
      "config": config_dict,
      "seconds": seconds,
      **extra,
  }
  text = json.dumps(jsonable(data), indent=2, allow_nan=False) + "\n"
  atomic_write(path, text)


def atomic_write(path, text):
  """Writes `text` to `path` so a reader never sees a partial file (temporary file + rename)."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  # The temporary file lives in the same directory so os.replace is a same-filesystem rename.
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
  try:
    # mkstemp creates the file private (0600); results are meant to be shared and read.
    os.chmod(tmp, 0o644)
    with os.fdopen(fd, "w") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


_noted_missing = set()


def _optional(module: str, without: str):
  """`module` imported, or None, with a note on stderr the first time this process misses it.

  Plots (matplotlib), TensorBoard events (tensorboardX) and the progress bar (tqdm) are extras
  of a run: where they are not installed (a bare accelerator image with only JAX's stack),
  training, evaluation, checkpoints, results.json and metrics.jsonl are written all the same.
  """
  try:
    return importlib.import_module(module)
  except ImportError:
    if module not in _noted_missing:
      _noted_missing.add(module)
      print(f"note: {module.split('.')[0]} is not installed: {without}", file=sys.stderr, flush=True)
    return None


def _figure(figsize):
  # A bare Figure renders with the Agg canvas without going through pyplot, so plotting
  # needs no display, changes no global backend and keeps no figure alive afterwards.
  from matplotlib.figure import Figure
  return Figure(figsize=figsize, dpi=100, layout="constrained")


def _matplotlib():
  if _optional("matplotlib.figure", "no accuracy plots (PNG)") is None:
    return None
  import matplotlib
  return matplotlib


def plot_accuracy_matrix(path, R):
  """PNG heatmap of R (0-100 %), each measured cell annotated with its value; NaN blank.
  Without matplotlib installed, writes nothing and returns False."""
  R = _matrix(R)
  matplotlib = _matplotlib()
  if matplotlib is None:
    return False
  K = R.shape[0]
  # The figure grows with K so each cell stays ~0.6 inch and fits its 8-point label.
  size = max(4.0, 0.6 * K + 2.0)
  fig = _figure((size + 1.0, size))
  ax = fig.add_subplot()
  cmap = matplotlib.colormaps["viridis"].with_extremes(bad="white")
  im = ax.imshow(np.ma.masked_invalid(R), cmap=cmap, vmin=0.0, vmax=100.0)
  fig.colorbar(im, ax=ax, label="accuracy (%)")
  for i in range(K):
    for j in range(K):
      if not math.isnan(R[i, j]):
        # Dark text on the bright (high) end of viridis, white on the dark end.
        ax.text(j, i, f"{R[i, j]:.1f}", ha="center", va="center", fontsize=8,
                color="black" if R[i, j] > 60 else "white")
  ax.set_xticks(range(K))
  ax.set_yticks(range(K))
  ax.set_xlabel("evaluated on task j")
  ax.set_ylabel("after training task i")
  ax.set_title("Accuracy matrix R[i][j]")
  fig.savefig(path, format="png")
  return True


def plot_task_curves(path, R):
  """PNG with one line per task j: accuracy R[i][j] over i >= j (x = after task i).
  Without matplotlib installed, writes nothing and returns False."""
  R = _matrix(R)
  K = R.shape[0]
  matplotlib = _matplotlib()
  if matplotlib is None:
    return False
  fig = _figure((max(6.0, 0.5 * K + 4.0), 4.5))
  ax = fig.add_subplot()
  # The default cycle has 10 colours; beyond that tasks would share colours.
  colors = matplotlib.colormaps["tab10" if K <= 10 else "tab20" if K <= 20 else "turbo"]
  for j in range(K):
    x = np.arange(j, K)
    y = R[j:, j]
    keep = ~np.isnan(y)
    color = colors(j) if K <= 20 else colors(j / (K - 1))
    ax.plot(x[keep], y[keep], marker="o", markersize=3, color=color, label=f"task {j}")
  ax.set_xticks(range(K))
  ax.set_xlim(-0.5, K - 0.5)
  ax.set_ylim(0.0, 102.0)  # headroom so markers at 100 % are not clipped
  ax.set_xlabel("after training task i")
  ax.set_ylabel("accuracy (%)")
  ax.set_title("Accuracy of each task over the sequence")
  ax.grid(alpha=0.3)
  # Outside the axes, so the legend never hides a curve.
  ax.legend(fontsize="small", ncol=(K + 19) // 20, loc="center left",
            bbox_to_anchor=(1.01, 0.5))
  fig.savefig(path, format="png")
  return True


class MetricWriter:
  """Scalars to TensorBoard (tensorboardX) and, one JSON line per call, to
  `<logdir>/metrics.jsonl`, so metrics are readable without TensorBoard.

  Reopening an existing logdir (a resumed run) appends: TensorBoard gets a new events
  file next to the old ones and metrics.jsonl grows.
  Each line is {"step": int, "time": unix seconds, <name>: value, ...}; NaN -> null.
  Without tensorboardX installed, only metrics.jsonl is written.
  """

  def __init__(self, logdir):
    tensorboard = _optional("tensorboardX", "no TensorBoard events (metrics.jsonl only)")
    os.makedirs(logdir, exist_ok=True)
    self.logdir = logdir
    # tensorboardX names events files by the second and truncates an existing one, so a
    # writer reopened within the same second would erase the first; a unique suffix
    # keeps every session's file.
    self._tb = (None if tensorboard is None else
                tensorboard.SummaryWriter(logdir, filename_suffix=f".{os.getpid()}.{time.time_ns()}"))
    self._jsonl = open(os.path.join(logdir, "metrics.jsonl"), "a")  # noqa: SIM115 (closed by close())

  def scalars(self, step, values):
    """Logs the dict `values` ({name: number}) at integer `step`."""
    step = int(step)
    values = {str(k): float(v) for k, v in values.items()}
    if self._tb is not None:
      for name, value in values.items():
        self._tb.add_scalar(name, value, step)
    record = {"step": step, "time": time.time(), **values}
    self._jsonl.write(json.dumps(jsonable(record), allow_nan=False) + "\n")
    # Flushed per call so a killed run keeps every line it logged.
    self._jsonl.flush()

  def flush(self):
    if self._tb is not None:
      self._tb.flush()
    self._jsonl.flush()

  def close(self):
    if not self._jsonl.closed:
      if self._tb is not None:
        self._tb.close()
      self._jsonl.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def read_results(path):
  with open(path) as f:
    return json.load(f)


class NoWriter:
  """MetricWriter's interface, writing nothing: the processes of a multi-process run other
  than process 0."""

  def scalars(self, step, values):
    pass

  def flush(self):
    pass

  def close(self):
    pass


class Progress:
  """A live progress bar per task (tqdm, on stderr; none without tqdm installed) and a one-line
  report per finished task; nothing with show=False (processes other than a run's process 0)."""

  def __init__(self, total_tasks, show: bool = True):
    self.total_tasks = total_tasks
    self.show = show
    self.bar = None

  def start_task(self, task, total_steps, done=0):
    self.close()
    if not self.show:
      return
    # imported here so library users without a terminal pay nothing
    tqdm = _optional("tqdm", "no progress bar")
    if tqdm is not None:
      self.bar = tqdm.tqdm(total=total_steps, initial=done, desc=f"task {task + 1}/{self.total_tasks}",
                           unit="step", dynamic_ncols=True, leave=False)

  def advance(self, steps, epoch, metrics):
    if self.bar is None:
      return
    self.bar.update(steps)
    self.bar.set_postfix(epoch=epoch + 1, loss=f"{metrics['loss']:.3f}",
                         acc=f"{100 * metrics['train_accuracy']:.1f}")

  def end_task(self, task, accuracies, summary):
    self.close()
    if not self.show:
      return
    accs = " ".join(f"{a:.1f}" for a in accuracies)
    print(f"task {task + 1}/{self.total_tasks} done: test accuracy [{accs}]  "
          f"AA {summary['average_accuracy']:.2f}  FM {summary['forgetting']:.2f}", flush=True)

  def close(self):
    if self.bar is not None:
      self.bar.close()
      self.bar = None
