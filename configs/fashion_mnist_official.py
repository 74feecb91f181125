"""configs/fashion_mnist.py as the authors' code runs it (see configs/official.py),
at the scale of the calibration runs of the authors' code (2000 images per task, 2 epochs,
width 0.25, `cifar` stem as in those runs).

  python -m pah_jax.main --config=configs/fashion_mnist_official.py --workdir=runs/fmnist_official
"""

from configs import fashion_mnist
from configs import official


def get_config():
  c = official.apply(fashion_mnist.get_config())
  c.model.stem = "cifar"  # the calibration runs swapped the authors' backbone for this ResNet
  c.train.epochs = 2
  return c
