"""Command line: python -m pah_jax.main --config=configs/cifar.py [--workdir=runs/cifar] [--config.key=value]

(or `pah-jax ...` once the package is installed). The only module that reads flags. A mistake
the user can fix (bad flag or config value, missing data, unusable workdir) ends with one
`error: ...` line on stderr and exit code 2. A rerun with the same workdir resumes.

Several processes (hosts) as one run: start the same command in each, under srun, mpirun or on
a TPU slice as it is, elsewhere with --coordinator_address=HOST:PORT --num_processes=N
--process_id=I (`pah_jax.distributed`, docs/distributed.md).
"""

import os
import sys

from absl import flags
from absl import logging
from ml_collections import config_flags

from pah_jax import cli
from pah_jax import config_check
from pah_jax.errors import Stopped
from pah_jax.errors import UserError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file, e.g. configs/cifar.py.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None,
                                "Directory for checkpoints, metrics and results (default: runs/<config name>).")
# Flags, not config keys: every process of a job runs the same config (and resume check).
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "Multi-process run: HOST:PORT of process 0's coordinator service.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-process run: the number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-process run: this process's index, 0..N-1.")


def _train_parallel_seeds(config, workdir: str) -> None:
  """Seeds seed .. seed+n-1 in one program, each in <workdir>/seed_<n>; prints mean +- std."""
  from pah_jax import metrics  # pylint: disable=g-import-not-at-top
  from pah_jax import train  # pylint: disable=g-import-not-at-top

  seeds = [config.seed + i for i in range(config.train.parallel_seeds)]
  results = train.train_seeds(config, seeds, train.seed_workdirs(workdir, seeds))
  for name, key in (("AA", "average_accuracy"), ("FM", "forgetting")):
    values = [r[key] for r in results]
    if all(v is not None for v in values):
      mean, std = metrics.mean_std(values)
      print(f"{name} over seeds {seeds}: {mean:.2f} +- {std:.2f}  ({', '.join(f'{v:.2f}' for v in values)})")


def default_workdir(config_path: str) -> str:
  """runs/<config file name without .py>, under the current directory."""
  return os.path.join("runs", os.path.splitext(os.path.basename(config_path))[0])


def main(argv: list[str]) -> None:
  cli.parse_flags(argv, usage=__doc__)
  config = _CONFIG.value
  if config is None:
    cli.fail("--config is required, e.g. --config=configs/fashion_mnist.py")
  workdir = _WORKDIR.value
  if not workdir:
    workdir = default_workdir(cli.config_path(argv))
    print(f"workdir: {workdir} (no --workdir given)", flush=True)
  logging.set_verbosity(logging.WARNING)
  try:
    config_check.validate(config)  # before JAX is imported: mistakes answer in a second
    from pah_jax import distributed  # pylint: disable=g-import-not-at-top

    distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    from pah_jax import train  # pylint: disable=g-import-not-at-top

    train.use_compilation_cache(config.train.compilation_cache)
    if config.train.parallel_seeds > 1:
      _train_parallel_seeds(config, workdir)
    else:
      train.train_and_evaluate(config, workdir)
  except UserError as e:
    cli.fail(str(e))
  except Stopped as e:
    print(str(e), file=sys.stderr)
    sys.exit(128 + e.signum)


def run() -> None:
  """The `pah-jax` console script."""
  main(sys.argv)


if __name__ == "__main__":
  run()
