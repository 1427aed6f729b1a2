"""scikit-learn's bundled handwritten digits (UCI ML digits; 1,797 8×8 images, 10 classes).

Ships inside scikit-learn, so it needs no network. Pixels are scaled from [0, 16] to [0, 1].
"""

import numpy as np


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
  """Returns `(x, y)`: x float32 [1797, 8, 8, 1] in [0, 1], y int32 [1797]."""
  from sklearn import datasets  # pylint: disable=g-import-not-at-top

  bunch = datasets.load_digits()
  x = (bunch.images.astype(np.float32) / 16.0)[..., None]
  return x, bunch.target.astype(np.int32)
