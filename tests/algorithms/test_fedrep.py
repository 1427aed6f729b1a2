"""FedRep and FedPer, step by step against independent NumPy implementations (a two-layer linear
model: body W1, head W2), the head split, resume and refusals."""

import csv
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from tff_lab import algorithms
from tff_lab import tasks
from tff_lab.algorithms import fedrep
from tff_lab.simulation import plan as plan_lib
from tff_lab.training import checkpoint
from tff_lab.training import config as config_lib
from tff_lab.training import loop


def _two_layer_linear():
  inputs = tf.keras.Input(shape=(2,))
  hidden = tf.keras.layers.Dense(3, use_bias=False, name='body')(inputs)
  outputs = tf.keras.layers.Dense(1, use_bias=False, name='head')(hidden)
  return tf.keras.Model(inputs, outputs, name='two_layer_linear')


def _client_arrays(task):
  out = {}
  for cid in task.train_data.client_ids:
    batch = next(iter(task.train_data.create_tf_dataset_for_client(cid).batch(10_000)))
    out[cid] = (batch['x'].numpy().astype(np.float64), batch['y'].numpy().astype(np.float64))
  return out


def _grads(xs, ys, w1, w2):
  """∇ of mean((x W1 W2 − y)²) with respect to W1 and W2."""
  r = xs @ w1 @ w2 - ys.reshape(-1, 1)
  return 2.0 / len(ys) * xs.T @ (r @ w2.T), 2.0 / len(ys) * (xs @ w1).T @ r


def _numpy_rounds(arrays, w1, w2, plans, lr, lr_server, epochs, head_epochs, variant):
  """FedRep (Collins et al. 2021, Alg. 1) or FedPer (Arivazhagan et al. 2019), full batch."""
  heads, trajectory = {}, []
  for plan in plans:
    deltas = []
    for cid in plan.client_ids:
      xs, ys = arrays[cid]
      h, phi = heads.get(cid, w2).copy(), w1.copy()
      if variant == 'fedrep':
        for _ in range(head_epochs):
          h = h - lr * _grads(xs, ys, phi, h)[1]
        for _ in range(epochs):
          phi = phi - lr * _grads(xs, ys, phi, h)[0]
      else:
        for _ in range(epochs):
          g1, g2 = _grads(xs, ys, phi, h)
          phi, h = phi - lr * g1, h - lr * g2
      heads[cid] = h
      deltas.append(phi - w1)
    w1 = w1 + lr_server * np.mean(deltas, axis=0)  # equal clients: FedPer's weights are equal
    trajectory.append((w1.copy(), {k: v.copy() for k, v in heads.items()}))
  return trajectory


@pytest.fixture(scope='module', name='task')
def fixture_task():
  base = tasks.create_task('seed_linear', {'num_clients': 8, 'iid': False, 'seed': 3})
  sizes = {len(y) for _, y in _client_arrays(base).values()}
  assert len(sizes) == 1  # equal clients: one batch is exactly one client's epoch
  return dataclasses.replace(base, model_fn=_two_layer_linear).with_train_spec(
      batch_size=sizes.pop(), num_epochs=2, shuffle_buffer_size=1)


