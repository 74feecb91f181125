"""Continual-learning methods over the shared task loop, one module per method.

Built in: pah (the paper), hnet (PAH without prototypes), finetune and joint (lower and upper
bounds), lwf, ewc (online), si, agem, derpp. Each module's docstring gives the method, its
sources and its config keys; `registry` says what a method module holds and how a config's
`method` finds it, built in or not (docs/adding_a_method.md walks through one).

This package imports no JAX: the declarations are read when a config is loaded and checked.
"""

from pah_jax.methods.registry import BUILTIN  # noqa: F401 (the package API)
from pah_jax.methods.registry import Declaration  # noqa: F401 (the package API)
from pah_jax.methods.registry import build  # noqa: F401 (the package API)
from pah_jax.methods.registry import declaration  # noqa: F401 (the package API)
