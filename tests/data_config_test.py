"""`load_tasks` refuses bad `config.data` values before it touches any file or TFDS."""

import pathlib
import subprocess
import sys

import ml_collections
import pytest

from configs.default import get_config
from pah_jax.data import load_tasks
from pah_jax.errors import UserError


def _config(**overrides):
  # Not type-safe, so wrong types reach `load_tasks` as from a hand-made config.
  c = ml_collections.ConfigDict(get_config().data.to_dict(), type_safe=False)
  # A path that does not exist: every error here must come before it is looked at.
  c.path = "/nonexistent/pah_jax/data"
  for k, v in overrides.items():
    c[k] = v
  return c


@pytest.mark.parametrize("overrides,message", [
    ({"name": "mnist"}, "data.name='mnist' is unknown; use one of cifar100, tiny_imagenet"),
    ({"num_tasks": 7}, "data.num_tasks=7 does not divide the 100 classes"),
    ({"name": "tiny_imagenet", "num_tasks": 30}, "does not divide the 200 classes"),
    ({"name": "fashion_mnist", "num_tasks": 20}, "num_tasks=20 is more than the 10 classes"),
    ({"num_tasks": 0}, "data.num_tasks=0 must be an integer >= 1"),
    ({"name": "npz", "num_tasks": -1}, "data.num_tasks=-1 must be an integer >= 1"),
    ({"class_order": "reverse"}, "data.class_order='reverse' is unknown"),
    ({"max_train_per_task": -5}, "data.max_train_per_task=-5 must be an integer >= 0"),
    ({"max_test_per_task": -1}, "data.max_test_per_task=-1 must be an integer >= 0"),
    ({"max_train_per_task": 9}, "max_train_per_task=9 is fewer than the 10 classes per task"),
    ({"normalization": "imagenet"}, "data.normalization='imagenet' is unknown"),
    ({"download": "yes"}, "data.download='yes' must be True or False"),
    ({"num_tasks": 2.5}, "data.num_tasks=2.5 must be an integer >= 1"),
    ({"path": None}, "data.path=None must be a string"),
    ({"pad_to": -2}, "data.pad_to=-2 must be an integer >= 0"),
    ({"pad_to": 31.5}, "data.pad_to=31.5 must be an integer >= 0"),
    ({"class_order_seed": -3}, "data.class_order_seed=-3 must be an integer >= 0, or -1"),
])
def test_refuses_bad_config(overrides, message):
  # data.path does not exist: an error about anything else comes before any file is read.
  with pytest.raises(UserError, match=message) as info:
    load_tasks(_config(**overrides), seed=0)
  assert "\n" not in str(info.value)


def test_refuses_negative_seed():
  with pytest.raises(UserError, match="seed=-1 must be an integer >= 0"):
    load_tasks(_config(), seed=-1)


def test_config_errors_come_before_tensorflow_is_imported():
  # TFDS/TensorFlow take seconds to import; a typo must not wait for them.
  code = (
      "import sys\n"
      "from configs.default import get_config\n"
      "from pah_jax.data import load_tasks\n"
      "from pah_jax.errors import UserError\n"
      "c = get_config().data\n"
      "c.num_tasks = 3\n"
      "try:\n"
      "  load_tasks(c, seed=0)\n"
      "except UserError as e:\n"
      "  print('error:', e)\n"
      "print('tensorflow' in sys.modules, 'tensorflow_datasets' in sys.modules)\n"
  )
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True, timeout=60, cwd=pathlib.Path(__file__).parents[1]).stdout
  assert "error: data.num_tasks=3 does not divide the 100 classes" in out
  assert out.strip().endswith("False False")
