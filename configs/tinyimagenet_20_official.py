"""configs/tinyimagenet_20.py as the authors' code runs it (see configs/official.py).

  python -m pah_jax.main --config=configs/tinyimagenet_20_official.py --workdir=runs/tinyimagenet_20_official
"""

from configs import official
from configs import tinyimagenet_20


def get_config():
  return official.apply(tinyimagenet_20.get_config())
