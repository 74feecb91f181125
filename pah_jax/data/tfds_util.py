"""What the TFDS-backed sources share: directories, preparing offline, reading whole splits.

TensorFlow Datasets is imported lazily (it takes seconds) so that config mistakes are
reported before it loads.
"""

import contextlib
import logging
import os
import sys

import numpy as np

from pah_jax.data.splits import Arrays
from pah_jax.errors import UserError

# Where pah_jax prepares the TFDS data sets it builds itself from local files.
CACHE_ENV = "PAH_JAX_TFDS_DIR"


class _DropVariantFolderWarnings(logging.Filter):
  """TFDS warns "Variant folder ... has no dataset_info.json" while it prepares a data set for
  the first time: a folder it is about to fill, nothing for the user to act on."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Variant folder")


_VARIANT_FILTER = _DropVariantFolderWarnings()


@contextlib.contextmanager
def quiet_native_logs():
  """Within: what C++ code writes to stderr (file descriptor 2) is dropped, while Python's
  `sys.stderr` (progress bars, warnings, errors) still reaches the terminal.

  TensorFlow's C++ side logs through absl before anything initialises absl's logging: on
  import "All log messages before absl::InitializeLog() ..." and the oneDNN notice, twice,
  and while reading records a buffer-size notice, whatever TF_CPP_MIN_LOG_LEVEL says.
  pah_jax only prepares and reads data sets with TensorFlow, so none of it is for its user.
  """
  logging.getLogger("absl").addFilter(_VARIANT_FILTER)
  sys.stderr.flush()
  python_stderr = sys.stderr
  terminal = os.dup(2)
  try:
    with open(os.devnull, "w") as null, os.fdopen(os.dup(terminal), "w", buffering=1) as visible:
      os.dup2(null.fileno(), 2)
      sys.stderr = visible
      try:
        yield
      finally:
        visible.flush()
        sys.stderr = python_stderr
        os.dup2(terminal, 2)
  finally:
    os.close(terminal)


def cache_dir() -> str:
  """`$PAH_JAX_TFDS_DIR`, else `~/.cache/pah_jax/tfds`."""
  return os.environ.get(CACHE_ENV) or os.path.join(
      os.path.expanduser("~"), ".cache", "pah_jax", "tfds"
  )


def data_dir(path: str) -> str:
  """The TFDS data_dir: `data.path` when set, else TFDS's default ($TFDS_DATA_DIR)."""
  if path:
    return os.path.expanduser(path)
  from tensorflow_datasets.core import constants  # pylint: disable=g-import-not-at-top
  return constants.get_default_data_dir()


def manual_dir(tfds_data_dir: str) -> str:
  """Where TFDS looks for manually downloaded archives inside a data_dir."""
  return os.path.join(tfds_data_dir, "downloads", "manual")


def prepare(builder, *, download: bool, manual: str, needed: tuple[str, ...], what: str) -> None:
  """Makes sure `builder` is prepared, never touching the network unless `download`.

  Args:
    builder: a TFDS builder.
    download: whether TFDS may download what is missing.
    manual: the manual directory TFDS should read archives from.
    needed: file names in `manual` that let TFDS prepare without a download.
    what: how to name the data set and the fix in the error message.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  if builder.is_prepared():
    return
  have_files = all(os.path.isfile(os.path.join(manual, n)) for n in needed)
  if not download and not have_files:
    # Checked here because a download attempt without internet hangs for minutes.
    raise UserError(
        f"{what} is not prepared in {builder.data_dir_root} and {', '.join(needed)} is not in "
        f"{manual}; put it there or run with --config.data.download=True"
    )
  config = tfds.download.DownloadConfig(
      manual_dir=manual,
      # Prepared copies on GCS are a network access too.
      try_download_gcs=download,
  )
  try:
    builder.download_and_prepare(download_config=config)
  except tfds.download.download_manager.NonMatchingChecksumError as e:
    # TFDS's message spans lines; the user needs only which file to replace.
    raise UserError(
        f"an archive for {what} in {manual} has the wrong checksum; replace it by the "
        "original file"
    ) from e


def load_arrays(
    builder, image_key: str = "image", label_key: str = "label", chunk: int = 10_000
) -> Arrays:
  """Reads the whole `train` and `test` splits of a prepared builder into numpy.

  Reads in chunks rather than with `batch_size=-1`: that batches by the split size
  recorded in the dataset info, which mocked builders (tfds.testing) lack, and TF then
  aborts the process on a batch of sys.maxsize.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  # Read once: TFDS's in-memory auto-cache of small data sets would only cost a copy.
  read_config = tfds.ReadConfig(try_autocache=False)
  out = []
  for split in ("train", "test"):
    images, labels = [], []
    dataset = builder.as_dataset(split=split, batch_size=chunk, read_config=read_config)
    for batch in tfds.as_numpy(dataset):
      images.append(np.asarray(batch[image_key], dtype=np.uint8))
      labels.append(np.asarray(batch[label_key], dtype=np.int64))
    if not images:
      raise UserError(f"the {split} split of {builder.name} in {builder.data_dir} is empty")
    out += [np.concatenate(images), np.concatenate(labels)]
  return Arrays(*out)
