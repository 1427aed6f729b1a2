"""FedBN, step by step against an independent NumPy implementation (Dense -> BatchNormalization
-> Dense on clients with shifted features), its batch-norm masks, resume and refusals."""

import csv

import numpy as np
import pytest
import tensorflow as tf

from tff_lab import algorithms
from tff_lab import models
from tff_lab import tasks
from tff_lab.algorithms import fedbn
from tff_lab.simulation import plan as plan_lib
from tff_lab.training import checkpoint
from tff_lab.training import config as config_lib
from tff_lab.training import loop

EPS, MOMENTUM = 1e-3, 0.5
BATCH = 4  # divides every client's training examples: batches follow the epochs


def _dense_bn_dense():
  inputs = tf.keras.Input(shape=(2,))
  hidden = tf.keras.layers.Dense(3, use_bias=False)(inputs)
  hidden = tf.keras.layers.BatchNormalization(momentum=MOMENTUM, epsilon=EPS)(hidden)
  outputs = tf.keras.layers.Dense(1, use_bias=False)(hidden)
  return tf.keras.Model(inputs, outputs, name='dense_bn_dense')


def _client_arrays(task):
  out = {}
  for cid in task.train_data.client_ids:
    batch = next(iter(task.train_data.create_tf_dataset_for_client(cid).batch(10_000)))
    out[cid] = (batch['x'].numpy().astype(np.float64), batch['y'].numpy().astype(np.float64))
  return out


def _grads(xs, ys, w1, gamma, beta, w2):
  """∇ of mean((BN(x W1) W2 − y)²) (BN with the batch's statistics) and those statistics."""
  z = xs @ w1
  mean, var = z.mean(axis=0), z.var(axis=0)
  zhat = (z - mean) / np.sqrt(var + EPS)
  a = gamma * zhat + beta
  dout = 2.0 / len(ys) * (a @ w2 - ys.reshape(-1, 1))
  da = dout @ w2.T
  dzhat = da * gamma
  dz = (dzhat - dzhat.mean(axis=0) - zhat * (dzhat * zhat).mean(axis=0)) / np.sqrt(var + EPS)
  return (xs.T @ dz, (da * zhat).sum(axis=0), da.sum(axis=0), a.T @ dout), mean, var


def _numpy_rounds(arrays, theta0, bn0, plans, lr, lr_server, epochs, weighted=True):
  """FedBN (Li et al. 2021, Alg. 1), batches of BATCH in order: W1, W2 averaged, (γ, β, mean,
  var) local."""
  (w1, w2), local, trajectory = theta0, {}, []
  for plan in plans:
    deltas, sizes = [], []
    for cid in plan.client_ids:
      xs, ys = arrays[cid]
      v1, v2 = w1.copy(), w2.copy()
      gamma, beta, mm, mv = (a.copy() for a in local.get(cid, bn0))
      for _ in range(epochs):
        for i in range(0, len(ys), BATCH):
          (g1, gg, gb, g2), mean, var = _grads(xs[i:i + BATCH], ys[i:i + BATCH], v1, gamma, beta,
                                               v2)
          v1, gamma, beta, v2 = v1 - lr * g1, gamma - lr * gg, beta - lr * gb, v2 - lr * g2
          mm, mv = MOMENTUM * mm + (1 - MOMENTUM) * mean, MOMENTUM * mv + (1 - MOMENTUM) * var
      local[cid] = (gamma, beta, mm, mv)
      deltas.append((v1 - w1, v2 - w2))
      sizes.append(len(ys) if weighted else 1)
    p = np.asarray(sizes, np.float64) / np.sum(sizes)
    w1 = w1 + lr_server * sum(pk * d[0] for pk, d in zip(p, deltas))
    w2 = w2 + lr_server * sum(pk * d[1] for pk, d in zip(p, deltas))
    trajectory.append(((w1.copy(), w2.copy()), {k: tuple(a.copy() for a in v)
                                                 for k, v in local.items()}))
  return trajectory


