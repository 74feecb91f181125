"""Split-FashionMNIST 5x2 (configs/fashion_mnist.py: width 0.25, 2000 training images per task,
2 epochs) trained with Memory Aware Synapses, a method module outside pah_jax (mas.py here).

From the repository root:

  PYTHONPATH=examples python -m pah_jax.main --config=examples/custom_method/config.py --workdir=runs/mas
  ... --config.mas.strength=10                      (any key, the method's own section included)
  ... --config.data.name=npz --config.data.path=FILE  (a data set of your own as a .npz)

`method` is the import path of the method's module. This folder has an `__init__.py`, so
pah_jax.main puts the folder above it (`examples/`) on sys.path before loading this file, and
`custom_method.mas` resolves even without PYTHONPATH; PYTHONPATH=examples makes it importable
for any other entry point too (a notebook calling pah_jax.train, a script re-reading the run).
The method's config section is its declaration's: defaults and comments live in mas.py.
"""

from configs import fashion_mnist
from custom_method import mas


def get_config():
  c = fashion_mnist.get_config()
  c.method = "custom_method.mas"
  # The backbone rate the stored-head regularisers (EWC, SI) tuned to on this config;
  # configs/fashion_mnist.py's 3e-4 is PAH's.
  c.optim.lr_backbone = 1e-4
  for section, make in mas.METHOD.sections.items():
    c[section] = make()
  return c
