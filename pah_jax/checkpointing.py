"""Everything a run keeps in its workdir, behind one small class over Orbax's CheckpointManager.

workdir/
  checkpoints/<step>/{state,meta}  Orbax: the TrainState's arrays packed into one flat array per
                                   dtype + JSON metadata (where the run stands, accuracy matrix,
                                   wall time, config, class order, and the packing: each
                                   array's path, dtype and shape)
  tensorboard/                     scalars (also as metrics.jsonl)
  results.json, *.png              written when the last task is done

Checkpoints are written by Orbax atomically (a temporary directory renamed when complete),
synchronously, so a finished task's checkpoint is on disk before the next task starts.

Why packed: Orbax's cost grows with the number of arrays, not only their bytes, and a PAH state
has about 350 arrays (parameters, two optimiser states, the frozen old model). One array per
dtype makes a checkpoint cost its bytes, written uncompressed (docs/performance.md, "Before
checkpoint packing"). `read_state` unpacks a checkpoint without a
template.
"""

import contextlib
import dataclasses
import logging
import os
import signal
import socket

import jax
import numpy as np
import orbax.checkpoint as ocp

from pah_jax.errors import Stopped
from pah_jax.errors import UserError

# Bumped whenever the checkpoint layout changes; a checkpoint of another layout is refused.
LAYOUT_VERSION = 3  # 2: TrainState.extra holds each method's own state; 3: arrays packed per dtype


@dataclasses.dataclass(frozen=True)
class Position:
  """Where training resumes: task index, epoch within the task, batch within the epoch."""

  task: int
  epoch: int
  batch: int


