"""The in-graph simulation paths (fused and vectorized) give the TFF path's states to float32
round-off."""

import functools

import numpy as np
import pytest
import tensorflow as tf

from tff_lab import algorithms
from tff_lab import faults
from tff_lab import tasks
from tff_lab.algorithms import registry
from tff_lab.algorithms import vectorized
from tff_lab.models import shakespeare as shakespeare_models
from tff_lab.simulation import plan as plan_lib


# One case per algorithm the in-graph backends run (test below), each with another server optimiser.
_IN_GRAPH_CASES = [
    ('fedavg', 0.0, ('sgd', 1.0)),
    ('fedprox', 0.5, ('adam', 0.01)),
    ('fedavg_unweighted', 0.0, ('sgdm', 0.5)),
]


def test_every_algorithm_the_in_graph_backends_run_is_compared_with_tff():
  in_graph = {name for name in registry.names() if registry.get(name).runs_in_graph}
  assert {case[0] for case in _IN_GRAPH_CASES} == in_graph


@pytest.mark.parametrize('client_loop', vectorized.CLIENT_LOOPS)
@pytest.mark.parametrize('name, mu, server', _IN_GRAPH_CASES)
def test_rounds_match_tff_path(name, mu, server, client_loop):
  # Uneven clients (Dirichlet sizes), short last batches, two epochs, stragglers with fewer
  # steps and label-flipping attackers: everything the padding, masks and packing must get right.
  hparams = {'mu': mu} if name == 'fedprox' else None
  tf.random.set_seed(0)
  task = tasks.create_task('digits', {'model': 'mlp', 'num_clients': 12, 'seed': 1})
  task = task.with_train_spec(batch_size=16, num_epochs=2)
  server_opt = algorithms.create_optimizer(*server)
  process = algorithms.create_learning_process(
      name, task, algorithms.create_optimizer('sgd', 0.05), server_opt, hparams=hparams)
  spec = registry.get(name)
  rounds = vectorized.VectorizedRounds(task, 0.05, server_opt, hparams=hparams, weighted=spec.weighted,
                                       client_loop=client_loop, local_step=spec.local_step)
  fault_config = faults.FaultConfig(straggler_fraction=0.3, dropout_fraction=0.1,
                                    byzantine_fraction=0.2, attack='label_flip')
  state = process.set_model_weights(process.initialize(), plan_lib.initial_model_weights(task, 0))
  tff_state, vec_state = state, state
  planner = plan_lib.RoundPlanner(task, 8, fault_config, seed=0)
  for r in range(1, 4):
    plans = list(planner.plan(r).clients)
    # The TFF path trains on datasets; the in-graph path packs the same plans by index.
    tff_out = process.next(tff_state, faults.materialize_client_inputs(task, plans, 10))
    vec_out = rounds.next(vec_state, plans)
    tff_state, vec_state = tff_out.state, vec_out.state
    a, b = tff_out.metrics['client_work']['train'], vec_out.metrics['client_work']['train']
    assert a['num_examples'] == b['num_examples'] and a['num_batches'] == b['num_batches']
    assert a['loss'] == pytest.approx(b['loss'], rel=1e-5)
    assert a['accuracy'] == pytest.approx(b['accuracy'], abs=1e-6)
  for x, y in zip(tf.nest.flatten(tff_state), tf.nest.flatten(vec_state)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-5, rtol=1e-5)
  assert type(tff_state.finalizer) is type(vec_state.finalizer)
  rounds.close()


def _sequence_task(kind):
  """A small task whose model makes many predictions per example: next-token prediction with an
  LSTM (padded sequences, masked embedding), or multi-label tags (multi-hot targets)."""
  rng = np.random.default_rng(0)
  n = 90
  if kind == 'next_token':
    length, vocab = 6, 7
    x = rng.integers(1, vocab, size=(n, length))
    x[rng.random(n) < 0.4, 4:] = 0  # padded tails
    y = np.concatenate([x[:, 1:], np.zeros((n, 1), x.dtype)], axis=1)
    model_fn = functools.partial(shakespeare_models.build_shakespeare_lstm, vocab, length,
                                 embedding_dim=4, lstm_units=8)
    loss_fn = functools.partial(tf.keras.losses.SparseCategoricalCrossentropy, from_logits=True)
  else:
    x = rng.normal(size=(n, 5)).astype(np.float32)
    y = (rng.random((n, 8)) < 0.3).astype(np.float32)
    model_fn = lambda: tf.keras.Sequential([tf.keras.Input((5,)),
                                            tf.keras.layers.Dense(8, activation='sigmoid')])
    loss_fn = tf.keras.losses.BinaryCrossentropy
  sizes = np.cumsum([20, 14, 25, 31])  # uneven clients, short last batches
  parts = np.split(rng.permutation(n), sizes[:-1])
  task = tasks.from_arrays(x, y, model_fn=model_fn, prediction_kind=kind, partition=parts,
                           loss_fn=loss_fn, test_fraction=0.25)
  return task.with_train_spec(batch_size=4, num_epochs=2)


