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


def test_cnn_bn_is_the_cnn_with_batch_norm_after_each_conv_and_the_hidden_dense():
  model = models.build_cnn_bn((28, 28, 1), 10)
  plain = models.build_cnn((28, 28, 1), 10)
  kinds = [type(layer).__name__ for layer in model.layers]
  bn = [i for i, kind in enumerate(kinds) if kind == 'BatchNormalization']
  assert [kinds[i - 1] for i in bn] == ['Conv2D', 'Conv2D', 'Dense']
  assert [kinds[i + 1] for i in bn] == ['ReLU'] * 3
  channels = [model.layers[i].gamma.shape[0] for i in bn]
  assert channels == [32, 64, 512]
  biases = sum(channels)  # the layers before a BN drop their bias; each BN holds 4 per channel
  assert model.count_params() == plain.count_params() - biases + 4 * biases == 1_665_194
  trainable = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
  assert trainable == plain.count_params() - biases + 2 * biases
  assert len(model.non_trainable_variables) == 6  # moving mean and variance of each BN


def test_cnn_bn_trains_its_statistics_and_evaluates_with_them():
  model = models.build_cnn_bn((8, 8), 10)
  x = np.random.default_rng(0).normal(3.0, 2.0, (16, 8, 8)).astype(np.float32)
  before = model(x, training=False).numpy()
  np.testing.assert_allclose(before.sum(axis=1), 1.0, rtol=1e-5)
  moving_mean = model.non_trainable_variables[0]
  assert np.all(moving_mean.numpy() == 0)
  model(x, training=True)  # batch statistics; the moving averages move towards them
  assert np.any(moving_mean.numpy() != 0)
  assert np.abs(model(x, training=False).numpy() - before).max() > 1e-6
