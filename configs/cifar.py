"""Split-CIFAR100 10x10 with PAH (paper Table 1), paper-text defaults; for a GPU or TPU.

  python -m pah_jax.main --config=configs/cifar.py --workdir=runs/cifar

Data: TFDS `cifar100` in data.path (TFDS data_dir); pass --config.data.download=True once to
let TFDS fetch it, or put the archive in <data_dir>/downloads/manual.
"""

from configs import default


def get_config():
  c = default.get_config()
  c.data.name = "cifar100"
  c.data.num_tasks = 10
  c.model.stem = "cifar"
  c.model.width = 1.0
  c.train.epochs = 15
  c.train.batch_size = 64
  c.train.augment = True
  return c