class Checkpointer:
  """Owns the workdir layout and the Orbax CheckpointManager."""

  def __init__(self, workdir: str, keep: int = 2):
    if not workdir:
      raise UserError("--workdir is required: a directory for checkpoints and results, e.g. --workdir=runs/cifar")
    self.workdir = os.path.abspath(workdir)
    if os.path.exists(self.workdir) and not os.path.isdir(self.workdir):
      raise UserError(f"workdir {workdir} is a file, not a directory: pass another --workdir")
    try:
      os.makedirs(self.workdir, exist_ok=True)
    except OSError as e:
      raise UserError(f"cannot create workdir {workdir} ({e.strerror}): pass a writable --workdir") from None
    if not os.access(self.workdir, os.W_OK | os.X_OK):
      raise UserError(f"workdir {workdir} is not writable: pass a writable --workdir")
    # cleanup_tmp_directories: a write cut short by a kill leaves a temporary directory; drop it.
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False,
                                           cleanup_tmp_directories=True)
    # Uncompressed: float parameters barely compress (8% here) and zstd doubled the save time.
    handlers = {"state": ocp.PyTreeCheckpointHandler(use_compression=False), "meta": ocp.JsonCheckpointHandler()}
    self.manager = ocp.CheckpointManager(self.path("checkpoints"), options=options, item_handlers=handlers)
    # Orbax removes leftover temporary directories in a background thread; wait for it, so it
    # neither races other file-system users (TFDS) nor dies noisily when a run exits early.
    getattr(self.manager, "_maybe_await_cleanup_tmp_directory", lambda: None)()

  def path(self, name: str) -> str:
    return os.path.join(self.workdir, name)

  @property
  def results_path(self) -> str:
    return self.path("results.json")

  @property
  def tensorboard_dir(self) -> str:
    return self.path("tensorboard")

  def _restore(self, step: int, **items):
    return self.manager.restore(step, args=ocp.args.Composite(**items))

  def _meta(self, step: int) -> dict:
    meta = self._restore(step, meta=ocp.args.JsonRestore())["meta"]
    if meta.get("layout_version") != LAYOUT_VERSION:
      raise UserError(f"workdir {self.workdir} holds a checkpoint of another pah_jax layout "
                      f"({meta.get('layout_version')}, this version reads {LAYOUT_VERSION}): use a new --workdir")
    return meta

  def _readable_steps(self):
    """Steps newest first; a checkpoint that fails to read is reported, deleted, and skipped,
    so the run falls back to the previous good one and never saves over a good one."""
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        yield step, self._meta(step)
      except UserError:
        raise
      except Exception as e:  # pylint: disable=broad-except
        logging.warning("checkpoint %d in %s is unreadable (%s: %s); falling back to the previous one",
                        step, self.workdir, type(e).__name__, str(e).splitlines()[0] if str(e) else "")
        print(f"warning: checkpoint {step} is unreadable ({type(e).__name__}); using the previous one", flush=True)
        self.manager.delete(step)

  def latest_meta(self) -> dict | None:
    """Metadata of the newest readable checkpoint, or None for a fresh workdir."""
    for _, meta in self._readable_steps():
      return meta
    return None

  def save(self, state, meta: dict) -> None:
    step = int(jax.device_get(state.step))
    packed, packing = pack(state)
    meta = {**meta, "layout_version": LAYOUT_VERSION, "step": step, "packing": packing}
    self.manager.save(step, args=ocp.args.Composite(state=ocp.args.PyTreeSave(packed),
                                                    meta=ocp.args.JsonSave(meta)), force=True)
    self.manager.wait_until_finished()

  def _read_leaves(self, step: int, packing: list) -> list:
    """Checkpoint `step`'s arrays as host arrays, in the order of its `packing`."""
    sizes = {}
    for entry in packing:
      sizes[entry["dtype"]] = sizes.get(entry["dtype"], 0) + int(np.prod(entry["shape"], dtype=np.int64))
    packed = self._restore(step, state=ocp.args.PyTreeRestore(
        restore_args={dtype: ocp.RestoreArgs(restore_type=np.ndarray) for dtype in sizes}))["state"]
    if {dtype: np.shape(x) for dtype, x in packed.items()} != {dtype: (n,) for dtype, n in sizes.items()}:
      raise ValueError("packed arrays do not match the checkpoint's packing")
    return unpack(packed, packing)

  def restore(self, template):
    """(state, meta) of the newest checkpoint whose arrays have the paths, shapes and dtypes of
    `template`'s, placed as `template`'s are; unreadable newer checkpoints are skipped."""
    paths_and_leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    expected = packing_of(paths_and_leaves)
    for step, meta in self._readable_steps():
      if meta.get("packing") != expected:
        raise UserError(f"checkpoint {step} in {self.workdir} holds other arrays than this config's model "
                        f"({_first_difference(meta.get('packing'), expected)}): use a new --workdir")
      try:
        leaves = self._read_leaves(step, meta["packing"])
      except Exception as e:  # pylint: disable=broad-except
        print(f"warning: checkpoint {step} is unreadable ({type(e).__name__}); using the previous one", flush=True)
        self.manager.delete(step)
        continue
      placed = [jax.device_put(x, getattr(t, "sharding", None)) for x, (_, t) in zip(leaves, paths_and_leaves)]
      return jax.tree_util.tree_unflatten(treedef, placed), meta
    raise UserError(f"no readable checkpoint is left in {self.workdir}: use a new --workdir")

  def read_state(self, step: int | None = None) -> tuple[dict, dict]:
    """(arrays, meta) of checkpoint `step` (default: the newest readable), without a template:
    `arrays` maps each array's path (e.g. "params['backbone']['conv_init']['kernel']") to a
    NumPy array. For looking into a run; training resumes through `restore`."""
    for readable, meta in self._readable_steps():
      if step is None or readable == step:
        leaves = self._read_leaves(readable, meta["packing"])
        return {entry["path"]: x for entry, x in zip(meta["packing"], leaves)}, meta
    raise UserError(f"no readable checkpoint {'' if step is None else step} in {self.workdir}")

  @contextlib.contextmanager
  def locked(self):
    """One run per workdir: a lock file naming host and pid. A lock whose process is gone
    (a killed run) is stale and taken over."""
    path = self.path("lock")
    me = f"{socket.gethostname()} {os.getpid()}"
    for _ in range(2):
      try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        if lock_is_live(path):
          with open(path) as f:
            raise UserError(f"workdir {self.workdir} is in use by another run ({f.read().strip()}); "
                            "wait for it or use another --workdir") from None
        os.remove(path)  # stale: its process is gone
        continue
      with os.fdopen(fd, "w") as f:
        f.write(me)
      break
    try:
      yield
    finally:
      with contextlib.suppress(OSError):
        os.remove(path)

  def close(self) -> None:
    self.manager.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def packing_of(paths_and_leaves) -> list[dict]:
  """Path, dtype and shape of every array, in flattening order (what `pack` stores)."""
  return [{"path": jax.tree_util.keystr(path), "dtype": np.dtype(leaf.dtype).name, "shape": list(leaf.shape)}
          for path, leaf in paths_and_leaves]


