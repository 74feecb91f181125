"""The TinyImageNet builder (pah_jax/data/tiny_imagenet.py) on a small synthetic zip."""

import io
import zipfile

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from configs.default import get_config
from pah_jax.data import load_tasks
from pah_jax.data import tfds_util
from pah_jax.data import tiny_imagenet
from pah_jax.errors import UserError

# Listed unsorted on purpose: label i must be the i-th wnid in *sorted* order.
WNIDS = ["n09999999", "n01443537", "n02124075"]
SORTED = sorted(WNIDS)
# Each class is painted its own red level, so a decoded image tells its class (JPEG is
# lossy, so compare within a tolerance).
RED = {"n01443537": 40, "n02124075": 130, "n09999999": 220}
# val image -> wnid, in an order unrelated to file names or classes.
VAL = {"val_3.JPEG": "n09999999", "val_0.JPEG": "n02124075", "val_5.JPEG": "n01443537",
       "val_1.JPEG": "n09999999", "val_4.JPEG": "n01443537", "val_2.JPEG": "n02124075"}


def _jpeg(red, gray=False):
  # The real archive holds a few grayscale JPEGs.
  image = Image.new("L", (64, 64), red) if gray else Image.new("RGB", (64, 64), (red, 10, 250 - red))
  buffer = io.BytesIO()
  image.save(buffer, format="JPEG", quality=95)
  return buffer.getvalue()


def _write_zip(path, wnids=WNIDS, val=VAL, with_annotations=True):
  root = "tiny-imagenet-200/"
  with zipfile.ZipFile(path, "w") as z:
    z.writestr(root + "wnids.txt", "\n".join(wnids) + "\n")
    z.writestr(root + "words.txt", "".join(f"{w}\tsomething\n" for w in wnids))
    for w in wnids:
      z.writestr(f"{root}train/{w}/{w}_boxes.txt", "")
      for i in range(4):
        z.writestr(f"{root}train/{w}/images/{w}_{i}.JPEG",
                   _jpeg(RED[w], gray=(w == "n02124075" and i == 2)))
    for name, w in val.items():
      z.writestr(f"{root}val/images/{name}", _jpeg(RED[w]))
    if with_annotations:
      z.writestr(root + "val/val_annotations.txt",
                 "".join(f"{name}\t{w}\t0\t0\t63\t63\n" for name, w in val.items()))
    z.writestr(root + "test/images/test_0.JPEG", _jpeg(0))  # unlabelled: ignored


def _prepared_builder(tmp_path):
  root = tmp_path / "tfds"
  manual = tfds_util.manual_dir(str(root))
  (root / "downloads" / "manual").mkdir(parents=True)
  _write_zip(f"{manual}/{tiny_imagenet.ARCHIVE}")
  builder = tiny_imagenet.TinyImagenet200(data_dir=str(root))
  tfds_util.prepare(builder, download=False, manual=manual, needed=(tiny_imagenet.ARCHIVE,),
                    what="TinyImageNet")
  return root


def _class_of(images):
  """The class each decoded image was painted as, from its mean red level."""
  reds = np.array([RED[w] for w in SORTED])
  return np.abs(images[..., 0].mean(axis=(1, 2))[:, None] - reds[None]).argmin(1)


def test_builder_labels_shapes_and_sorted_wnids(tmp_path):
  root = _prepared_builder(tmp_path)
  # A fresh builder reads everything back from disk, label names included.
  builder = tiny_imagenet.TinyImagenet200(data_dir=str(root))
  assert builder.is_prepared()
  assert builder.info.features["label"].names == SORTED
  assert builder.info.features["label"].num_classes == 3
  assert builder.info.splits["train"].num_examples == 12
  assert builder.info.splits["test"].num_examples == 6

  arrays = tfds_util.load_arrays(builder)
  assert arrays.x_train.shape == (12, 64, 64, 3) and arrays.x_train.dtype == np.uint8
  assert arrays.x_test.shape == (6, 64, 64, 3)
  # Train labels come from the folder, in sorted wnid order; images agree with them
  # (also the grayscale one, decoded to 3 equal channels).
  np.testing.assert_array_equal(arrays.y_train, np.repeat([0, 1, 2], 4))
  np.testing.assert_array_equal(_class_of(arrays.x_train), arrays.y_train)
  gray = arrays.x_train[4 + 2]
  assert np.all(gray[..., 0] == gray[..., 1]) and np.all(gray[..., 1] == gray[..., 2])

  test = tfds.as_numpy(builder.as_dataset(split="test", batch_size=-1))
  names = [n.decode() for n in test["file_name"]]
  assert sorted(names) == sorted(VAL)
  # Test (= official val) labels come from val_annotations.txt.
  expected = [SORTED.index(VAL[n]) for n in names]
  np.testing.assert_array_equal(test["label"], expected)
  np.testing.assert_array_equal(_class_of(test["image"]), expected)


def test_read_wnids_and_members_from_zip(tmp_path):
  _write_zip(tmp_path / "t.zip")
  with zipfile.ZipFile(tmp_path / "t.zip") as z:
    assert tiny_imagenet.read_wnids(z) == SORTED
    train = tiny_imagenet.train_members(z, SORTED)
    val = tiny_imagenet.val_members(z, SORTED)
  assert len(train) == 12 and all(name.endswith(".JPEG") for name, _ in train)
  assert all(f"/train/{w}/images/{w}_" in name for name, w in train)
  assert dict((name.split("/")[-1], w) for name, w in val) == VAL


def test_refuses_archive_without_annotations(tmp_path):
  root = tmp_path / "tfds"
  manual = tfds_util.manual_dir(str(root))
  (root / "downloads" / "manual").mkdir(parents=True)
  _write_zip(f"{manual}/{tiny_imagenet.ARCHIVE}", with_annotations=False)
  builder = tiny_imagenet.TinyImagenet200(data_dir=str(root))
  with pytest.raises(UserError, match="is not the official tiny-imagenet-200.zip"):
    tfds_util.prepare(builder, download=False, manual=manual,
                      needed=(tiny_imagenet.ARCHIVE,), what="TinyImageNet")


def test_load_tasks_refuses_archive_without_200_classes(tmp_path):
  root = _prepared_builder(tmp_path)
  c = get_config().data
  c.name, c.path, c.num_tasks = "tiny_imagenet", str(root), 10
  with pytest.raises(UserError, match="has 3 classes, not 200"):
    load_tasks(c, seed=0)


def test_load_tasks_without_archive_fails_fast(tmp_path):
  c = get_config().data
  c.name, c.path, c.num_tasks = "tiny_imagenet", str(tmp_path), 10
  with pytest.raises(UserError, match="TinyImageNet is not prepared in .* and "
                     "tiny-imagenet-200.zip is not in .*downloads/manual; put it there or "
                     "run with --config.data.download=True"):
    load_tasks(c, seed=0)
