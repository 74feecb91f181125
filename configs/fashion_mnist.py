"""Split-FashionMNIST 5x2 with PAH (paper text defaults), sized for a 2-core CPU: runs offline.

  python -m pah_jax.main --config=configs/fashion_mnist.py --workdir=runs/fashion_mnist

Data: the original IDX .gz files in data.path (default: Debian's dataset-fashion-mnist,
/usr/share/datasets/fashion-mnist). 2000 training images per task (stratified), all 2000
test images per task, ResNet-18 `cifar` stem at width 0.25 (feature 128), 2 epochs, batch 64:
the calibration setting of DESIGN §7.
"""

from configs import default


def get_config():
  c = default.get_config()
  c.data.name = "fashion_mnist"
  c.data.num_tasks = 5
  c.data.max_train_per_task = 2000
  c.model.stem = "cifar"
  c.model.width = 0.25
  c.train.epochs = 2
  c.train.batch_size = 64
  c.train.log_every_steps = 10
  return c
