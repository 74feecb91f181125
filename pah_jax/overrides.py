"""Config overrides for the experiment scripts, parsed as the command line parses them.

`python -m pah_jax.main --config=FILE --config.train.epochs=1` changes a key through
ml_collections' `config_flags`: every `--config.KEY=VALUE` becomes an absl flag whose parser
follows the type of the key's current value (int, float, bool as absl reads booleans, str,
tuple, a dict literal for a whole section). The scripts in experiments/ take the same changes
as `KEY=VALUE` items (`--override`, or the benchmark's `--config`) and apply them here, through
the same machinery, so an override means the same thing in a script and on the command line.

A mistake raises `pah_jax.errors.UserError` with a one-line message; the scripts print it as
`error: ...` and exit with code 2.
"""

import copy
from typing import Any

from absl import flags
import ml_collections
from ml_collections import config_flags
from ml_collections.config_flags import config_path

from pah_jax.errors import UserError

_FLAG = "config"  # the overrides are --config.KEY=VALUE, as in pah_jax.main


def _split(item: str, option: str) -> tuple[str, str]:
  key, sep, text = item.partition("=")
  if not sep or not key or key.startswith("-"):
    raise UserError(f"{option} {item}: expected KEY=VALUE, e.g. train.epochs=1")
  return key, text


def _current(config: ml_collections.ConfigDict, key: str, option: str):
  """The value `key` has in `config` (refusing keys it does not have)."""
  try:
    return config_path.get_value(key, config)
  except (KeyError, AttributeError, IndexError, ValueError):
    raise UserError(f"{option} {key}: config has no key {key} (configs/default.py lists every key)") from None


def _expected(key: str, value) -> str:
  if isinstance(value, ml_collections.ConfigDict):
    return f"{key} is a section: expected a dict literal of its keys"
  name = type(value).__name__
  return f"expected {'an' if name[0] in 'aeiou' else 'a'} {name} like {value!r}"


def _explain(error: flags.Error, config, items: list[tuple[str, str]], option: str) -> str:
  """absl's message about one flag, as one line naming the override it came from."""
  message = " ".join(str(error).split())
  for key, text in items:
    prefix = f"flag --{_FLAG}.{key}={text}: "
    if message.startswith(prefix):
      current = _current(config, key, option)
      return f"{option} {key}={text}: {_expected(key, current)}; {message[len(prefix):]}"
  return f"{option}: {message}"


def apply(config: ml_collections.ConfigDict, items, *, option: str = "--config") -> list[tuple[str, Any]]:
  """Applies `KEY=VALUE` items to `config` in place, in order, exactly as `--config.KEY=VALUE`
  flags of `pah_jax.main` would (ml_collections' `config_flags`). Returns the parsed
  (key, value) pairs, each key once with its last value. `option` names the script's flag in
  error messages."""
  items = [_split(item, option) for item in items or ()]
  if not items:
    return []
  for key, _ in items:
    _current(config, key, option)
  argv = ["overrides"] + [f"--{_FLAG}.{key}={text}" for key, text in items]
  flag_values = flags.FlagValues()
  try:
    # Defining the flag reads the overrides in argv and defines one typed flag per key; parsing
    # argv then sets each key in `config` (not copied, not locked: lock_config=False).
    config_flags.DEFINE_config_dict(_FLAG, config, flag_values=flag_values, lock_config=False, sys_argv=argv)
    flag_values(argv)
  except flags.Error as e:
    raise UserError(_explain(e, config, items, option)) from None
  except (TypeError, ValueError, KeyError, AttributeError) as e:  # ConfigDict refusing the value
    raise UserError(f"{option}: {' '.join(str(e).split())}") from None
  return list(flag_values[_FLAG].override_values.items())


def parse_value(config: ml_collections.ConfigDict, key: str, text: str, *, option: str = "--config"):
  """`text` parsed as `--config.KEY=text` would set `key` (config is left unchanged)."""
  trial = copy.deepcopy(config)
  apply(trial, [f"{key}={text}"], option=option)
  return config_path.get_value(key, trial)
