"""Ridge regression in closed form, for probes: deterministic, seconds on a CPU, no training loop.

Features are standardized with the training set's mean and deviation; the
penalty is picked from a fixed grid on a held-out fifth of the training set,
then the head is refitted on all of it.
"""

import dataclasses

import numpy as np

PENALTIES = (0.1, 1.0, 10.0, 100.0, 1000.0)
HELD_OUT_SHARE = 0.2


@dataclasses.dataclass(frozen=True)
class RidgeHead:
  """x -> standardized x @ weights + bias; targets are columns (one-hot for classes)."""

  mean: np.ndarray
  scale: np.ndarray
  weights: np.ndarray
  bias: np.ndarray

  def predict(self, x: np.ndarray) -> np.ndarray:
    return ((x - self.mean) / self.scale) @ self.weights + self.bias


def _solve(x: np.ndarray, y: np.ndarray, row_weights: np.ndarray, penalty: float) -> RidgeHead:
  mean, scale = x.mean(0), x.std(0) + 1e-6
  z = (x - mean) / scale
  bias = np.average(y, axis=0, weights=row_weights)
  weighted = z * row_weights[:, None]
  weights = np.linalg.solve(weighted.T @ z + penalty * np.eye(z.shape[1]),
                            weighted.T @ (y - bias))
  return RidgeHead(mean, scale, weights, bias)


def fit(x: np.ndarray, y: np.ndarray, score, seed: int = 0, balanced: bool = False) -> RidgeHead:
  """The ridge head of `x` -> `y` whose penalty gives the best `score(predicted, y)` on a
  held-out share of the rows (drawn with `seed`), refitted on every row.

  `balanced` (one-hot `y`): each class's rows weigh as much in all as any other class's, so
  that a rare class is not drowned by a frequent one (CoNLL's entities by its O tags).
  """
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  y = y[:, None] if y.ndim == 1 else y
  row_weights = np.ones(len(x))
  if balanced:
    row_weights = (1.0 / np.maximum(y.sum(0), 1))[y.argmax(1)] * len(x) / y.shape[1]
  order = np.random.default_rng(seed).permutation(len(x))
  held_out, kept = np.split(order, [int(len(x) * HELD_OUT_SHARE)])
  best = max(PENALTIES, key=lambda penalty: score(
      _solve(x[kept], y[kept], row_weights[kept], penalty).predict(x[held_out]), y[held_out]))
  return _solve(x, y, row_weights, best)
