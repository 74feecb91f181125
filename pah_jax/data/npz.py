"""A user's own data set as one `.npz` file (docs/reproducing.md, "Data").

Arrays: `x_train`, `x_test` uint8 (N, H, W) or (N, H, W, C) with C in {1, 3}; `y_train`,
`y_test` integer (N,). The classes are 0..max(y_train), each present in `y_train`.
"""

import os
import zipfile

import numpy as np

from pah_jax.data.splits import Arrays
from pah_jax.errors import UserError

KEYS = ("x_train", "y_train", "x_test", "y_test")


def load(path: str) -> tuple[Arrays, int]:
  """Reads and validates `path`; returns its arrays (images NHWC) and number of classes."""
  where = f"data.path={path!r}"
  if not path:
    raise UserError("data.name=npz needs data.path set to a .npz file with " + ", ".join(KEYS))
  if not os.path.isfile(path):
    raise UserError(f"{where} is not a file; set data.path to a .npz with " + ", ".join(KEYS))
  try:
    with np.load(path, allow_pickle=False) as f:
      missing = [k for k in KEYS if k not in f.files]
      if missing:
        raise UserError(f"{where} lacks array(s) {', '.join(missing)} (needs {', '.join(KEYS)})")
      arrays = {k: f[k] for k in KEYS}
  except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
    # np.load raises ValueError for pickled (object) arrays and for non-npz files.
    raise UserError(f"{where} is not a readable .npz file ({e})") from e
  return validate(arrays, where)


def validate(arrays: dict, where: str) -> tuple[Arrays, int]:
  """Checks dtypes, shapes and labels; returns NHWC arrays and the number of classes."""
  images = {}
  for split in ("train", "test"):
    x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
    if x.dtype != np.uint8:
      raise UserError(f"{where}: x_{split} has dtype {x.dtype}; images must be uint8 (0..255)")
    if x.ndim == 3:
      x = x[..., None]  # grayscale without a channel axis
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
      raise UserError(
          f"{where}: x_{split} has shape {arrays[f'x_{split}'].shape}; "
          "expected (N, H, W) or (N, H, W, C) with C = 1 or 3"
      )
    if not np.issubdtype(y.dtype, np.integer):
      raise UserError(f"{where}: y_{split} has dtype {y.dtype}; labels must be integers")
    if y.ndim != 1:
      raise UserError(f"{where}: y_{split} has shape {y.shape}; expected (N,)")
    if len(x) != len(y):
      raise UserError(f"{where}: x_{split} holds {len(x)} images but y_{split} {len(y)} labels")
    if len(y) == 0:
      raise UserError(f"{where}: the {split} split is empty")
    if y.min() < 0:
      raise UserError(f"{where}: y_{split} holds negative labels; use 0..num_classes-1")
    images[split] = x
  if images["train"].shape[1:] != images["test"].shape[1:]:
    raise UserError(
        f"{where}: train images are {images['train'].shape[1:]} but test images "
        f"{images['test'].shape[1:]} (H, W, C must match)"
    )
  y_train, y_test = arrays["y_train"], arrays["y_test"]
  num_classes = int(y_train.max()) + 1
  absent = np.setdiff1d(np.arange(num_classes), y_train)
  if len(absent):
    raise UserError(
        f"{where}: classes 0..{num_classes - 1} are implied by max(y_train), but "
        f"{_some(absent)} have no training example; relabel to consecutive ids"
    )
  if y_test.max() >= num_classes:
    raise UserError(
        f"{where}: y_test holds label {int(y_test.max())}, which y_train never uses "
        f"(train classes are 0..{num_classes - 1})"
    )
  arrays = Arrays(
      images["train"], y_train.astype(np.int64), images["test"], y_test.astype(np.int64)
  )
  return arrays, num_classes


def _some(values: np.ndarray, limit: int = 5) -> str:
  shown = ", ".join(str(int(v)) for v in values[:limit])
  return f"class(es) {shown}" + (" ..." if len(values) > limit else "")