@pytest.fixture(scope='module', name='task')
def fixture_task():
  rng = np.random.default_rng(0)
  sizes, shifts, scales = (10, 15, 20), (-2.0, 0.5, 3.0), (0.5, 1.0, 2.0)
  x = np.concatenate([rng.normal(s, c, (n, 2)) for n, s, c in zip(sizes, shifts, scales)])
  y = (x @ np.array([1.0, -0.5]) > np.mean(x @ np.array([1.0, -0.5]))).astype(np.float32)
  parts = np.split(np.arange(len(x)), np.cumsum(sizes)[:-1])  # feature shift per client
  base = tasks.from_arrays(x.astype(np.float32), 2 * y - 1, model_fn=_dense_bn_dense,
                           prediction_kind='sign', partition=parts, test_fraction=0.2, seed=1)
  return base.with_train_spec(batch_size=BATCH, num_epochs=2, shuffle_buffer_size=1)


def test_rounds_equal_numpy_step_by_step(task):
  lr, lr_server, epochs, m = 0.1, 0.9, 2, 2
  store = fedbn.SPEC.initial_store(task)
  rounds = fedbn.FedBNRounds(task, lr, algorithms.create_optimizer('sgd', lr_server), store)
  # Trainable: W1, γ, β, W2; non-trainable: the moving mean and variance.
  assert rounds.mask == [False, True, True, False] and rounds.non_trainable_mask == [True, True]
  process = fedbn.SPEC.build_process(task, algorithms.create_optimizer('sgd', lr),
                                     algorithms.create_optimizer('sgd', lr_server))
  theta0 = plan_lib.initial_model_weights(task, 0)
  state = process.set_model_weights(process.initialize(), theta0)
  planner = plan_lib.RoundPlanner(task, m, seed=0)
  plans = [planner.plan(r) for r in range(1, 4)]
  seen = [c for p in plans for c in p.client_ids]
  assert len(set(seen)) == 3 and len(set(seen)) < len(seen)  # returning clients carry their BN
  assert set(plans[0].client_ids) != set(seen)  # a client first seen later starts from the initial BN
  w1, gamma0, beta0, w2 = (a.astype(np.float64) for a in theta0.trainable)
  bn0 = (gamma0, beta0) + tuple(a.astype(np.float64) for a in theta0.non_trainable)
  arrays = _client_arrays(task)
  assert len({len(y) for _, y in arrays.values()}) == 3  # unequal clients: the mean is weighted
  assert all(len(y) % BATCH == 0 for _, y in arrays.values())
  expected = _numpy_rounds(arrays, (w1, w2), bn0, plans, lr, lr_server, epochs)
  for r, (plan, ((body1, body2), local)) in enumerate(zip(plans, expected), start=1):
    out = rounds.next(state, plan)
    state = out.state
    weights = state.global_model_weights
    np.testing.assert_allclose(weights.trainable[0], body1, atol=1e-5, err_msg=f'W1, round {r}')
    np.testing.assert_allclose(weights.trainable[3], body2, atol=1e-5, err_msg=f'W2, round {r}')
    for got, initial in zip(list(weights.trainable[1:3]) + list(weights.non_trainable),
                            list(theta0.trainable[1:3]) + list(theta0.non_trainable)):
      np.testing.assert_array_equal(got, initial)  # the server's BN layer is never averaged
    assert len(store) == len(local)
    for cid, bn in local.items():
      held = store.get(cid)[fedbn.STATE]
      assert len(held) == 4
      for name, got, want in zip(('gamma', 'beta', 'moving_mean', 'moving_variance'), held, bn):
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=f'{name} of {cid}, round {r}')
      personal = rounds.personal_model_weights(weights, cid)
      np.testing.assert_array_equal(personal.trainable[0], weights.trainable[0])
      np.testing.assert_array_equal(personal.trainable[3], weights.trainable[3])
      for got, want in zip(list(personal.trainable[1:3]) + list(personal.non_trainable), held):
        np.testing.assert_array_equal(got, want)
    assert out.metrics['client_work']['fedbn']['contributing_clients'] == m
    assert out.metrics['client_work']['fedbn']['head_variables'] == 4
    assert out.metrics['client_work']['train']['num_batches'] == sum(
        epochs * len(arrays[c][1]) // BATCH for c in plan.client_ids)
  # Each client's BN layer is its own: they differ between clients.
  final = expected[-1][1]
  held = {cid: store.get(cid)[fedbn.STATE] for cid in final}
  cids = sorted(held)
  for a, b in zip(cids, cids[1:]):
    assert max(np.abs(u - v).max() for u, v in zip(held[a], held[b])) > 1e-3
  # A client never sampled gets the global model (its initial BN layer).
  unseen = rounds.personal_model_weights(state.global_model_weights, 'no such client')
  assert unseen is state.global_model_weights
  # The weighted mean is FedAvg's: the uniform mean gives another model.
  uniform = _numpy_rounds(arrays, (w1, w2), bn0, plans, lr, lr_server, epochs, weighted=False)
  assert np.abs(uniform[-1][0][0] - expected[-1][0][0]).max() > 1e-4


def test_bn_masks_of_the_cnn_bn_and_refusal_of_a_model_without_bn():
  trainable, non_trainable = fedbn.bn_masks(models.build_cnn_bn((8, 8, 1), 10))
  assert sum(trainable) == 6 and len(trainable) == 11  # γ, β of 3 BN layers; 4 kernels, a bias
  assert non_trainable == [True] * 6
  with pytest.raises(fedbn.NoBatchNormError, match='needs a model with batch normalisation') as e:
    fedbn.bn_masks(models.build_cnn((8, 8, 1), 10))
  assert '\n' not in str(e.value) and 'mcmahan_cnn' in str(e.value)


def _config(tmp_path, name, rounds, model='cnn_bn', eval_every=2, **kwargs):
  return config_lib.ExperimentConfig(
      task='digits', task_options={'num_clients': 6, 'model': model}, algorithm='fedbn',
      rounds=rounds, clients_per_round=3, eval_every=eval_every, checkpoint_every=1,
      client_learning_rate=0.05, root_output_dir=str(tmp_path), experiment_name=name,
      progress=False, **kwargs)


def test_fedbn_runs_from_the_loop_and_resumes_bit_identically_with_its_bn_layers(tmp_path):
  loop.run_experiment(_config(tmp_path, 'straight', 2))  # evaluated (not the resumed: faster)
  loop.run_experiment(_config(tmp_path, 'resumed', 1, eval_every=0))
  loop.run_experiment(_config(tmp_path, 'resumed', 2, eval_every=0))
  cfg = _config(tmp_path, 'straight', 2)
  template = loop.build_process(cfg, loop.build_task(cfg)).initialize()
  a, b = (checkpoint.read_checkpoint(str(tmp_path / name / 'checkpoints'), 2, template)
          for name in ('straight', 'resumed'))
  for x, y in zip(a.state.global_model_weights.trainable, b.state.global_model_weights.trainable):
    np.testing.assert_array_equal(x, y)
  sa, sb = a.extra['client_store'], b.extra['client_store']
  assert sa['client_ids'] == sb['client_ids'] and len(sa['client_ids']) >= 3
  for x, y in zip(sa['clients'], sb['clients']):
    assert len(x[fedbn.STATE]) == 12  # γ, β, moving mean and variance of 3 BN layers
    for u, v in zip(x[fedbn.STATE], y[fedbn.STATE]):
      np.testing.assert_array_equal(u, v)
  with open(tmp_path / 'resumed' / 'metrics.csv') as f:
    assert [r['round'] for r in csv.DictReader(f)] == ['1', '2']
  with open(tmp_path / 'straight' / 'metrics.csv') as f:
    last = list(csv.DictReader(f))[-1]
  assert float(last['fed_eval_personal_num_clients']) == 6  # personalised models reported
  # Each client's own BN layers serve it differently from the global (initial) ones.
  assert last['fed_eval_personal_accuracy_mean'] != last['fed_eval_global_accuracy_mean']


@pytest.mark.parametrize('settings, message', [
    ({'model': 'mlp'}, '--algorithm=fedbn needs a model with batch normalisation'),
    ({'client_optimizer': 'adam'}, 'runs client SGD'),
    ({'aggregation': {'clip_norm': 1.0}}, 'plain weighted mean'),
    ({'byzantine_fraction': 0.34}, 'does not simulate update attacks'),
    ({'simulation': 'vectorized'}, 'not fedbn'),
    ({'algorithm_hparams': {'head_layers': 2}}, 'head_layers only applies to'),
])
def test_what_fedbn_does_not_run_is_refused_in_one_line(tmp_path, settings, message):
  with pytest.raises(config_lib.ConfigError, match=message) as info:
    loop.run_experiment(_config(tmp_path, 'bad', 2, **settings))
  assert '\n' not in str(info.value)
  assert not (tmp_path / 'bad').exists()
