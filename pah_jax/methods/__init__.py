"""Continual-learning methods over the shared task loop: `build(setup)` picks one by name.

pah (the paper), hnet (PAH without prototypes), finetune and joint (lower and upper bounds),
lwf, ewc (online), si, agem, derpp. See each module's docstring for the method, its sources
and its config keys.
"""

from pah_jax.methods import agem
from pah_jax.methods import derpp
from pah_jax.methods import ewc
from pah_jax.methods import finetune
from pah_jax.methods import hypernet
from pah_jax.methods import lwf
from pah_jax.methods import si
from pah_jax.methods.base import Batch  # noqa: F401 (the package API)
from pah_jax.methods.base import Method  # noqa: F401 (the package API)
from pah_jax.methods.base import Setup  # noqa: F401 (the package API)
from pah_jax.methods.base import TrainState  # noqa: F401 (the package API)

BUILDERS = {
    "pah": hypernet.build_pah,
    "hnet": hypernet.build_hnet,
    "finetune": finetune.build,
    "joint": finetune.build_joint,
    "lwf": lwf.build,
    "ewc": ewc.build,
    "si": si.build,
    "agem": agem.build,
    "derpp": derpp.build,
}


def build(setup: Setup) -> Method:
  return BUILDERS[setup.config.method](setup)
