"""CIFAR-100 through TFDS's own `cifar100` builder, fine labels (100 classes).

`data.path` is the TFDS data_dir (empty: TFDS's default). Offline, TFDS prepares it from
the original archive placed at `<data_dir>/downloads/manual/cifar-100-binary.tar.gz`.
"""

from pah_jax.data import tfds_util
from pah_jax.data.splits import Arrays

NUM_CLASSES = 100
ARCHIVE = "cifar-100-binary.tar.gz"  # the file name TFDS's checksums register for its URL


def load(data_config) -> Arrays:
  """Prepares (if needed, offline unless `data.download`) and reads both splits."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  root = tfds_util.data_dir(data_config.path)
  builder = tfds.builder("cifar100", data_dir=root)
  tfds_util.prepare(
      builder,
      download=data_config.download,
      manual=tfds_util.manual_dir(root),
      needed=(ARCHIVE,),
      what="CIFAR-100",
  )
  # `label` holds the 100 fine classes (`coarse_label` the 20 superclasses).
  return tfds_util.load_arrays(builder, "image", "label")
