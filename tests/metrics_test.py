"""Metrics against accuracy matrices computed by hand."""

import math

import numpy as np
import pytest

from pah_jax import metrics

NAN = float("nan")
# After task 0: 90 on task 0. After task 1: 80, 85. After task 2: 70, 75, 95.
R3 = [[90.0, NAN, NAN],
      [80.0, 85.0, NAN],
      [70.0, 75.0, 95.0]]


def test_hand_computed_3x3():
  # AA = (70 + 75 + 95) / 3 = 80
  assert metrics.average_accuracy(R3) == pytest.approx(80.0)
  # FM = ((max(90, 80) - 70) + (85 - 75)) / 2 = (20 + 10) / 2 = 15
  assert metrics.forgetting(R3) == pytest.approx(15.0)
  # BWT = ((70 - 90) + (75 - 85)) / 2 = -15
  assert metrics.backward_transfer(R3) == pytest.approx(-15.0)
  assert metrics.summarize(R3) == pytest.approx(
      {"average_accuracy": 80.0, "forgetting": 15.0, "bwt": -15.0})


def test_forgetting_uses_max_not_diagonal():
  # Task 0 improves after task 1 (60 -> 80) and then drops to 50:
  # FM = ((max(60, 80) - 50) + (70 - 70)) / 2 = 15, BWT = ((50 - 60) + 0) / 2 = -5.
  R = [[60.0, NAN, NAN], [80.0, 70.0, NAN], [50.0, 70.0, 90.0]]
  assert metrics.forgetting(R) == pytest.approx(15.0)
  assert metrics.backward_transfer(R) == pytest.approx(-5.0)


def test_upper_triangle_is_ignored():
  # Measured (non-NaN) entries above the diagonal must not change any metric.
  R = np.array(R3)
  R[0, 1], R[0, 2], R[1, 2] = 10.0, 20.0, 30.0
  assert metrics.summarize(R) == pytest.approx(metrics.summarize(R3))


def test_single_task():
  R = [[42.0]]
  assert metrics.summarize(R) == {"average_accuracy": 42.0, "forgetting": 0.0, "bwt": 0.0}


def test_upto():
  # After task 0: the 1x1 block [[90]].
  assert metrics.summarize(R3, upto=0) == {
      "average_accuracy": 90.0, "forgetting": 0.0, "bwt": 0.0}
  # After task 1: [[90, -], [80, 85]]: AA = 82.5, FM = 90 - 80 = 10, BWT = 80 - 90 = -10.
  assert metrics.summarize(R3, upto=1) == pytest.approx(
      {"average_accuracy": 82.5, "forgetting": 10.0, "bwt": -10.0})
  assert metrics.summarize(R3, upto=2) == metrics.summarize(R3)
  # Rows after `upto` may still be unmeasured.
  partial = [[90.0, NAN, NAN], [80.0, 85.0, NAN], [NAN, NAN, NAN]]
  assert metrics.summarize(partial, upto=1) == pytest.approx(
      metrics.summarize(R3, upto=1))


@pytest.mark.parametrize("bad", [[], [[1.0, 2.0]], [1.0, 2.0]])
def test_bad_shape(bad):
  with pytest.raises(ValueError):
    metrics.average_accuracy(bad)


@pytest.mark.parametrize("upto", [-1, 3])
def test_bad_upto(upto):
  with pytest.raises(ValueError):
    metrics.forgetting(R3, upto=upto)


def test_mean_std():
  # mean = 4, sample std = sqrt(((2-4)^2 + (4-4)^2 + (6-4)^2) / 2) = 2
  assert metrics.mean_std([2.0, 4.0, 6.0]) == pytest.approx((4.0, 2.0))
  assert metrics.mean_std([7.5]) == (7.5, 0.0)
  mean, std = metrics.mean_std(np.array([1.0, 2.0]))
  assert isinstance(mean, float) and isinstance(std, float)
  assert std == pytest.approx(math.sqrt(0.5))
  with pytest.raises(ValueError):
    metrics.mean_std([])
