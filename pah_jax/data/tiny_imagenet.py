"""TinyImageNet (200 classes, 64x64x3) as a TFDS builder of our own (TFDS ships none).

The builder reads the official `tiny-imagenet-200.zip` directly (no extraction):
  tiny-imagenet-200/wnids.txt                        the 200 class ids (WordNet ids)
  tiny-imagenet-200/train/<wnid>/images/*.JPEG       500 training images per class
  tiny-imagenet-200/val/images/val_<i>.JPEG          50 per class, labelled by
  tiny-imagenet-200/val/val_annotations.txt          "file<TAB>wnid<TAB>4 bbox ints"
  tiny-imagenet-200/test/                            unlabelled: ignored
Splits: `train`, and `test` = the official `val` (the usual benchmark protocol). Label i is
the i-th wnid in sorted order. `data.path` is the TFDS data_dir (empty: TFDS's default);
offline, the zip goes to `<data_dir>/downloads/manual/tiny-imagenet-200.zip`.
"""

import os
import zipfile

import tensorflow_datasets as tfds

from pah_jax.data import tfds_util
from pah_jax.data.splits import Arrays
from pah_jax.errors import UserError

NUM_CLASSES = 200
URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
ARCHIVE = "tiny-imagenet-200.zip"
_ROOT = "tiny-imagenet-200/"


def read_wnids(archive: zipfile.ZipFile) -> list[str]:
  """The class ids of `wnids.txt`, sorted: label i is wnids[i]."""
  text = archive.read(_ROOT + "wnids.txt").decode()
  wnids = sorted({line.strip() for line in text.splitlines() if line.strip()})
  if not wnids:
    raise UserError(f"{_ROOT}wnids.txt in {ARCHIVE} lists no classes")
  return wnids


def train_members(archive: zipfile.ZipFile, wnids: list[str]) -> list[tuple[str, str]]:
  """(member name, wnid) of every training JPEG, in sorted member order."""
  known = set(wnids)
  out = []
  for name in sorted(archive.namelist()):
    parts = name[len(_ROOT):].split("/")
    # train/<wnid>/images/<file>.JPEG; train/<wnid>/<wnid>_boxes.txt is skipped.
    if (name.startswith(_ROOT + "train/") and len(parts) == 4 and parts[2] == "images"
        and parts[3].lower().endswith(".jpeg")):
      if parts[1] not in known:
        raise UserError(f"{name} in {ARCHIVE} belongs to {parts[1]}, absent from wnids.txt")
      out.append((name, parts[1]))
  return out


def val_members(archive: zipfile.ZipFile, wnids: list[str]) -> list[tuple[str, str]]:
  """(member name, wnid) of every `val/` JPEG, labelled by val_annotations.txt."""
  known = set(wnids)
  out = []
  text = archive.read(_ROOT + "val/val_annotations.txt").decode()
  for line in text.splitlines():
    if not line.strip():
      continue
    file_name, wnid = line.split("\t")[:2]
    if wnid not in known:
      raise UserError(f"val_annotations.txt in {ARCHIVE} labels {file_name} {wnid}, "
                      "absent from wnids.txt")
    out.append((_ROOT + "val/images/" + file_name, wnid))
  return sorted(out)


class TinyImagenet200(tfds.core.GeneratorBasedBuilder):
  """TinyImageNet-200 (Le & Yang, 2015) read straight from its official zip."""

  name = "tiny_imagenet_200"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Official zip; test split = official val."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Optional: place {ARCHIVE} ({URL}) in the manual directory; without it the "
      "archive is downloaded."
  )

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="TinyImageNet-200: 64x64 images of 200 ImageNet classes.",
        features=tfds.features.FeaturesDict({
            # The JPEG bytes are stored as they are; decoding to 3 channels also turns
            # the few grayscale images of the archive into RGB.
            "image": tfds.features.Image(shape=(64, 64, 3), encoding_format="jpeg"),
            # Names are the sorted wnids, known only once the archive is read
            # (`_split_generators`); TFDS saves them with the prepared data.
            "label": tfds.features.ClassLabel(),
            "file_name": tfds.features.Text(),
        }),
        supervised_keys=("image", "label"),
        homepage="http://cs231n.stanford.edu/",
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    path = _manual_archive(dl_manager) or dl_manager.download(URL)
    try:
      with zipfile.ZipFile(os.fspath(path)) as archive:
        wnids = read_wnids(archive)
        train = train_members(archive, wnids)
        val = val_members(archive, wnids)
    except (zipfile.BadZipFile, KeyError, ValueError) as e:
      # KeyError: a member the official layout has is missing; ValueError: a bad line.
      raise UserError(f"{path} is not the official {ARCHIVE} ({e}); replace it") from e
    self.info.features["label"].names = wnids
    return {
        "train": self._generate_examples(path, train),
        "test": self._generate_examples(path, val),
    }

  def _generate_examples(self, path, members):
    with zipfile.ZipFile(os.fspath(path)) as archive:
      for name, wnid in members:
        yield name, {
            "image": archive.read(name),
            "label": wnid,
            "file_name": os.path.basename(name),
        }


def _manual_archive(dl_manager):
  """The zip in the manual directory, or None (then the builder downloads it)."""
  try:
    path = dl_manager.manual_dir / ARCHIVE
  except AssertionError:  # TFDS's way to say the manual directory is absent or empty
    return None
  return path if path.exists() else None


def load(data_config) -> Arrays:
  """Prepares (if needed, offline unless `data.download`) and reads both splits."""
  root = tfds_util.data_dir(data_config.path)
  builder = TinyImagenet200(data_dir=root)
  tfds_util.prepare(
      builder,
      download=data_config.download,
      manual=tfds_util.manual_dir(root),
      needed=(ARCHIVE,),
      what="TinyImageNet",
  )
  classes = builder.info.features["label"].num_classes
  if classes != NUM_CLASSES:
    raise UserError(
        f"the TinyImageNet prepared in {root} has {classes} classes, not {NUM_CLASSES}; "
        f"replace {ARCHIVE} by the official archive and delete {builder.data_dir}"
    )
  return tfds_util.load_arrays(builder)
