"""configs/tinyimagenet.py as the authors' code runs it (see configs/official.py).

  python -m pah_jax.main --config=configs/tinyimagenet_official.py --workdir=runs/tinyimagenet_official
"""

from configs import official
from configs import tinyimagenet


def get_config():
  return official.apply(tinyimagenet.get_config())
