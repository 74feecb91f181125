"""One run over several processes (hosts): joining the job, and what the processes agree on.

Every process runs the same program on the same config: it loads the same data, draws the same
permutations and builds the same global `data` mesh over all processes' devices
(`pah_jax.sharding`); the compiled step splits each global batch over those devices, so
gradients and BatchNorm statistics are global and a run on P processes computes what one
process with the same devices would. Process 0 alone writes what a run leaves besides its
checkpoints (results.json, plots, TensorBoard, metrics.jsonl, the workdir lock); checkpoints
are written through Orbax's multi-process support, every process taking part.

`initialize` joins the job before anything else touches JAX: with an explicit coordinator
(`--coordinator_address --num_processes --process_id`), or, with none given, through JAX's
cluster detection when the process was started as one of several by SLURM (`srun`), Open MPI
(`mpirun`) or on a multi-host TPU slice. On CPUs the processes exchange collectives over gloo.
"""

import os

from pah_jax.errors import UserError

# Environment variables that say this process is one of several of a launcher's job.
_CLUSTER_SIZE = (("SLURM_NTASKS", "SLURM (srun)"), ("OMPI_COMM_WORLD_SIZE", "Open MPI"))


def detected_cluster() -> str | None:
  """The launcher that started this process as one of several, or None."""
  for variable, name in _CLUSTER_SIZE:
    try:
      if int(os.environ.get(variable, "1")) > 1:
        return name
    except ValueError:
      continue
  if "," in os.environ.get("TPU_WORKER_HOSTNAMES", ""):
    return "a multi-host TPU slice"
  return None


def check_flags(coordinator_address: str | None, num_processes: int | None, process_id: int | None) -> bool:
  """Whether the flags ask for an explicit multi-process job; UserError for an incomplete or
  inconsistent set."""
  given = [coordinator_address is not None, num_processes is not None, process_id is not None]
  if not any(given):
    return False
  if not all(given):
    raise UserError("--coordinator_address, --num_processes and --process_id go together: give all three "
                    "(or none, under srun, mpirun or on a TPU slice)")
  host, _, port = coordinator_address.rpartition(":")
  if not host or not port.isdigit():
    raise UserError(f"--coordinator_address={coordinator_address} must be HOST:PORT, e.g. 10.0.0.1:12345")
  if num_processes < 1:
    raise UserError(f"--num_processes={num_processes} must be >= 1")
  if not 0 <= process_id < num_processes:
    raise UserError(f"--process_id={process_id} must be in 0..{num_processes - 1}")
  return True


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
  """Joins the multi-process job the flags or the launcher describe; a lone process does nothing.
  Must run before the first JAX computation."""
  explicit = check_flags(coordinator_address, num_processes, process_id)
  if not explicit and detected_cluster() is None:
    return
  import jax  # pylint: disable=g-import-not-at-top

  # CPU devices of several processes exchange collectives over gloo (XLA's default CPU
  # client has none); GPUs and TPUs use their own (NCCL, ICI).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    if explicit:
      jax.distributed.initialize(coordinator_address, num_processes, process_id)
    else:
      jax.distributed.initialize()
  except (RuntimeError, ValueError) as e:
    text = str(e).strip().splitlines()
    raise UserError(f"cannot join the multi-process job ({text[-1] if text else type(e).__name__})") from None


def process_index() -> int:
  import jax  # pylint: disable=g-import-not-at-top

  return jax.process_index()


def is_main() -> bool:
  """Whether this process writes the run's files (process 0; always true for a lone process)."""
  return process_index() == 0


def process_count() -> int:
  import jax  # pylint: disable=g-import-not-at-top

  return jax.process_count()


def any_process(flag: bool) -> bool:
  """Whether `flag` is true in any process: a stop one process was asked for is every process's
  stop, so all save the same checkpoint and leave the job together."""
  if process_count() == 1:
    return flag
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  return bool(np.any(multihost_utils.process_allgather(np.asarray(flag, np.int32))))


def barrier(name: str) -> None:
  """Waits until every process has reached the barrier `name` (a no-op for a lone process)."""
  if process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

    multihost_utils.sync_global_devices(name)
