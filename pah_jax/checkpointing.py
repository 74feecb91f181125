"""Everything a run keeps in its workdir, behind one small class over Orbax's CheckpointManager.

workdir/
  checkpoints/<step>/{state,meta}  Orbax: the TrainState pytree + JSON metadata (where the run
                                   stands, accuracy matrix, wall time, config, class order)
  tensorboard/                     scalars (also as metrics.jsonl)
  results.json, *.png              written when the last task is done

Checkpoints are written by Orbax atomically (a temporary directory renamed when complete),
synchronously, so a finished task's checkpoint is on disk before the next task starts.
"""

import dataclasses
import os

import jax
import orbax.checkpoint as ocp

from pah_jax.errors import UserError

# Bumped whenever the checkpoint layout changes; a checkpoint of another layout is refused.
LAYOUT_VERSION = 1


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
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False)
    self.manager = ocp.CheckpointManager(self.path("checkpoints"), options=options)

  def path(self, name: str) -> str:
    return os.path.join(self.workdir, name)

  @property
  def results_path(self) -> str:
    return self.path("results.json")

  @property
  def tensorboard_dir(self) -> str:
    return self.path("tensorboard")

  def latest_meta(self) -> dict | None:
    """Metadata of the newest checkpoint, or None for a fresh workdir."""
    step = self.manager.latest_step()
    if step is None:
      return None
    meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    if meta.get("layout_version") != LAYOUT_VERSION:
      raise UserError(f"workdir {self.workdir} holds a checkpoint of another pah_jax layout "
                      f"({meta.get('layout_version')}, this version reads {LAYOUT_VERSION}): use a new --workdir")
    return meta

  def save(self, state, meta: dict) -> None:
    step = int(jax.device_get(state.step))
    meta = {**meta, "layout_version": LAYOUT_VERSION, "step": step}
    self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                    meta=ocp.args.JsonSave(meta)), force=True)
    self.manager.wait_until_finished()

  def restore(self, template):
    """The newest checkpoint's state, with the structure, shapes and dtypes of `template`."""
    step = self.manager.latest_step()
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template)
    return self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))["state"]

  def close(self) -> None:
    self.manager.close()
