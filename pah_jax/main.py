"""Command line: python -m pah_jax.main --config=configs/cifar.py [--workdir=runs/cifar] [--config.key=value]

(or `pah-jax ...` once the package is installed). The only module that reads flags. A mistake
the user can fix (bad flag or config value, missing data, unusable workdir) ends with one
`error: ...` line on stderr and exit code 2.
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
_WORKDIR = flags.DEFINE_string("workdir", None,
                                "Directory for checkpoints, metrics and results (default: runs/<config name>).")


def _fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def _last_line(e: BaseException) -> str:
  text = str(e).strip()
  return text.splitlines()[-1].strip() if text else type(e).__name__


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


def _config_path(argv: list[str]) -> str | None:
  """The file named by --config=FILE[:ARG] (or --config FILE), if given."""
  for i, arg in enumerate(argv[1:], start=1):
    if arg.startswith("--config="):
      return arg.split("=", 1)[1].split(":", 1)[0]
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1].split(":", 1)[0]
  return None


def _let_config_imports_resolve(path: str) -> None:
  """Configs build on each other by import (`from configs import default`). When the config
  lies in a package folder (one with `__init__.py`, like the checkout's `configs/`), the
  folder above it goes on sys.path, so the config loads from any working directory and with
  an installed (not editable) pah_jax."""
  folder = os.path.dirname(os.path.abspath(path))
  if os.path.isfile(os.path.join(folder, "__init__.py")):
    root = os.path.dirname(folder)
    if root not in sys.path:
      sys.path.insert(0, root)


def default_workdir(config_path: str) -> str:
  """runs/<config file name without .py>, under the current directory."""
  return os.path.join("runs", os.path.splitext(os.path.basename(config_path))[0])


def main(argv: list[str]) -> None:
  config_path = _config_path(argv)
  if config_path is not None:
    if not os.path.isfile(config_path):
      _fail(f"config file {config_path} not found: pass e.g. --config=configs/fashion_mnist.py")
    _let_config_imports_resolve(config_path)
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
  workdir = _WORKDIR.value
  if not workdir:
    workdir = default_workdir(config_path)
    print(f"workdir: {workdir} (no --workdir given)", flush=True)
  logging.set_verbosity(logging.WARNING)
  try:
    config_check.validate(config)  # before JAX is imported: mistakes answer in a second
    from pah_jax import train  # pylint: disable=g-import-not-at-top

    train.use_compilation_cache(config.train.compilation_cache)
    if config.train.parallel_seeds > 1:
      _train_parallel_seeds(config, workdir)
    else:
      train.train_and_evaluate(config, workdir)
  except UserError as e:
    _fail(str(e))
  except Stopped as e:
    print(str(e), file=sys.stderr)
    sys.exit(128 + e.signum)


def run() -> None:
  """The `pah-jax` console script."""
  main(sys.argv)


if __name__ == "__main__":
  run()