@pytest.mark.parametrize('variant', ['fedrep', 'fedper'])
def test_rounds_equal_numpy_step_by_step(task, variant):
  lr, lr_server, epochs, head_epochs, m = 0.05, 0.9, 2, 3, 3
  spec = fedrep.FEDREP if variant == 'fedrep' else fedrep.FEDPER
  store = spec.initial_store(task)
  rounds = fedrep.FedRepRounds(task, lr, algorithms.create_optimizer('sgd', lr_server), store,
                               variant=variant, head_layers=1, head_epochs=head_epochs)
  assert rounds.mask == [False, True]
  process = spec.build_process(task, algorithms.create_optimizer('sgd', lr),
                               algorithms.create_optimizer('sgd', lr_server))
  theta0 = plan_lib.initial_model_weights(task, 0)
  state = process.set_model_weights(process.initialize(), theta0)
  planner = plan_lib.RoundPlanner(task, m, seed=2)
  plans = [planner.plan(r) for r in range(1, 5)]
  seen = [c for p in plans for c in p.client_ids]
  assert len(set(seen)) < len(seen)  # some client comes back: its head must carry over
  w1, w2 = (a.astype(np.float64) for a in theta0.trainable)
  expected = _numpy_rounds(_client_arrays(task), w1, w2, plans, lr, lr_server, epochs,
                           head_epochs, variant)
  for r, (plan, (body, heads)) in enumerate(zip(plans, expected), start=1):
    out = rounds.next(state, plan)
    state = out.state
    np.testing.assert_allclose(state.global_model_weights.trainable[0], body, atol=1e-5,
                               err_msg=f'body, round {r}')
    np.testing.assert_array_equal(state.global_model_weights.trainable[1], theta0.trainable[1])
    assert len(store) == len(heads)
    for cid, head in heads.items():
      np.testing.assert_allclose(store.get(cid)[fedrep.STATE][0], head, atol=1e-5,
                                 err_msg=f'head of {cid}, round {r}')
      personal = rounds.personal_model_weights(state.global_model_weights, cid)
      np.testing.assert_array_equal(personal.trainable[0], state.global_model_weights.trainable[0])
      np.testing.assert_array_equal(personal.trainable[1], store.get(cid)[fedrep.STATE][0])
    assert out.metrics['client_work'][variant]['contributing_clients'] == m
    assert out.metrics['client_work']['train']['num_batches'] == m * epochs
  # The two variants differ (FedRep's head phase comes first, with its own epochs).
  other = _numpy_rounds(_client_arrays(task), w1, w2, plans, lr, lr_server, epochs, head_epochs,
                        'fedper' if variant == 'fedrep' else 'fedrep')
  assert np.abs(other[-1][0] - expected[-1][0]).max() > 1e-4


def test_fedrep_mean_is_uniform_and_fedpers_weighted():
  assert not fedrep.FEDREP.weighted and fedrep.FEDPER.weighted
  assert 'fedrep_head_epochs' in fedrep.FEDREP.hparams
  assert 'fedrep_head_epochs' not in fedrep.FEDPER.hparams


def test_head_split_by_count_and_by_name():
  task = tasks.create_task('digits', {'num_clients': 4, 'model': 'mlp'})
  for _ in range(2):
    task.model_fn()  # earlier models shift Keras' automatic names ...
  model = fedrep.canonical_model(task)  # ... but not those of the model in a fresh graph
  names = [name for name, _ in fedrep.weighted_layers(model)]
  assert names == ['dense', 'dense_1', 'dense_2']
  assert len(model.trainable_variables) == 6  # kernels and biases
  assert fedrep.head_mask(model, head_layers=1) == [False] * 4 + [True] * 2
  assert fedrep.head_mask(model, head_layers=2) == [False] * 2 + [True] * 4
  assert fedrep.head_mask(model, head_layer_name=names[1]) == [False] * 2 + [True] * 4
  assert fedrep.head_mask(model, 1, head_layer_name=names[2]) == [False] * 4 + [True] * 2
  with pytest.raises(ValueError, match="head_layer_name='nope' names no layer") as info:
    fedrep.head_mask(model, head_layer_name='nope')
  assert '\n' not in str(info.value) and names[0] in str(info.value)
  with pytest.raises(ValueError, match='head_layers=3 takes all 3 layers'):
    fedrep.head_mask(model, head_layers=3)
  with pytest.raises(ValueError, match=f'head_layer_name={names[0]!r} takes all 3 layers'):
    fedrep.head_mask(model, head_layer_name=names[0])


