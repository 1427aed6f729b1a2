"""FedProx: μ=0 is FedAvg exactly; μ>0 keeps clients closer to the global model."""

import numpy as np
import pytest
import tensorflow_federated as tff

from tff_lab import algorithms
from tff_lab import tasks
from tff_lab.simulation import plan as plan_lib


@pytest.fixture(scope='module')
def setup():
  task = tasks.create_task('synthetic', {'num_devices': 4, 'seed': 2})
  task = task.with_train_spec(batch_size=10, num_epochs=3, shuffle_buffer_size=1)
  data = [task.preprocess_train(task.train_data.create_tf_dataset_for_client(c))
          for c in task.train_data.client_ids]
  return task, data, plan_lib.initial_model_weights(task, 0)


def _one_round(process, w0, data):
  state = process.next(process.set_model_weights(process.initialize(), w0), data).state
  return np.concatenate([np.ravel(w) for w in process.get_model_weights(state).trainable])


def test_mu_zero_equals_fedavg(setup):
  task, data, w0 = setup
  opt = tff.learning.optimizers.build_sgdm(0.05)
  prox = _one_round(algorithms.build_fedprox(task, 0.0, opt), w0, data)
  avg = _one_round(algorithms.build_fedavg(task, opt), w0, data)
  np.testing.assert_allclose(prox, avg, atol=1e-6)


def test_proximal_term_shrinks_the_update(setup):
  task, data, w0 = setup
  opt = tff.learning.optimizers.build_sgdm(0.05)
  start = np.concatenate([np.ravel(w) for w in w0.trainable])
  moves = [np.linalg.norm(_one_round(algorithms.build_fedprox(task, mu, opt), w0, data) - start)
           for mu in (0.0, 1.0, 10.0)]
  assert moves[0] > moves[1] > moves[2] > 0


def test_negative_mu_is_rejected(setup):
  task, _, _ = setup
  with pytest.raises(ValueError, match='mu'):
    algorithms.build_fedprox(task, -1.0, tff.learning.optimizers.build_sgdm(0.1))
