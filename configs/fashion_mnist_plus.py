"""configs/fashion_mnist.py with PAH+ (configs/plus.py): PAH with a head warm-up and feature
distillation.

  python -m pah_jax.main --config=configs/fashion_mnist_plus.py --workdir=runs/fmnist_plus

Compared with LwF and fine-tuning on every setting of the offline suite:
python -m experiments.suite --entries pah_plus lwf finetune (docs/results.md).
"""

from configs import fashion_mnist
from configs import plus


def get_config():
  return plus.apply(fashion_mnist.get_config())
