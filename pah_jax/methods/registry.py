"""What a method declares about itself, and how a config's `method` finds its module.

A method is one Python module holding two things:

  METHOD = Declaration(...)   what the rest of pah_jax needs to know without running it: its
                              config section (defaults with comments), the keys it reads, its
                              checks, a one-line description with its sources, its random streams;
  def build(setup) -> Method  the method itself (`pah_jax.methods.base`): parameters,
                              optimiser, step, evaluation logits, work around each task.

`method` in a config is a built-in name (`BUILTIN`, modules `pah_jax.methods.<name>`) or the
import path of any module on sys.path (e.g. `my_project.my_method`): both are read the same way.
Declarations are read when a config is loaded and checked, before JAX starts, so a method
module imports JAX inside `build` and the functions it calls, not at its top level. This
module imports neither JAX nor any method's code until `build` is called.
"""

from collections.abc import Callable
import dataclasses
import importlib
from typing import Any

import ml_collections

from pah_jax.errors import UserError

BUILTIN = ("pah", "hnet", "finetune", "joint", "lwf", "ewc", "si", "agem", "derpp")

# PRNG streams of a run's root key that the task loop draws from (jax.random.fold_in(rng, n));
# a method's own streams are numbered above them.
LOOP_STREAMS = {"initialisation": 0, "data_order": 1, "augmentation": 2}

# Config groups every method shares: the loop's (seed, data, model, train) and the optimiser's
# common settings. A method's section and the keys it declares in `reads` are its own.
SHARED_KEYS = ("seed", "method", "data", "model", "train", "optim.lr_backbone", "optim.weight_decay", "optim.b1",
               "optim.b2", "optim.eps")


@dataclasses.dataclass(frozen=True)
class Declaration:
  """Everything pah_jax knows of a method before building it.

  name: its config section and the `method` written in results.json.
  description: one line for result tables, with its sources; `{key}` fields (dotted config
    keys, e.g. "{agem.memory_size}") are filled from the run's config.
  sections: the config sections it owns, {section: () -> ConfigDict of defaults}; the method
    sections of configs/default.py are these (a section named for the method is usual).
  reads: keys outside its sections and `SHARED_KEYS` that it reads (dotted prefixes: another
    method's section such as "pah", or "optim.lr_heads"). A finished or resumed run may be
    re-read under a config that differs only in keys its method neither owns nor reads.
  choices: {dotted key: allowed values} and
  ranges: {dotted key: (lowest, highest or None, lowest excluded?)}, for keys of its sections.
  check(config): further checks across keys; raises UserError (before JAX starts).
  streams: {name: number} of the PRNG streams it draws from the run's key (`base.step_key`),
    each above the loop's (`LOOP_STREAMS`).
  """

  name: str
  description: str
  sections: dict[str, Callable[[], ml_collections.ConfigDict]] = dataclasses.field(default_factory=dict)
  reads: tuple[str, ...] = ()
  choices: dict[str, tuple] = dataclasses.field(default_factory=dict)
  ranges: dict[str, tuple] = dataclasses.field(default_factory=dict)
  check: Callable[[ml_collections.ConfigDict], None] | None = None
  streams: dict[str, int] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    owned = tuple(self.sections)
    for key in (*self.choices, *self.ranges):
      if not under(key, owned):
        raise ValueError(f"method {self.name}: {key} is checked but not in its sections {owned}")
    loop = set(LOOP_STREAMS.values())
    if loop & set(self.streams.values()) or len(set(self.streams.values())) != len(self.streams):
      raise ValueError(f"method {self.name}: streams {self.streams} must be distinct and above the loop's "
                       f"{sorted(loop)}")

  def owns_or_reads(self) -> tuple[str, ...]:
    return tuple(self.sections) + self.reads

  def describe(self, config: ml_collections.ConfigDict) -> str:
    """The description with its `{dotted.key}` fields filled from `config`."""
    return self.description.format_map(_Dotted(config))


class _Dotted(dict):
  def __init__(self, config):
    super().__init__()
    self.config = config

  def __missing__(self, key: str):
    node = self.config
    for part in key.split("."):
      node = node[part]
    return node


def under(key: str, prefixes) -> bool:
  """Whether dotted `key` is one of `prefixes` or inside one of them."""
  return any(key == p or key.startswith(p + ".") for p in prefixes)


def module_name(method: str) -> str:
  return f"pah_jax.methods.{method}" if method in BUILTIN else method


def method_module(method: str):
  """The module of `method` (a built-in name or an importable module path)."""
  if not isinstance(method, str) or not method:
    raise UserError(f"config method={method!r} must be a built-in method ({', '.join(BUILTIN)}) or a module path")
  name = module_name(method)
  try:
    module = importlib.import_module(name)
  except ModuleNotFoundError as e:
    if e.name is not None and not name.startswith(e.name):
      raise  # the method's module exists but imports something missing: a bug to show in full
    raise UserError(f"config method={method!r} is neither a built-in method ({', '.join(BUILTIN)}) nor an "
                    f"importable module (no module {e.name!r}; put its folder on PYTHONPATH)") from None
  if not isinstance(getattr(module, "METHOD", None), Declaration) or not callable(getattr(module, "build", None)):
    raise UserError(f"config method={method!r}: module {name} defines no METHOD = Declaration(...) and "
                    "build(setup) (see docs/adding_a_method.md)")
  return module


def declaration(method: str) -> Declaration:
  return method_module(method).METHOD


def declarations(config: ml_collections.ConfigDict | None = None) -> list[Declaration]:
  """Every built-in method's declaration, and the configured method's if it is not built in."""
  found = [declaration(name) for name in BUILTIN]
  if config is not None and config.method not in BUILTIN:
    found.append(declaration(config.method))
  return found


def default_sections() -> dict[str, ml_collections.ConfigDict]:
  """The built-in methods' config sections with their defaults, in BUILTIN order."""
  return {section: make() for d in declarations() for section, make in d.sections.items()}


def build(setup: Any):
  """The configured method (`setup.config.method`) built for `setup` (a base.Setup)."""
  return method_module(setup.config.method).build(setup)