# vectorized_map cannot vectorise the LSTM's loop (backends.check_task refuses it).
@pytest.mark.parametrize('kind, client_loop', [('next_token', 'sequential'),
                                               ('multi_label', 'sequential'),
                                               ('multi_label', 'vectorized_map')])
def test_models_with_many_predictions_per_example_match_tff(kind, client_loop):
  # TFF's loss is the mean over batch × positions; its accuracy counts non-padding targets.
  tf.random.set_seed(0)
  task = _sequence_task(kind)
  sgd = algorithms.create_optimizer('sgd', 0.5)
  server = algorithms.create_optimizer('sgd', 1.0)
  process = algorithms.create_learning_process('fedavg', task, sgd, server)
  rounds = vectorized.VectorizedRounds(task, 0.5, server, client_loop=client_loop)
  tff_state = vec_state = process.set_model_weights(process.initialize(),
                                                    plan_lib.initial_model_weights(task, 0))
  planner = plan_lib.RoundPlanner(task, 3, seed=0)
  for r in range(1, 3):
    plans = list(planner.plan(r).clients)
    tff_out = process.next(tff_state, faults.materialize_client_inputs(task, plans, 10))
    vec_out = rounds.next(vec_state, plans)
    tff_state, vec_state = tff_out.state, vec_out.state
    a, b = tff_out.metrics['client_work']['train'], vec_out.metrics['client_work']['train']
    assert a['num_examples'] == b['num_examples'] and a['num_batches'] == b['num_batches']
    assert a['loss'] == pytest.approx(b['loss'], rel=1e-5)
    assert a['accuracy'] == pytest.approx(b['accuracy'], abs=1e-6)
  for x, y in zip(tf.nest.flatten(tff_state), tf.nest.flatten(vec_state)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-5, rtol=1e-5)
  rounds.close()


def test_a_saturated_softmax_trains_as_on_the_tff_path():
  # The output bias pushes class 0 up by 40 nats: every other example has p(true) < 1e-7.
  # TFF's client work (from_keras_model) then takes the cross-entropy of probabilities clipped
  # at 1e-7 (capped at 16.12 per example, no gradient through the cap), not of the logits as
  # Keras's fit does; the in-graph path must do as TFF's, in this regime too.
  tf.random.set_seed(0)
  task = tasks.create_task('digits', {'model': 'mlp', 'num_clients': 6, 'seed': 2})
  sgd = algorithms.create_optimizer('sgd', 0.01)
  process = algorithms.create_learning_process('fedavg', task, sgd,
                                               algorithms.create_optimizer('sgd', 1.0))
  rounds = vectorized.VectorizedRounds(task, 0.01, algorithms.create_optimizer('sgd', 1.0))
  weights = plan_lib.initial_model_weights(task, 0)
  bias = np.array(weights.trainable[-1])
  bias[0] += 40.0
  weights.trainable[-1] = bias
  state = process.set_model_weights(process.initialize(), weights)
  plans = list(plan_lib.RoundPlanner(task, 4, seed=0).plan(1).clients)
  tff_out = process.next(state, faults.materialize_client_inputs(task, plans, 10))
  fused_out = rounds.next(state, plans)
  tff_loss = tff_out.metrics['client_work']['train']['loss']
  assert tff_loss > 10.0  # saturated
  assert fused_out.metrics['client_work']['train']['loss'] == pytest.approx(tff_loss, rel=1e-5)
  for x, y in zip(tff_out.state.global_model_weights.trainable,
                  fused_out.state.global_model_weights.trainable):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-5, rtol=1e-5)
  rounds.close()


def test_datasets_and_plans_give_the_same_round():
  tf.random.set_seed(0)
  task = tasks.create_task('digits', {'model': 'mlp', 'num_clients': 6, 'seed': 2})
  process = algorithms.create_learning_process(
      'fedavg', task, algorithms.create_optimizer('sgd', 0.1),
      algorithms.create_optimizer('sgd', 1.0))
  rounds = vectorized.VectorizedRounds(task, 0.1, algorithms.create_optimizer('sgd', 1.0))
  state = process.set_model_weights(process.initialize(), plan_lib.initial_model_weights(task, 0))
  plans = list(plan_lib.RoundPlanner(task, 4, seed=0).plan(1).clients)
  by_plan = rounds.next(state, plans).state.global_model_weights.trainable
  by_dataset = rounds.next(state, faults.materialize_client_inputs(task, plans, 10)
                           ).state.global_model_weights.trainable
  for a, b in zip(by_plan, by_dataset):
    np.testing.assert_array_equal(a, b)
  rounds.close()


