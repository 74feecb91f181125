"""Continual-learning metrics on the accuracy matrix. Numpy only.

R is a K x K array of test accuracies in percent: R[i][j] = accuracy on task j after
training task i (i, j = 0..K-1). Entries above the diagonal (j > i) may be NaN, meaning
"not measured"; no metric here reads them.

Every metric takes an optional `upto` row index i (default K-1): the metric is then
computed on the top-left (i+1) x (i+1) block, i.e. as if the sequence had ended after
task i. This gives the running numbers printed while a run is still in progress.
"""

import numpy as np


def _block(R, upto=None):
  """Returns the top-left (upto+1) x (upto+1) block of R as a float array."""
  R = np.asarray(R, dtype=np.float64)
  if R.ndim != 2 or R.shape[0] != R.shape[1] or R.shape[0] == 0:
    raise ValueError(f"accuracy matrix must be square and non-empty, got shape {R.shape}")
  K = R.shape[0]
  if upto is None:
    upto = K - 1
  if not 0 <= upto < K:
    raise ValueError(f"upto must be in [0, {K - 1}], got {upto}")
  return R[:upto + 1, :upto + 1]


def average_accuracy(R, upto=None):
  """Average accuracy after the last task.

    AA = (1/K) * sum_{j=0}^{K-1} R[K-1][j]

  With `upto=i`, K is replaced by i+1 (the accuracy on tasks 0..i after task i).
  """
  B = _block(R, upto)
  return float(np.mean(B[-1]))


def forgetting(R, upto=None):
  """Average forgetting (Chaudhry et al. 2018).

    FM = (1/(K-1)) * sum_{j=0}^{K-2} ( max_{l=j}^{K-2} R[l][j] - R[K-1][j] )

  The max runs over l >= j only: rows l < j are before task j was trained (NaN or
  meaningless). The last task cannot be forgotten yet, so it is left out; K = 1 gives 0.
  With `upto=i`, K is replaced by i+1.
  """
  B = _block(R, upto)
  K = B.shape[0]
  if K == 1:
    return 0.0
  drops = [np.max(B[j:K - 1, j]) - B[K - 1, j] for j in range(K - 1)]
  return float(np.mean(drops))


def backward_transfer(R, upto=None):
  """Backward transfer (Lopez-Paz & Ranzato 2017); negative values mean forgetting.

    BWT = (1/(K-1)) * sum_{j=0}^{K-2} ( R[K-1][j] - R[j][j] )

  K = 1 gives 0. With `upto=i`, K is replaced by i+1.
  """
  B = _block(R, upto)
  K = B.shape[0]
  if K == 1:
    return 0.0
  return float(np.mean(B[K - 1, :K - 1] - np.diag(B)[:K - 1]))


def plasticity(R):
  """Mean accuracy on each task right after learning it, None when the diagonal was not measured
  (joint training).

    plasticity = (1/K) * sum_{j=0}^{K-1} R[j][j]

  Beside FM it tells apart a method that learns new tasks less well from one that forgets old
  ones: AA = plasticity + (K-1)/K * BWT.
  """
  diagonal = np.diag(_block(R))
  return None if np.isnan(diagonal).any() else float(np.mean(diagonal))


def summarize(R, upto=None):
  """Returns {"average_accuracy": AA, "forgetting": FM, "bwt": BWT} (percent, floats)."""
  return {
      "average_accuracy": average_accuracy(R, upto),
      "forgetting": forgetting(R, upto),
      "bwt": backward_transfer(R, upto),
  }


def mean_std(values):
  """Mean and standard deviation of a metric over seeds.

    mean = (1/n) * sum_s x_s
    std  = sqrt( (1/(n-1)) * sum_s (x_s - mean)^2 )   (sample std, ddof=1), 0.0 if n = 1

  The sample (not population) std is used because seeds are a sample of the run
  distribution and papers report it that way; with one seed there is no spread to
  estimate, so 0.0 is returned instead of NaN. Returns (mean, std) as floats.
  """
  x = np.asarray(values, dtype=np.float64).ravel()
  if x.size == 0:
    raise ValueError("mean_std needs at least one value")
  std = float(np.std(x, ddof=1)) if x.size > 1 else 0.0
  return float(np.mean(x)), std

