"""Fashion-MNIST (10 classes, 28x28x1): offline from the original IDX files, or via TFDS.

Offline (`data.download=False`, the default): `data.path` is the directory holding the four
original files `{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz` (gzipped or not; empty:
the Debian package `dataset-fashion-mnist`'s directory). TFDS's own builder rejects those
copies (their gzip bytes differ from its checksums), so `FashionMnistIdx` below parses the
IDX files and prepares them once into `$PAH_JAX_TFDS_DIR` (default
`~/.cache/pah_jax/tfds`); later runs read the prepared copy.

Online (`data.download=True`): TFDS's `fashion_mnist` builder in the TFDS data_dir
(`data.path` when set, else TFDS's default).
"""

import os

import numpy as np
import tensorflow_datasets as tfds

from pah_jax.data import idx
from pah_jax.data import tfds_util
from pah_jax.data.splits import Arrays
from pah_jax.errors import UserError

NUM_CLASSES = 10
DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
# (split, images file, labels file) without the optional `.gz`.
FILES = (
    ("train", "train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    ("test", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
)
CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)


def find_idx_files(directory: str) -> dict[str, str]:
  """Maps each IDX base name to its path in `directory` (`.gz` preferred).

  Raises UserError naming the missing files and where they belong.
  """
  found, missing = {}, []
  for _, *names in FILES:
    for name in names:
      for candidate in (name + ".gz", name):
        if os.path.isfile(os.path.join(directory, candidate)):
          found[name] = os.path.join(directory, candidate)
          break
      else:
        missing.append(name + ".gz")
  if missing:
    raise UserError(
        f"Fashion-MNIST IDX file(s) {', '.join(missing)} not found in {directory}; put the "
        "original files there (Debian/Ubuntu: apt install dataset-fashion-mnist), set "
        "data.path to their directory, or run with --config.data.download=True"
    )
  return found


def read_split(images_path: str, labels_path: str) -> tuple[np.ndarray, np.ndarray]:
  """Parses one split's IDX pair into (N, 28, 28, 1) uint8 images and (N,) labels."""
  images = idx.read_idx(images_path, ndim=3)
  labels = idx.read_idx(labels_path, ndim=1)
  if images.shape[1:] != (28, 28):
    raise UserError(f"{images_path} holds {images.shape[1:]} images, not 28x28")
  if len(images) != len(labels):
    raise UserError(
        f"{images_path} holds {len(images)} images but {labels_path} {len(labels)} labels"
    )
  if len(labels) and labels.max() >= NUM_CLASSES:
    raise UserError(f"{labels_path} holds label {labels.max()}; Fashion-MNIST has 0..9")
  return images[..., None], labels


class FashionMnistIdx(tfds.core.GeneratorBasedBuilder):
  """Fashion-MNIST prepared from the original IDX files in the manual directory."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Original IDX files, original example order."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Place the four original Fashion-MNIST IDX files "
      "({train,t10k}-{images-idx3,labels-idx1}-ubyte.gz) in the manual directory."
  )

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="Fashion-MNIST (Xiao et al., 2017) from its original IDX files.",
        features=tfds.features.FeaturesDict({
            # A raw tensor, not a PNG-encoded Image: preparing and reading are ~2x faster.
            "image": tfds.features.Tensor(shape=(28, 28, 1), dtype=np.uint8),
            "label": tfds.features.ClassLabel(names=CLASS_NAMES),
        }),
        supervised_keys=("image", "label"),
        homepage="https://github.com/zalandoresearch/fashion-mnist",
        # Keep the IDX order so example i here is example i of the original files.
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    paths = find_idx_files(os.fspath(dl_manager.manual_dir))
    return {
        split: self._generate_examples(*read_split(paths[images], paths[labels]))
        for split, images, labels in FILES
    }

  def _generate_examples(self, images, labels):
    for i, (image, label) in enumerate(zip(images, labels)):
      yield i, {"image": image, "label": int(label)}


def load(data_config) -> Arrays:
  """Both splits as numpy; prepares the TFDS copy on first use."""
  if data_config.download:
    root = tfds_util.data_dir(data_config.path)
    builder = tfds.builder("fashion_mnist", data_dir=root)
    tfds_util.prepare(
        builder, download=True, manual=tfds_util.manual_dir(root), needed=(),
        what="Fashion-MNIST",
    )
    return tfds_util.load_arrays(builder)
  directory = os.path.expanduser(data_config.path or DEBIAN_DIR)
  builder = FashionMnistIdx(data_dir=tfds_util.cache_dir())
  if not builder.is_prepared():
    find_idx_files(directory)  # a clear error before TFDS touches anything
  tfds_util.prepare(
      builder, download=False, manual=directory, needed=(), what="Fashion-MNIST"
  )
  return tfds_util.load_arrays(builder)