def test_sequential_loop_on_very_uneven_clients():
  # A one-example client next to a large one: it takes its one step (the sequential loop skips
  # its padding steps rather than masking them) and the round equals the TFF path's.
  task = tasks.create_task('seed_linear', {'num_clients': 2, 'examples_per_client': 40})
  task = task.with_train_spec(batch_size=4, shuffle_buffer_size=1)
  rounds = vectorized.VectorizedRounds(task, 0.1, algorithms.create_optimizer('sgd', 1.0),
                                       weighted=False)
  process = algorithms.create_learning_process(
      'fedavg_unweighted', task, algorithms.create_optimizer('sgd', 0.1),
      algorithms.create_optimizer('sgd', 1.0))
  state = process.set_model_weights(process.initialize(), plan_lib.initial_model_weights(task, 0))
  a = task.preprocess_train(task.train_data.create_tf_dataset_for_client('client_0'))
  b = task.preprocess_train(task.train_data.create_tf_dataset_for_client('client_1').take(1))
  out = rounds.next(state, [a, b])
  assert out.metrics['client_work']['train']['num_batches'] == len(list(a)) + 1
  expected = process.next(state, [a, b]).state.global_model_weights.trainable
  for x, y in zip(out.state.global_model_weights.trainable, expected):
    np.testing.assert_allclose(x, y, atol=1e-6)
  rounds.close()


@pytest.mark.parametrize('kwargs, match', [
    ({'client_optimizer': 'sgd', 'model_aggregator_is_default': False, 'update_attacks': False},
     'default mean aggregation only'),
    ({'client_optimizer': 'sgd', 'model_aggregator_is_default': True, 'update_attacks': True},
     'does not simulate update attacks'),
])
def test_unsupported_settings(kwargs, match):
  with pytest.raises(ValueError, match=match):
    vectorized.check_supported(**kwargs)
  with pytest.raises(ValueError, match='--simulation=fused '):
    vectorized.check_supported(**kwargs, simulation='fused')


def test_unknown_client_loop():
  task = tasks.create_task('seed_linear')
  with pytest.raises(ValueError, match='client_loop must be one of'):
    vectorized.VectorizedRounds(task, 0.1, algorithms.create_optimizer('sgd', 1.0),
                                client_loop='threads')


def test_plans_with_update_attacks_are_refused():
  task = tasks.create_task('seed_linear')
  rounds = vectorized.VectorizedRounds(task, 0.1, algorithms.create_optimizer('sgd', 1.0))
  config = faults.FaultConfig(byzantine_fraction=0.4, attack='sign_flip')
  plans = list(plan_lib.RoundPlanner(task, 5, config, seed=0).plan(1).clients)
  with pytest.raises(ValueError, match='does not simulate update attacks'):
    rounds.pack(plans)
  rounds.close()


@pytest.mark.parametrize('client_loop', vectorized.CLIENT_LOOPS)
def test_clients_in_groups_give_the_same_round(client_loop):
  # 8 clients run as groups of 3, 3 and 2 programs: the sums add up to the one-program round.
  tf.random.set_seed(0)
  task = tasks.create_task('digits', {'model': 'mlp', 'num_clients': 10, 'seed': 3})
  process = algorithms.create_learning_process(
      'fedavg', task, algorithms.create_optimizer('sgd', 0.1),
      algorithms.create_optimizer('sgd', 1.0))
  state = process.set_model_weights(process.initialize(), plan_lib.initial_model_weights(task, 0))
  plans = list(plan_lib.RoundPlanner(task, 8, seed=0).plan(1).clients)
  outs = []
  for group in (128, 3):
    rounds = vectorized.VectorizedRounds(task, 0.1, algorithms.create_optimizer('sgd', 1.0),
                                         client_loop=client_loop, clients_per_program=group)
    outs.append(rounds.next(state, plans))
    rounds.close()
  whole, grouped = outs
  for a, b in zip(whole.state.global_model_weights.trainable,
                  grouped.state.global_model_weights.trainable):
    np.testing.assert_allclose(a, b, atol=1e-6)
  a, b = whole.metrics['client_work']['train'], grouped.metrics['client_work']['train']
  assert a['num_examples'] == b['num_examples'] and a['num_batches'] == b['num_batches']
  assert a['loss'] == pytest.approx(b['loss'], rel=1e-6)
  with pytest.raises(ValueError, match='clients_per_program must be >= 1'):
    vectorized.VectorizedRounds(task, 0.1, algorithms.create_optimizer('sgd', 1.0),
                                clients_per_program=0)