def pack(tree) -> tuple[dict, list]:
  """One flat host array per dtype of `tree`'s arrays, concatenated in flattening order, and
  the packing that `unpack` needs to split them again."""
  paths_and_leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  leaves = jax.device_get([leaf for _, leaf in paths_and_leaves])
  packing = packing_of(zip([p for p, _ in paths_and_leaves], leaves))
  groups = {}
  for entry, leaf in zip(packing, leaves):
    groups.setdefault(entry["dtype"], []).append(np.ravel(leaf))
  return {dtype: np.concatenate(parts) for dtype, parts in groups.items()}, packing


def unpack(packed: dict, packing: list) -> list:
  """The arrays `pack` packed, in flattening order (views into `packed`)."""
  offsets, leaves = dict.fromkeys(packed, 0), []
  for entry in packing:
    size, start = int(np.prod(entry["shape"], dtype=np.int64)), offsets[entry["dtype"]]
    leaves.append(np.asarray(packed[entry["dtype"]])[start:start + size].reshape(entry["shape"]))
    offsets[entry["dtype"]] = start + size
  return leaves


def _first_difference(stored, expected) -> str:
  stored = stored or []
  for got, want in zip(stored, expected):
    if got != want:
      return (f"{got['path']} {got['dtype']}{got['shape']} where {want['path']} {want['dtype']}{want['shape']} "
              "is expected")
  return f"{len(stored)} arrays where {len(expected)} are expected"


def lock_is_live(path: str) -> bool:
  """Whether the workdir lock file `path` is held by a running process (a lock of another
  host counts as held: its process cannot be checked from here)."""
  try:
    with open(path) as f:
      host, pid = f.read().split()
  except (OSError, ValueError):
    return False  # unreadable or half-written: treat as stale
  if host != socket.gethostname():
    return True  # another machine's run: cannot check, so respect it
  try:
    os.kill(int(pid), 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


class StopRequests:
  """Turns SIGINT/SIGTERM, and SIGUSR2 (the signal a SLURM job asks for before its time limit
  or on preemption: `sbatch --signal=USR2@120`, as submitit does), into a request the training
  loop honours at the next chunk end, after writing a checkpoint. A second signal stops at once."""

  SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)

  def __init__(self):
    self.signum = None
    self._previous = {}

  @property
  def requested(self) -> bool:
    return self.signum is not None

  def _handle(self, signum, frame):
    if self.signum is not None:  # second signal: give up waiting, as the signal would have
      previous = self._previous.get(signum, signal.SIG_DFL)
      if callable(previous):
        previous(signum, frame)
      else:  # the default action (terminate) or ignore
        signal.signal(signum, previous)
        os.kill(os.getpid(), signum)
      return
    self.signum = signum
    print(f"\n{signal.Signals(signum).name}: saving a checkpoint, then stopping (send again to stop now)", flush=True)

  def agree(self) -> bool:
    """Whether a stop was requested in any process of the run (`pah_jax.distributed`); a process
    that got no signal takes the others' request, so all save the same checkpoint and stop.
    Every process must call it at the same points."""
    from pah_jax import distributed  # pylint: disable=g-import-not-at-top

    if distributed.any_process(self.requested) and self.signum is None:
      self.signum = signal.SIGTERM
    return self.requested

  def raise_if_requested(self, position: Position) -> None:
    if self.signum is not None:
      raise Stopped(self.signum, f"stopped by {signal.Signals(self.signum).name} at task {position.task}, "
                    f"epoch {position.epoch}, batch {position.batch}; checkpoint saved: rerun the same command "
                    "to resume")

  def __enter__(self):
    try:
      for sig in self.SIGNALS:
        self._previous[sig] = signal.signal(sig, self._handle)
    except ValueError:  # not the main thread (e.g. a notebook worker): no signal handling
      self._previous = {}
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
