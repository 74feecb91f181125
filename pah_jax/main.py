"""Command line: python -m pah_jax.main --config=configs/cifar.py --workdir=runs/cifar [--config.key=value]

The only module that reads flags. A mistake the user can fix (bad flag or config value,
missing data, unusable workdir) ends with one `error: ...` line on stderr and exit code 2.
"""

import os
import sys

from absl import flags
from absl import logging
from ml_collections import config_flags

from pah_jax import config_check
from pah_jax.errors import Stopped
from pah_jax.errors import UserError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file, e.g. configs/cifar.py.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")


def _fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def _last_line(e: BaseException) -> str:
  text = str(e).strip()
  return text.splitlines()[-1].strip() if text else type(e).__name__


def _train_parallel_seeds(config, workdir: str) -> None:
  """Seeds seed .. seed+n-1 in one program, each in <workdir>/seed_<n>; prints mean +- std."""
  from pah_jax import metrics  # pylint: disable=g-import-not-at-top
  from pah_jax import parallel_seeds  # pylint: disable=g-import-not-at-top

  seeds = [config.seed + i for i in range(config.train.parallel_seeds)]
  results = parallel_seeds.train_seeds(config, seeds, parallel_seeds.seed_workdirs(workdir, seeds))
  for name, key in (("AA", "average_accuracy"), ("FM", "forgetting")):
    values = [r[key] for r in results]
    if all(v is not None for v in values):
      mean, std = metrics.mean_std(values)
      print(f"{name} over seeds {seeds}: {mean:.2f} +- {std:.2f}  ({', '.join(f'{v:.2f}' for v in values)})")


def main(argv: list[str]) -> None:
  for arg in argv[1:]:
    if arg.startswith("--config=") and not os.path.isfile(arg.split("=", 1)[1].split(":", 1)[0]):
      _fail(f"config file {arg.split('=', 1)[1]} not found: pass e.g. --config=configs/fashion_mnist.py")
  try:
    flags.FLAGS(argv)
  except flags.Error as e:  # unknown flag or config key, unparsable value
    _fail(f"{_last_line(e)} (configs/default.py lists every config key)")
  except Exception as e:  # pylint: disable=broad-except
    # A config file that fails to load arrives wrapped: report the innermost cause.
    while e.__cause__ is not None:
      e = e.__cause__
    if isinstance(e, (KeyError, AttributeError)) and e.args:  # --config.<unknown key>=...
      _fail(f"config has no key {str(e.args[0]).strip(chr(39) + chr(34))}: configs/default.py lists every key")
    _fail(f"cannot load the config: {type(e).__name__}: {_last_line(e)}")
  config = _CONFIG.value
  if config is None:
    _fail("--config is required, e.g. --config=configs/fashion_mnist.py")
  if not _WORKDIR.value:
    _fail("--workdir is required: a directory for checkpoints and results, e.g. --workdir=runs/demo")
  logging.set_verbosity(logging.WARNING)
  try:
    config_check.validate(config)  # before JAX is imported: mistakes answer in a second
    from pah_jax import train  # pylint: disable=g-import-not-at-top

    train.use_compilation_cache(config.train.compilation_cache)
    if config.train.parallel_seeds > 1:
      _train_parallel_seeds(config, _WORKDIR.value)
    else:
      train.train_and_evaluate(config, _WORKDIR.value)
  except UserError as e:
    _fail(str(e))
  except Stopped as e:
    print(str(e), file=sys.stderr)
    sys.exit(128 + e.signum)


if __name__ == "__main__":
  main(sys.argv)
