"""scikit-learn's bundled digits."""

import numpy as np

from tff_lab.data import digits


def test_digits_arrays():
  x, y = digits.load_digits_arrays()
  assert x.shape == (1797, 8, 8, 1) and x.dtype == np.float32
  assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.9
  assert y.shape == (1797,) and set(np.unique(y)) == set(range(10))