def _config(tmp_path, name, rounds, algorithm='fedrep', **kwargs):
  kwargs.setdefault('algorithm_hparams', {'fedrep_head_epochs': 2} if algorithm == 'fedrep'
                    else {})
  return config_lib.ExperimentConfig(
      task='digits', task_options={'num_clients': 6, 'model': 'mlp'}, algorithm=algorithm,
      rounds=rounds, clients_per_round=3, eval_every=3, checkpoint_every=2,
      client_learning_rate=0.05, root_output_dir=str(tmp_path), experiment_name=name,
      progress=False, **kwargs)


def _final(tmp_path, name, rounds):
  cfg = _config(tmp_path, name, rounds)
  template = loop.build_process(cfg, loop.build_task(cfg)).initialize()
  return checkpoint.read_checkpoint(str(tmp_path / name / 'checkpoints'), rounds, template)


def test_fedrep_runs_from_the_loop_and_resumes_bit_identically_with_its_heads(tmp_path):
  loop.run_experiment(_config(tmp_path, 'straight', 3))
  loop.run_experiment(_config(tmp_path, 'resumed', 2))
  loop.run_experiment(_config(tmp_path, 'resumed', 3))
  # The head named by its layer (after the runs above built many models) is the same split.
  named = _config(tmp_path, 'named', 1, algorithm_hparams={'head_layer_name': 'dense_2',
                                                           'fedrep_head_epochs': 2})
  named.validate()
  task = loop.build_task(named)
  rounds = fedrep.FedRepRounds(task, 0.05, algorithms.create_optimizer('sgd', 1.0),
                               fedrep.initial_store(task), head_layer_name='dense_2')
  assert rounds.mask == [False] * 4 + [True] * 2
  a, b = _final(tmp_path, 'straight', 3), _final(tmp_path, 'resumed', 3)
  for x, y in zip(a.state.global_model_weights.trainable, b.state.global_model_weights.trainable):
    np.testing.assert_array_equal(x, y)
  sa, sb = a.extra['client_store'], b.extra['client_store']
  assert sa['client_ids'] == sb['client_ids'] and len(sa['client_ids']) >= 3
  for x, y in zip(sa['clients'], sb['clients']):
    for u, v in zip(x[fedrep.STATE], y[fedrep.STATE]):
      np.testing.assert_array_equal(u, v)
  with open(tmp_path / 'resumed' / 'metrics.csv') as f:
    rows = list(csv.DictReader(f))
  assert [r['round'] for r in rows] == ['1', '2', '3']
  assert float(rows[-1]['fed_eval_personal_num_clients']) == 6  # personalised models reported


@pytest.mark.parametrize('algorithm, settings, message', [
    ('fedrep', {'algorithm_hparams': {'head_layer_name': 'nope'}},
     "head_layer_name='nope' names no layer"),
    ('fedper', {'algorithm_hparams': {'head_layers': 3}}, 'head_layers=3 takes all 3 layers'),
    ('fedrep', {'algorithm_hparams': {'fedrep_head_epochs': 0}}, 'fedrep_head_epochs must be >= 1'),
    ('fedper', {'algorithm_hparams': {'fedrep_head_epochs': 2}},
     'fedrep_head_epochs only applies to --algorithm=fedrep'),
    ('fedrep', {'client_optimizer': 'adam'}, 'runs client SGD'),
    ('fedper', {'aggregation': {'clip_norm': 1.0}}, 'plain mean'),
    ('fedrep', {'byzantine_fraction': 0.34}, 'does not simulate update attacks'),
    ('fedper', {'simulation': 'vectorized'}, 'not fedper'),
])
def test_what_fedrep_and_fedper_do_not_run_is_refused_in_one_line(tmp_path, algorithm, settings,
                                                                  message):
  with pytest.raises(config_lib.ConfigError, match=message) as info:
    loop.run_experiment(_config(tmp_path, 'bad', 2, algorithm=algorithm, **settings))
  assert '\n' not in str(info.value)
  assert not (tmp_path / 'bad').exists()
