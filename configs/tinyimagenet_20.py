"""TinyImageNet 20x10 with PAH (paper Table 1), paper-text defaults; for a GPU or TPU.

  python -m pah_jax.main --config=configs/tinyimagenet_20.py --workdir=runs/tinyimagenet_20
"""

from configs import tinyimagenet


def get_config():
  c = tinyimagenet.get_config()
  c.data.num_tasks = 20
  return c
