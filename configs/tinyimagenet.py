"""TinyImageNet 10x20 with PAH (paper Table 1), paper-text defaults; for a GPU or TPU.

  python -m pah_jax.main --config=configs/tinyimagenet.py --workdir=runs/tinyimagenet

Data: our TFDS builder reads tiny-imagenet-200.zip from <data.path>/downloads/manual
(or downloads it with --config.data.download=True); test = the official val/ split.
"""

from configs import default


def get_config():
  c = default.get_config()
  c.data.name = "tiny_imagenet"
  c.data.num_tasks = 10
  c.model.stem = "cifar"
  c.model.width = 1.0
  c.train.epochs = 15
  c.train.batch_size = 64
  c.train.augment = True
  return c
