"""McMahan et al. 2017 models: parameter counts as printed in the paper (§3, MNIST)."""

import numpy as np

from tff_lab import models


def test_2nn_parameter_count_matches_paper():
  assert models.build_2nn((784,), 10).count_params() == 199_210


def test_cnn_parameter_count_matches_paper():
  assert models.build_cnn((28, 28, 1), 10).count_params() == 1_663_370


def test_cnn_accepts_other_inputs_and_2d_shapes():
  model = models.build_cnn((8, 8), 10)
  out = model(np.zeros((2, 8, 8), np.float32)).numpy()
  assert out.shape == (2, 10)
  np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


def test_builders_return_uncompiled_fresh_models():
  a, b = models.build_2nn((64,), 10), models.build_2nn((64,), 10)
  assert a.optimizer is None
  assert a is not b and a.trainable_variables[0] is not b.trainable_variables[0]
