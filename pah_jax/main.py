"""Command line: python -m pah_jax.main --config=configs/cifar.py --workdir=runs/cifar [--config.key=value]

The only module that reads flags. A mistake the user can fix (bad flag or config value,
missing data, unusable workdir) ends with one `error: ...` line on stderr and exit code 2.
"""

import sys

from absl import flags
from absl import logging
from ml_collections import config_flags

from pah_jax import config_check
from pah_jax.errors import UserError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file, e.g. configs/cifar.py.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")


def _fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def main(argv: list[str]) -> None:
  try:
    flags.FLAGS(argv)
  except (flags.Error, FileNotFoundError, KeyError, AttributeError, ValueError, TypeError) as e:
    first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    _fail(f"{first_line} (see --helpfull for the flags)")
  if _CONFIG.value is None:
    _fail("--config is required, e.g. --config=configs/fashion_mnist.py")
  if not _WORKDIR.value:
    _fail("--workdir is required: a directory for checkpoints and results, e.g. --workdir=runs/demo")
  logging.set_verbosity(logging.WARNING)
  try:
    config_check.validate(_CONFIG.value)  # before JAX is imported: mistakes answer in a second
    from pah_jax import train  # pylint: disable=g-import-not-at-top

    train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except UserError as e:
    _fail(str(e))


if __name__ == "__main__":
  main(sys.argv)
