"""Named tff.learning optimisers."""

import numpy as np
import pytest
import tensorflow as tf

from tff_lab.algorithms import optimizers


def test_names_and_hparams_come_from_tff():
  assert optimizers.optimizer_names() == ['sgd', 'sgdm', 'adam', 'adagrad', 'yogi']
  assert optimizers.optimizer_hparams('adam') == {'beta_1': 0.9, 'beta_2': 0.999,
                                                  'epsilon': 1e-07}
  assert optimizers.optimizer_hparams('sgd') == {}


@pytest.mark.parametrize('name', ['sgd', 'sgdm', 'adam', 'adagrad', 'yogi'])
def test_every_optimizer_takes_a_descent_step(name):
  opt = optimizers.create_optimizer(name, 0.1)
  w = (tf.constant([1.0, -2.0]),)
  state = opt.initialize((tf.TensorSpec([2], tf.float32),))
  _, new = opt.next(state, w, (tf.constant([1.0, -1.0]),))
  assert np.all(np.sign(w[0].numpy() - new[0].numpy()) == [1.0, -1.0])


@pytest.mark.parametrize('args, match', [
    (('rmsprop', 0.1), "unknown optimizer 'rmsprop'"),
    (('adam', 0.0), 'must be positive'),
])
def test_errors(args, match):
  with pytest.raises(ValueError, match=match):
    optimizers.create_optimizer(*args)
  with pytest.raises(ValueError, match='no hyperparameter'):
    optimizers.create_optimizer('sgd', 0.1, momentum=0.9)
