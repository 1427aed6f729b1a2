"""Linear model builders."""

import numpy as np
import tensorflow as tf

from tff_lab import models


def test_linear_is_theta_transpose_x():
  model = models.build_linear(input_dim=2)
  theta = np.array([[0.5], [-2.0]], np.float32)
  model.set_weights([theta])
  x = np.array([[1.0, 2.0], [3.0, -1.0]], np.float32)
  np.testing.assert_allclose(model(x).numpy(), x @ theta, rtol=1e-6)
  assert model.count_params() == 2  # no bias, as in the seed article's f(x) = θᵀx


def test_logistic_outputs_probabilities():
  model = models.build_logistic_regression(input_dim=2)
  out = model(np.random.default_rng(0).normal(size=(16, 2)).astype(np.float32)).numpy()
  assert out.shape == (16, 1) and np.all((out > 0) & (out < 1))
  assert model.count_params() == 3


def test_softmax_regression_matches_fedprox_mclr():
  model = models.build_softmax_regression(60, 10)
  assert model.count_params() == 610  # FedProx's synthetic model: 60x10 + 10
  out = model(tf.zeros([3, 60])).numpy()
  np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-6)
