"""The vectorised simulation gives the TFF path's states to float32 round-off."""

import numpy as np
import pytest
import tensorflow as tf

from tff_lab import algorithms
from tff_lab import faults
from tff_lab import tasks
from tff_lab.algorithms import vectorized
from tff_lab.training import loop


@pytest.mark.parametrize('name, mu, server', [
    ('fedavg', 0.0, ('sgd', 1.0)),
    ('fedprox', 0.5, ('adam', 0.01)),
    ('fedavg_unweighted', 0.0, ('sgdm', 0.5)),
])
def test_rounds_match_tff_path(name, mu, server):
  # Uneven clients (Dirichlet sizes), short last batches, two epochs, and stragglers with fewer
  # steps: everything the padding and masks must get right.
  task = tasks.create_task('digits', {'model': 'mlp', 'num_clients': 12, 'seed': 1})
  task = task.with_train_spec(batch_size=16, num_epochs=2)
  server_opt = algorithms.create_optimizer(*server)
  process = algorithms.create_learning_process(
      name, task, algorithms.create_optimizer('sgd', 0.05), server_opt, mu=mu)
  rounds = vectorized.VectorizedRounds(task, 0.05, server_opt, mu=mu,
                                       weighted=name != 'fedavg_unweighted')
  fault_config = faults.FaultConfig(straggler_fraction=0.3, dropout_fraction=0.1)
  state = process.set_model_weights(process.initialize(), loop.initial_model_weights(task, 0))
  tff_state, vec_state = state, state
  for r in range(1, 4):
    sampled = loop.sample_clients(task.train_data.client_ids, 8, 0, r)
    roles = faults.assign_roles(sampled, fault_config, 0, r)

    def inputs():
      return faults.build_client_inputs(task, sampled, roles, fault_config, 0, r, 10,
                                        lambda p: loop.client_shuffle_seed(0, r, p))

    tff_out, vec_out = process.next(tff_state, inputs()), rounds.next(vec_state, inputs())
    tff_state, vec_state = tff_out.state, vec_out.state
    a, b = tff_out.metrics['client_work']['train'], vec_out.metrics['client_work']['train']
    assert a['num_examples'] == b['num_examples'] and a['num_batches'] == b['num_batches']
    assert a['loss'] == pytest.approx(b['loss'], rel=1e-5)
    assert a['accuracy'] == pytest.approx(b['accuracy'], abs=1e-6)
  for x, y in zip(tf.nest.flatten(tff_state), tf.nest.flatten(vec_state)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-5, rtol=1e-5)
  assert type(tff_state.finalizer) is type(vec_state.finalizer)


def test_pack_pads_and_masks():
  task = tasks.create_task('seed_linear', {'num_clients': 2, 'examples_per_client': 12})
  task = task.with_train_spec(batch_size=4, shuffle_buffer_size=1)
  a = task.preprocess_train(task.train_data.create_tf_dataset_for_client('client_0'))
  b = task.preprocess_train(task.train_data.create_tf_dataset_for_client('client_1').take(5))
  packed = vectorized.pack_client_datasets([a, b])
  assert packed['x'].shape[:3] == (2, 3, 4)
  np.testing.assert_array_equal(packed['example_mask'].sum(axis=(1, 2)), [len(list(a.unbatch())),
                                                                          5])
  np.testing.assert_array_equal(packed['example_mask'][1], [[1, 1, 1, 1], [1, 0, 0, 0],
                                                            [0, 0, 0, 0]])


@pytest.mark.parametrize('kwargs, match', [
    ({'client_optimizer': 'adam', 'model_aggregator_is_default': True, 'update_attacks': False},
     'client_optimizer=sgd only'),
    ({'client_optimizer': 'sgd', 'model_aggregator_is_default': False, 'update_attacks': False},
     'default mean aggregation only'),
    ({'client_optimizer': 'sgd', 'model_aggregator_is_default': True, 'update_attacks': True},
     'does not simulate update attacks'),
])
def test_unsupported_settings(kwargs, match):
  with pytest.raises(ValueError, match=match):
    vectorized.check_supported(**kwargs)
