"""Split-FashionMNIST 5x2 with PAH (paper text defaults), sized for a 2-core CPU: runs offline.

  python -m pah_jax.main --config=configs/fashion_mnist.py --workdir=runs/fashion_mnist

Data: the original IDX .gz files in data.path (default: Debian's dataset-fashion-mnist,
/usr/share/datasets/fashion-mnist). 2000 training images per task (stratified), all 2000
test images per task, ResNet-18 `cifar` stem at width 0.25 (feature 128), 2 epochs, batch 64:
the setting of the calibration runs of the authors' code (docs/reproducing.md).

Learning rates tuned for PAH on a tuning seed (not a table seed): backbone 3e-4, hypernetwork
1e-4, where the official AdamW groups use 1e-4 and 1e-3; at 1e-3 the hypernetwork drifts and
regenerates old tasks' heads wrongly (docs/results.md, "Every method at the calibration scale").
`hnet` shares the hypernetwork's rate. Other methods tune their own backbone rate
(experiments.baselines --lr-grid).
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
  c.optim.lr_backbone = 3e-4
  c.optim.lr_hypernet = 1e-4
  return c
