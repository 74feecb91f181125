"""Bounds for comparing two different float32 computations of the same quantity.

Two programs that compute the same function with their sums in another order (sharded vs one
device, a compiled loop vs a Python loop, batched vs separate seeds, a matrix product vs a
convolution) agree only up to rounding, and the rounding depends on the CPU: XLA:CPU
vectorises reductions and picks matrix kernels by instruction set (AVX2, AVX-512, AMX), so
the same pair of programs differs by different amounts on different machines. A tolerance
here is therefore a bound derived from what the computation is, never the value that passed
on one CPU; `experiments/tolerance_probe.py` reruns these tests under other XLA:CPU
instruction sets and vector widths to check the bounds hold.

Exact equality stays where the two sides are the same program on the same inputs (a resumed
run and an uninterrupted one, a rerun): there rounding is identical by construction.
"""

import numpy as np

# One evaluation of a network or loss (the same parameters and inputs, only the order of the
# float32 sums differs), as the test modules compare it inline: a sum of n terms in another
# order moves by about sqrt(n) units of roundoff (2^-24) relative to sum|terms|, 1.4e-6 for a
# 3x3 convolution over 64 channels, so they ask for 1e-5 relative, with an absolute floor
# (1e-6 to 1e-5) for values near zero. Where BatchNorm divides by the statistics of a few
# numbers, which rounding perturbs, their docstrings say how much looser and why.

# A training trajectory: after the first step the two runs start from parameters that differ
# by rounding, and Adam divides each gradient by its own running RMS, so a gradient component
# that is zero up to rounding gets a full-size step of either sign; BatchNorm over a few
# numbers per channel amplifies further. Rounding differences therefore grow with the steps
# taken, by an amount that depends on the CPU. What does not depend on the CPU is that they
# stay well below what a real difference between the two programs does (a dropped or
# reordered batch, per-shard BatchNorm statistics, another learning rate, data order or
# seed). The bound: within TRAJECTORY_FRACTION of the reference's own change over the run
# (the range of its per-step losses; how far its outputs moved from those of the initial
# parameters). The toy runs of the tests sit on both sides of it: rounding reaches up to 1%
# (separate vs parallel seeds' outputs), a real difference at least 14% (one epoch in
# another order), and the tests that use it check that a real difference fails it.
TRAJECTORY_FRACTION = 5e-2


def assert_same_trajectory(got, want, err_msg=""):
  """Per-step values (losses) of two programs that train the same run: every step within
  TRAJECTORY_FRACTION of the reference's range over the run."""
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  assert got.shape == want.shape, (got.shape, want.shape, err_msg)
  scale = float(want.max() - want.min())
  assert scale > 0, f"{err_msg}: the reference does not change over the run, so it bounds nothing"
  np.testing.assert_allclose(got, want, rtol=0, atol=TRAJECTORY_FRACTION * scale, err_msg=err_msg)


def assert_same_trained_function(got, want, initial, err_msg=""):
  """Outputs (e.g. logits on fixed images) of the parameters that two programs trained from
  the same initial ones, and of those initial parameters: within TRAJECTORY_FRACTION of how
  far training moved the reference's outputs, in L2 norm.

  Outputs, not parameters: a parameter whose gradient is zero up to rounding (a direction the
  loss is flat in) gets Adam steps of either sign, so parameters drift apart in directions
  that do not change what the network computes, by a fraction of their movement that varies
  with the run; the function they compute does not.
  """
  got, want, initial = (np.asarray(x, np.float64) for x in (got, want, initial))
  difference, moved = float(np.linalg.norm(got - want)), float(np.linalg.norm(want - initial))
  assert moved > 0, f"{err_msg}: training did not change the outputs, so they bound nothing"
  assert difference <= TRAJECTORY_FRACTION * moved, (
      f"{err_msg}: |got - want| = {difference:.3g} is {difference / moved:.1%} of the change training made "
      f"to the outputs ({moved:.3g}); the bound is {TRAJECTORY_FRACTION:.0%}")


def assert_same_accuracies(got, want, num_test, err_msg=""):
  """Accuracy matrices (percent) over `num_test` test images per task of two programs that
  train the same run: an image whose two largest logits are within rounding of each other
  may be classified either way, so each entry may differ by one image, no more."""
  got, want = np.asarray(got, float), np.asarray(want, float)
  np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=err_msg)
  np.testing.assert_allclose(got, want, rtol=0, atol=100.0 / num_test + 1e-9, equal_nan=True, err_msg=err_msg)
