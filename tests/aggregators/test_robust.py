"""Robust rules against NumPy (and SciPy) computations of the same rules, run through the actual
federated computations: `factory.create(value_type)`, then `process.next(state, client values)`."""

import numpy as np
import pytest
import scipy.optimize
import scipy.stats
import tensorflow_federated as tff

from tff_lab.aggregators import compression
from tff_lab.aggregators import robust


def _process(factory, d):
  return factory.create(tff.TensorType(np.float32, [d]))


def _next(process, rows):
  out = process.next(process.initialize(), [np.asarray(r, np.float32) for r in rows])
  return np.asarray(out.result), out.measurements


def np_krum(x, f, m):
  """Multi-Krum, written out: score_i = sum of the n-f-2 smallest ||x_i - x_j||², j != i."""
  n = len(x)
  scores = []
  for i in range(n):
    others = [np.sum((x[i] - x[j]) ** 2) for j in range(n) if j != i]
    scores.append(np.sum(np.sort(others)[:n - f - 2]))
  selected = np.argsort(scores, kind='stable')[:m]
  return x[selected].mean(axis=0), selected


def np_rfa(x, passes, nu=1e-6):
  """RFA's smoothed Weiszfeld from the mean; returns (v, mean distance to v)."""
  v = x.mean(axis=0)
  for _ in range(passes - 1):
    beta = 1.0 / np.maximum(nu, np.linalg.norm(x - v, axis=1))
    v = (beta[:, None] * x).sum(axis=0) / beta.sum()
  return v, np.linalg.norm(x - v, axis=1).mean()


def test_median_odd_and_even_with_ties_and_outliers():
  process = _process(robust.CoordinateMedianFactory(), 3)
  x = np.array([[1., 2., 3.], [1., 5., 3.], [7., 2., 3.], [1., 0., -1.], [1e6, -1e6, 3.]])
  for rows in (x, x[:4], x[1:]):  # n = 5, 4 (middle pair averaged), 4
    result, measurements = _next(process, rows)
    np.testing.assert_allclose(result, np.median(rows, axis=0), rtol=1e-6)
    assert measurements['num_clients'] == len(rows)


@pytest.mark.parametrize('beta', [0.3, 0.0])
def test_trimmed_mean_matches_scipy(beta):
  rng = np.random.RandomState(0)
  process = _process(robust.TrimmedMeanFactory(beta), 4)
  x = rng.normal(size=(7, 4))
  x[0] = 1e5          # an outlier
  x[3, 1] = x[4, 1]   # a tie
  for rows in (x, x[:5], x[:4]):  # β·n = 2.1, 1.5, 1.2: not integers for β = 0.3
    result, measurements = _next(process, rows)
    np.testing.assert_allclose(result, scipy.stats.trim_mean(rows, beta, axis=0), rtol=1e-5,
                               atol=1e-6)
    assert measurements['trimmed_per_side'] == int(beta * len(rows))
  if beta:
    assert np.all(np.abs(_next(process, x)[0]) < 10), 'the outlier was not trimmed'


def test_krum_and_multi_krum_pick_the_honest_cluster():
  rng = np.random.RandomState(1)
  honest = 1.0 + 0.1 * rng.normal(size=(7, 5))
  byzantine = np.stack([np.full(5, -20.0), np.full(5, -20.0) + 0.01])  # two colluders
  x = np.concatenate([honest, byzantine])  # n = 9 > 2f + 2 = 6
  for m in (1, 4):
    process = _process(robust.KrumFactory(num_byzantine=2, num_selected=m), 5)
    result, measurements = _next(process, x)
    expected, selected = np_krum(x, f=2, m=m)
    assert np.all(selected < 7), selected
    np.testing.assert_allclose(result, expected, rtol=1e-5)
    assert measurements['num_selected'] == m
  with pytest.raises(Exception, match='needs n > 2f\\+2'):
    _next(process, x[:6])  # 6 clients cannot support f = 2


