"""The seed article's two-feature data."""

import numpy as np
import pytest

from tff_lab.data import seed_linear


def test_shapes_labels_and_class_means():
  clients = seed_linear.generate_seed_linear(num_clients=4, examples_per_client=2000, noise=0.5)
  assert len(clients) == 4
  for x, y in clients:
    assert x.shape == (2000, 2) and y.shape == (2000, 1) and x.dtype == np.float32
    assert set(np.unique(y)) == {-1.0, 1.0}
    # x = y·μ + σε: the mean of y·x is μ.
    np.testing.assert_allclose((y * x).mean(axis=0), seed_linear.CLASS_MEAN, atol=0.05)


def test_iid_balance_and_non_iid_skew():
  iid = seed_linear.generate_seed_linear(5, 4000, iid=True, seed=1)
  skew = seed_linear.generate_seed_linear(5, 4000, iid=False, seed=1)
  iid_pos = [np.mean(y > 0) for _, y in iid]
  skew_pos = [np.mean(y > 0) for _, y in skew]
  np.testing.assert_allclose(iid_pos, 0.5, atol=0.03)
  np.testing.assert_allclose(skew_pos, np.linspace(0.1, 0.9, 5), atol=0.03)


def test_deterministic_by_seed():
  a = seed_linear.generate_seed_linear(seed=3)
  b = seed_linear.generate_seed_linear(seed=3)
  c = seed_linear.generate_seed_linear(seed=4)
  assert all(np.array_equal(p[0], q[0]) for p, q in zip(a, b))
  assert not np.array_equal(a[0][0], c[0][0])


@pytest.mark.parametrize('kwargs, match', [
    ({'num_clients': 0}, 'num_clients'), ({'examples_per_client': 1}, 'examples_per_client'),
    ({'noise': -1.0}, 'noise')])
def test_rejects_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    seed_linear.generate_seed_linear(**kwargs)
