"""Property tests for tff_lab.data.synthetic (FedProx's Synthetic data)."""

import numpy as np
import pytest

from tff_lab.data import synthetic

DIM, NUM_CLASSES = 60, 10


def _sizes(devices):
  return np.array([len(d.y_train) + len(d.y_test) for d in devices])


@pytest.mark.parametrize('iid', [False, True])
def test_shapes_dtypes_and_labels(iid):
  devices = synthetic.generate_synthetic(iid=iid, seed=1)
  assert len(devices) == 30
  for d in devices:
    assert d.x_train.dtype == np.float32 and d.x_test.dtype == np.float32
    assert d.y_train.dtype == np.int32 and d.y_test.dtype == np.int32
    assert d.x_train.shape == (len(d.y_train), DIM)
    assert d.x_test.shape == (len(d.y_test), DIM)
    for y in (d.y_train, d.y_test):
      assert y.ndim == 1 and y.min() >= 0 and y.max() < NUM_CLASSES
    assert np.all(np.isfinite(d.x_train)) and np.all(np.isfinite(d.x_test))


def test_custom_device_count_and_dimensions():
  devices = synthetic.generate_synthetic(num_devices=7, dimension=5,
                                         num_classes=3, seed=0)
  assert len(devices) == 7
  assert all(d.x_train.shape[1] == 5 for d in devices)
  assert all(d.y_train.max() < 3 for d in devices)


@pytest.mark.parametrize('train_fraction', [0.8, 0.9, 0.5])
def test_sizes_and_split(train_fraction):
  devices = synthetic.generate_synthetic(train_fraction=train_fraction, seed=2)
  for d, n in zip(devices, _sizes(devices)):
    assert n >= 50
    assert len(d.y_train) == int(train_fraction * n)
    assert len(d.y_test) >= 1


@pytest.mark.parametrize('iid', [False, True])
@pytest.mark.parametrize('seed', [0, 5])
def test_sizes_match_independent_reimplementation(iid, seed):
  # The generator's first draw is n_k = int(lognormal(4, 2)) + 50.
  rng = np.random.default_rng(seed)
  expected = rng.lognormal(4, 2, 30).astype(int) + 50
  devices = synthetic.generate_synthetic(iid=iid, seed=seed)
  np.testing.assert_array_equal(_sizes(devices), expected)


def test_iid_labels_explained_by_one_shared_model():
  # Replay the authors' IID draw order: sizes, then one shared W and b.
  seed = 3
  rng = np.random.default_rng(seed)
  rng.lognormal(4, 2, 30)
  w = rng.normal(0, 1, (DIM, NUM_CLASSES))
  b = rng.normal(0, 1, NUM_CLASSES)
  devices = synthetic.generate_synthetic(iid=True, seed=seed)
  x = np.concatenate([np.concatenate([d.x_train, d.x_test]) for d in devices])
  y = np.concatenate([np.concatenate([d.y_train, d.y_test]) for d in devices])
  agreement = np.mean(np.argmax(x.astype(np.float64) @ w + b, axis=1) == y)
  assert agreement > 0.999  # Only float32 rounding near ties may differ.
  # IID inputs are centred at zero on every device.
  for d in devices:
    assert np.all(np.abs(d.x_train.mean(axis=0)) < 5 / np.sqrt(len(d.x_train)))


def test_non_iid_labels_not_explained_by_one_model():
  devices = synthetic.generate_synthetic(alpha=1.0, beta=1.0, seed=3)
  rng = np.random.default_rng(3)
  rng.lognormal(4, 2, 30)
  w = rng.normal(0, 1, (DIM, NUM_CLASSES))
  b = rng.normal(0, 1, NUM_CLASSES)
  y = np.concatenate([d.y_train for d in devices])
  x = np.concatenate([d.x_train for d in devices])
  assert np.mean(np.argmax(x @ w + b, axis=1) == y) < 0.9


@pytest.mark.parametrize('iid', [False, True])
def test_deterministic_given_seed(iid):
  a, b, c = (synthetic.generate_synthetic(iid=iid, seed=s) for s in (7, 7, 8))
  for da, db in zip(a, b):
    for field in ('x_train', 'y_train', 'x_test', 'y_test'):
      np.testing.assert_array_equal(getattr(da, field), getattr(db, field))
  assert not np.array_equal(a[0].x_train[:10], c[0].x_train[:10])


def _spread_of_device_means(devices):
  means = [np.concatenate([d.x_train, d.x_test]).mean() for d in devices]
  return np.std(means)


def test_beta_increases_spread_of_device_feature_means():
  small = _spread_of_device_means(
      synthetic.generate_synthetic(alpha=0.0, beta=0.0, seed=4))
  large = _spread_of_device_means(
      synthetic.generate_synthetic(alpha=0.0, beta=5.0, seed=4))
  # beta=0: v_k entries ~ N(0, 1), so device means spread ~ 1/sqrt(60).
  # beta=5: B_k ~ N(0, 25), so device means spread ~ 5.
  assert large > 5 * small


def test_covariance_diagonal_values():
  diag = synthetic.covariance_diagonal(60)
  assert diag.shape == (60,)
  np.testing.assert_allclose(diag, [1.0 / (j**1.2) for j in range(1, 61)])
  with pytest.raises(ValueError, match='dimension'):
    synthetic.covariance_diagonal(0)


def test_pooled_within_device_variance_matches_sigma():
  devices = synthetic.generate_synthetic(alpha=1.0, beta=1.0,
                                         num_devices=200, seed=6)
  sum_sq, dof = np.zeros(DIM), 0
  for d in devices:
    x = np.concatenate([d.x_train, d.x_test]).astype(np.float64)
    sum_sq += ((x - x.mean(axis=0))**2).sum(axis=0)
    dof += len(x) - 1
  variance = sum_sq / dof
  expected = np.arange(1, DIM + 1)**-1.2
  np.testing.assert_allclose(variance[:10], expected[:10], rtol=0.15)
  # Variance decays with j, as Sigma does.
  assert variance[0] > variance[9] > variance[59]


@pytest.mark.parametrize('train_fraction', [0.0, 1.0, -0.2, 1.5])
def test_invalid_train_fraction(train_fraction):
  with pytest.raises(ValueError, match='train_fraction'):
    synthetic.generate_synthetic(train_fraction=train_fraction)


def test_train_fraction_leaving_empty_train_split():
  with pytest.raises(ValueError, match='train_fraction'):
    synthetic.generate_synthetic(train_fraction=0.001)


@pytest.mark.parametrize('kwargs,match', [
    (dict(alpha=-1.0), 'alpha'),
    (dict(beta=-0.5), 'beta'),
    (dict(num_devices=0), 'num_devices'),
    (dict(num_classes=0), 'num_classes'),
    (dict(dimension=0), 'dimension'),
])
def test_invalid_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    synthetic.generate_synthetic(**kwargs)
