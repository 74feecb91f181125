"""Reader for the IDX files of (Fashion-)MNIST, gzipped or not.

IDX layout: two zero bytes, a type code (0x08 = uint8), the number of dimensions n, then n
big-endian int32 sizes and the data in C order.
"""

import gzip
import os
import zlib

import numpy as np

from pah_jax.errors import UserError

_UINT8 = 0x08


def read_idx(path: str, ndim: int) -> np.ndarray:
  """Reads the uint8 array with `ndim` dimensions stored in IDX file `path`.

  Raises UserError naming the file if it is missing, corrupt or truncated.
  """
  try:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
      raw = f.read()
  except FileNotFoundError as e:
    raise UserError(f"IDX file {path} does not exist") from e
  except (OSError, EOFError, zlib.error) as e:
    # gzip.BadGzipFile is an OSError; a truncated gzip stream is an EOFError.
    raise UserError(f"IDX file {path} is corrupt or truncated ({e}); replace it") from e
  return parse_idx(raw, ndim, name=os.path.basename(path))


def parse_idx(raw: bytes, ndim: int, name: str = "IDX data") -> np.ndarray:
  """Decodes the bytes of an uncompressed IDX file holding a uint8 array of `ndim` dims."""
  header = 4 + 4 * ndim
  if len(raw) < header:
    raise UserError(f"{name} is truncated: {len(raw)} bytes, shorter than its header")
  if raw[0] != 0 or raw[1] != 0 or raw[2] != _UINT8 or raw[3] != ndim:
    magic = int.from_bytes(raw[:4], "big")
    expected = (_UINT8 << 8) | ndim
    raise UserError(
        f"{name} is not a uint8 IDX file with {ndim} dimensions "
        f"(magic number {magic:#010x}, expected {expected:#010x})"
    )
  shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
  size = int(np.prod(shape))
  if len(raw) != header + size:
    raise UserError(
        f"{name} is truncated or padded: {len(raw) - header} data bytes for shape {shape}"
    )
  return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)