def test_krum_with_a_duplicated_best_update():
  x = np.array([[0., 0.], [0., 0.], [0.1, 0.], [0., 0.2], [5., 5.], [-4., 6.], [0.1, 0.1]])
  result, _ = _next(_process(robust.KrumFactory(num_byzantine=2), 2), x)
  np.testing.assert_allclose(result, np_krum(x, 2, 1)[0])
  np.testing.assert_allclose(result, [0., 0.])


def test_geometric_median_matches_numpy_weiszfeld():
  x = np.random.RandomState(2).normal(size=(6, 4)) * [1., 10., 0.1, 3.]
  result, measurements = _next(_process(robust.GeometricMedianFactory(), 4), x)
  expected, objective = np_rfa(x, passes=5)
  np.testing.assert_allclose(result, expected, rtol=1e-4, atol=1e-6)
  assert measurements['num_passes'] == 5
  np.testing.assert_allclose(measurements['objective'], objective, rtol=1e-4)
  # 5 float32[4] updates, 4 weights and 1 distance up; the model and 5 iterates down.
  assert measurements['upload_bytes_per_client'] == 5 * 16 + 4 * 5
  assert measurements['download_bytes_per_client'] == 6 * 16


def test_geometric_median_of_symmetric_points_is_their_centre():
  centre = np.array([1., -2., 3.])
  offsets = np.random.RandomState(3).normal(size=(3, 3))
  x = np.concatenate([centre + offsets, centre - offsets])
  result, _ = _next(_process(robust.GeometricMedianFactory(), 3), x)
  np.testing.assert_allclose(result, centre, atol=1e-5)


def test_geometric_median_resists_one_huge_outlier():
  rng = np.random.RandomState(4)
  x = np.concatenate([rng.normal(size=(6, 3)), np.full((1, 3), 1e4)])
  result, _ = _next(_process(robust.GeometricMedianFactory(num_passes=40), 3), x)
  optimum = scipy.optimize.minimize(lambda v: np.linalg.norm(x - v, axis=1).sum(),
                                    np.median(x, axis=0), method='Nelder-Mead',
                                    options=dict(xatol=1e-8, fatol=1e-10, maxiter=20000)).x
  np.testing.assert_allclose(result, optimum, atol=1e-3)
  np.testing.assert_allclose(result, np_rfa(x, passes=40)[0], rtol=1e-4, atol=1e-5)
  assert np.linalg.norm(result - x[:6].mean(axis=0)) < 1.0 < np.linalg.norm(x.mean(axis=0))


def test_structured_values_through_the_weighted_wrapper_ignore_weights():
  value_type = tff.to_type([tff.TensorType(np.float32, [2]), tff.TensorType(np.float32, [2, 2])])
  factory = tff.aggregators.as_weighted_aggregator(robust.CoordinateMedianFactory())
  process = factory.create(value_type, tff.TensorType(np.float32))
  rng = np.random.RandomState(5)
  clients = [[rng.normal(size=2).astype(np.float32), rng.normal(size=(2, 2)).astype(np.float32)]
             for _ in range(5)]
  out = process.next(process.initialize(), clients, [1000., 1., 1., 1., 1.])
  for leaf, result in enumerate(out.result):
    np.testing.assert_allclose(result, np.median([c[leaf] for c in clients], axis=0), rtol=1e-6)


def test_rule_applies_to_decoded_compressed_uploads():
  x = np.random.RandomState(6).normal(size=(5, 8))
  result, measurements = _next(
      _process(robust.CoordinateMedianFactory(compression.TopKCodec(0.25)), 8), x)
  kept = np.zeros_like(x)
  for i, row in enumerate(x):
    top = np.argsort(-np.abs(row), kind='stable')[:2]
    kept[i, top] = row[top]
  np.testing.assert_allclose(result, np.median(kept, axis=0), rtol=1e-6)
  assert measurements['upload_bytes_per_client'] == 2 * (4 + 4)
  assert measurements['float32_upload_bytes_per_client'] == 8 * 4
  np.testing.assert_allclose(measurements['compression_ratio'], 8 * 4 / 16)
