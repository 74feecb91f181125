"""What the command-line entry points share (`pah_jax.main`, `pah_jax.sweep`): finding and
loading the config file, parsing flags, and ending a user's mistake with one `error: ...` line
on stderr and exit code 2. Defines no flags itself."""

import os
import sys

from absl import flags


def fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def last_line(e: BaseException) -> str:
  text = str(e).strip()
  return text.splitlines()[-1].strip() if text else type(e).__name__


def config_path(argv: list[str]) -> str | None:
  """The file named by --config=FILE[:ARG] (or --config FILE), if given."""
  for i, arg in enumerate(argv[1:], start=1):
    if arg.startswith("--config="):
      return arg.split("=", 1)[1].split(":", 1)[0]
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1].split(":", 1)[0]
  return None


def let_config_imports_resolve(path: str) -> None:
  """Configs build on each other by import (`from configs import default`). When the config
  lies in a package folder (one with `__init__.py`, like the checkout's `configs/`), the
  folder above it goes on sys.path, so the config loads from any working directory and with
  an installed (not editable) pah_jax."""
  folder = os.path.dirname(os.path.abspath(path))
  if os.path.isfile(os.path.join(folder, "__init__.py")):
    root = os.path.dirname(folder)
    if root not in sys.path:
      sys.path.insert(0, root)


def print_help(usage: str, flag_values: flags.FlagValues) -> None:
  """--help: the entry point's usage text and its own flags (config keys: configs/default.py)."""
  print(usage.strip() + "\n\nflags:")
  logging_flags = {f.name for f in flag_values.flags_by_module_dict().get("absl.logging", [])}
  seen = set(logging_flags)
  for name, flag in sorted(flag_values._flags().items()):  # pylint: disable=protected-access
    if flag.name in seen or name != flag.name or flag.name.startswith("config.") or flag.name.startswith("?"):
      continue
    seen.add(flag.name)
    if flag.name in ("help", "helpfull", "helpshort", "helpxml", "flagfile", "undefok"):
      continue
    print(f"  --{flag.name}: {flag.help}")
  print("  --config.KEY=VALUE: any config key (configs/default.py lists them, docs/cli.md explains them)")


def parse_flags(argv: list[str], flag_values: flags.FlagValues | None = None, usage: str = "") -> None:
  """Parses argv into absl's flags (the config file included), or into the entry point's own
  `flag_values`; a bad flag, config key or value, or a config file that fails to load, ends
  with one error line. --help (-h) prints `usage` and the flags and exits 0."""
  if any(a in ("--help", "-h", "--helpfull") for a in argv[1:]):
    print_help(usage, flags.FLAGS if flag_values is None else flag_values)
    sys.exit(0)
  path = config_path(argv)
  if path is not None:
    if not os.path.isfile(path):
      fail(f"config file {path} not found: pass e.g. --config=configs/fashion_mnist.py")
    let_config_imports_resolve(path)
  try:
    (flags.FLAGS if flag_values is None else flag_values)(argv)
  except flags.Error as e:  # unknown flag or config key, unparsable value
    fail(f"{last_line(e)} (configs/default.py lists every config key)")
  except Exception as e:  # pylint: disable=broad-except
    # A config file that fails to load arrives wrapped: report the innermost cause.
    while e.__cause__ is not None:
      e = e.__cause__
    if isinstance(e, (KeyError, AttributeError)) and e.args:  # --config.<unknown key>=...
      fail(f"config has no key {str(e.args[0]).strip(chr(39) + chr(34))}: configs/default.py lists every key")
    fail(f"cannot load the config: {type(e).__name__}: {last_line(e)}")
