"""configs/fashion_mnist.py as the authors' code runs it (DESIGN §4; see configs/official.py),
at the calibration scale of DESIGN §7 (2000 images per task, 2 epochs, width 0.25, `cifar`
stem as in the calibration runs of the authors' code).

  python -m pah_jax.main --config=configs/fashion_mnist_official.py --workdir=runs/fmnist_official
"""

from configs import fashion_mnist
from configs import official


def get_config():
  c = official.apply(fashion_mnist.get_config())
  c.model.stem = "cifar"  # the calibration runs swapped the authors' backbone for this ResNet
  c.train.epochs = 2
  return c
