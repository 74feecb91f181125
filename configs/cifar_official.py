"""configs/cifar.py as the authors' code runs it (see configs/official.py).

  python -m pah_jax.main --config=configs/cifar_official.py --workdir=runs/cifar_official
"""

from configs import cifar
from configs import official


def get_config():
  return official.apply(cifar.get_config())
