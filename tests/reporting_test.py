"""Table, results.json, plots and metric logs."""

import glob
import json
import os
import struct

import numpy as np
import pytest

from pah_jax import metrics
from pah_jax import reporting

NAN = float("nan")
R3 = [[90.0, NAN, NAN],
      [80.0, 85.0, NAN],
      [70.0, 75.0, 95.5]]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_format_table():
  text = reporting.format_table(R3, metrics.summarize(R3))
  lines = text.splitlines()
  assert "task 0" in lines[0] and "task 2" in lines[0]
  assert lines[1].startswith("after task 0")
  assert lines[1].split()[-2:] == ["-", "-"]
  assert lines[3].split()[-3:] == ["70.00", "75.00", "95.50"]
  # AA = (70 + 75 + 95.5) / 3 = 80.1666..., FM = (20 + 10) / 2, BWT = -15.
  assert "AA  = 80.17" in text
  assert "FM  = 15.00" in text
  assert "BWT = -15.00" in text
  # Columns are aligned: every matrix line has the same length as the header.
  assert len({len(line) for line in lines[:4]}) == 1


def test_format_table_task_names():
  text = reporting.format_table([[50.0]], metrics.summarize([[50.0]]), task_names=["cats"])
  assert "after cats" in text and "50.00" in text
  with pytest.raises(ValueError):
    reporting.format_table([[50.0]], metrics.summarize([[50.0]]), task_names=["a", "b"])


def test_results_json_round_trip(tmp_path):
  path = tmp_path / "results.json"
  summary = metrics.summarize(R3)
  config = {"seed": np.int64(3), "data": {"name": "cifar100", "order": (1, 2)},
            "lr": np.float32(0.5)}
  reporting.write_results_json(str(path), R3, summary, config, 12.5,
                               extra={"method": "pah", "note": NAN})
  text = path.read_text()
  assert "NaN" not in text

  def reject(token):
    raise AssertionError(f"non-strict JSON token {token}")

  data = json.loads(text, parse_constant=reject)
  assert data["accuracy_matrix"] == [[90.0, None, None], [80.0, 85.0, None],
                                     [70.0, 75.0, 95.5]]
  assert data["average_accuracy"] == pytest.approx(summary["average_accuracy"])
  assert data["forgetting"] == 15.0
  assert data["bwt"] == -15.0
  assert data["config"] == {"seed": 3, "data": {"name": "cifar100", "order": [1, 2]},
                            "lr": 0.5}
  assert data["seconds"] == 12.5
  assert data["method"] == "pah" and data["note"] is None
  # Only results.json is left behind: no temporary files.
  assert os.listdir(tmp_path) == ["results.json"]


def test_results_json_overwrites_and_refuses_clashing_extra(tmp_path):
  path = str(tmp_path / "results.json")
  reporting.write_results_json(path, [[1.0]], metrics.summarize([[1.0]]), {}, 1.0)
  reporting.write_results_json(path, [[2.0]], metrics.summarize([[2.0]]), {}, 2.0)
  with open(path) as f:
    assert json.load(f)["accuracy_matrix"] == [[2.0]]
  with pytest.raises(ValueError):
    reporting.write_results_json(path, [[3.0]], metrics.summarize([[3.0]]), {}, 3.0,
                                 extra={"seconds": 0})
  with open(path) as f:
    assert json.load(f)["seconds"] == 2.0


@pytest.mark.parametrize("plot", [reporting.plot_accuracy_matrix,
                                  reporting.plot_task_curves])
@pytest.mark.parametrize("R", [R3, [[55.0]]])
def test_plots_are_png(tmp_path, plot, R):
  import matplotlib.image
  path = str(tmp_path / "plot.png")
  plot(path, R)
  with open(path, "rb") as f:
    data = f.read()
  assert data[:8] == PNG_SIGNATURE
  assert len(data) > 5000
  image = matplotlib.image.imread(path)
  assert image.ndim == 3 and image.shape[0] >= 300 and image.shape[1] >= 300
  assert image.shape[2] in (3, 4)
  # Not a blank canvas.
  assert image[..., :3].std() > 0.05


def _read_events(path):
  """Scalar (tag, step, value) triples from a TFRecord events file."""
  from tensorboardX.proto import event_pb2
  out = []
  with open(path, "rb") as f:
    data = f.read()
  pos = 0
  while pos < len(data):
    # TFRecord: uint64 length, uint32 length crc, payload, uint32 payload crc.
    (length,) = struct.unpack("<Q", data[pos:pos + 8])
    event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
    pos += 12 + length + 4
    for v in event.summary.value:
      out.append((v.tag, event.step, v.simple_value))
  return out


def test_metric_writer(tmp_path):
  logdir = str(tmp_path / "logs")
  with reporting.MetricWriter(logdir) as w:
    w.scalars(0, {"train/loss": 2.5, "train/acc": np.float32(10.0)})
    w.scalars(1, {"train/loss": 1.5})
  # Reopening the same logdir (resume) appends.
  w = reporting.MetricWriter(logdir)
  w.scalars(2, {"eval/aa": 80.0, "eval/nan": NAN})
  w.close()
  w.close()  # closing twice is harmless

  with open(os.path.join(logdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  assert [r["step"] for r in records] == [0, 1, 2]
  assert records[0]["train/loss"] == 2.5 and records[0]["train/acc"] == 10.0
  assert records[1]["train/loss"] == 1.5
  assert records[2]["eval/aa"] == 80.0 and records[2]["eval/nan"] is None
  assert all(isinstance(r["time"], float) for r in records)

  events = sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*")))
  assert len(events) >= 1
  scalars = [s for e in events for s in _read_events(e)]
  assert ("train/loss", 0, 2.5) in scalars
  assert ("train/loss", 1, 1.5) in scalars
  assert ("eval/aa", 2, 80.0) in scalars
