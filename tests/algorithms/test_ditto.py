"""Ditto, step by step against an independent NumPy implementation of Algorithm 1 (FedAvg as G)."""

import csv

import numpy as np
import pytest

from tff_lab import algorithms
from tff_lab import tasks
from tff_lab.algorithms import ditto
from tff_lab.simulation import plan as plan_lib
from tff_lab.training import checkpoint
from tff_lab.training import config as config_lib
from tff_lab.training import loop


def _client_arrays(task):
  out = {}
  for cid in task.train_data.client_ids:
    batch = next(iter(task.train_data.create_tf_dataset_for_client(cid).batch(10_000)))
    out[cid] = (batch['x'].numpy().astype(np.float64), batch['y'].numpy().astype(np.float64))
  return out


def _grad(xs, ys, theta):
  return 2.0 / len(ys) * xs.T @ (xs @ theta - ys.reshape(-1, 1))  # ∇ mean((xθ − y)²)


def _numpy_ditto(arrays, theta0, plans, lr, lr_server, epochs, lam):
  """Li et al. 2021, Alg. 1: FedAvg global model; v_k ← v_k − η(∇F_k(v_k) + λ(v_k − wᵗ))."""
  w = theta0.copy()
  v = {}
  trajectory = []
  for plan in plans:
    deltas, counts = [], []
    for cid in plan.client_ids:
      xs, ys = arrays[cid]
      wk = w.copy()
      for _ in range(epochs):
        wk = wk - lr * _grad(xs, ys, wk)
      vk = v.get(cid, w).copy()  # initialised from the global model when first seen
      for _ in range(epochs):
        vk = vk - lr * (_grad(xs, ys, vk) + lam * (vk - w))
      v[cid] = vk
      deltas.append(wk - w)
      counts.append(epochs * len(ys))
    w = w + lr_server * np.average(deltas, axis=0, weights=counts)
    trajectory.append((w.copy(), {k: a.copy() for k, a in v.items()}))
  return trajectory


@pytest.fixture(scope='module', name='setting')
def fixture_setting():
  lr, lr_server, epochs, m, lam = 0.05, 0.8, 3, 4, 0.7
  task = tasks.create_task('seed_linear', {'num_clients': 10, 'iid': False, 'seed': 2})
  sizes = {len(y) for _, y in _client_arrays(task).values()}
  assert len(sizes) == 1  # equal clients: one batch is exactly one client's epoch
  task = task.with_train_spec(batch_size=sizes.pop(), num_epochs=epochs, shuffle_buffer_size=1)
  return task, lr, lr_server, epochs, m, lam


def test_ditto_rounds_equal_numpy_step_by_step(setting):
  task, lr, lr_server, epochs, m, lam = setting
  store = ditto.initial_store(task)
  rounds = ditto.DittoRounds(task, lr, algorithms.create_optimizer('sgd', lr_server), store, lam)
  process = ditto.SPEC.build_process(task, algorithms.create_optimizer('sgd', lr),
                                     algorithms.create_optimizer('sgd', lr_server))
  theta0 = plan_lib.initial_model_weights(task, 0)
  state = process.set_model_weights(process.initialize(), theta0)
  planner = plan_lib.RoundPlanner(task, m, seed=5)
  plans = [planner.plan(r) for r in range(1, 5)]
  seen = [c for p in plans for c in p.client_ids]
  assert len(set(seen)) < len(seen)  # some client comes back: its v_k must carry over
  expected = _numpy_ditto(_client_arrays(task), theta0.trainable[0].astype(np.float64), plans,
                          lr, lr_server, epochs, lam)
  for r, (plan, (w, v)) in enumerate(zip(plans, expected), start=1):
    out = rounds.next(state, plan)
    state = out.state
    np.testing.assert_allclose(state.global_model_weights.trainable[0], w, atol=1e-5,
                               err_msg=f'global model, round {r}')
    assert sorted(c for c in task.train_data.client_ids if c in store) == sorted(v)
    for cid, value in v.items():
      np.testing.assert_allclose(store.get(cid)[ditto.STATE][0], value, atol=1e-5,
                                 err_msg=f'v_{cid}, round {r}')
      personal = rounds.personal_model_weights(state.global_model_weights, cid)
      np.testing.assert_array_equal(personal.trainable[0], store.get(cid)[ditto.STATE][0])
    metrics = out.metrics['client_work']
    assert metrics['train']['num_batches'] == m * epochs
    assert metrics['ditto']['contributing_clients'] == m
    assert metrics['ditto']['clients_with_state'] == len(v)
  # A client never sampled has no personal model: its personalised model is the global one.
  unseen = [c for c in task.train_data.client_ids if c not in store]
  assert unseen
  assert ditto.personal_model_weights(state.global_model_weights, store,
                                      unseen[0]) is state.global_model_weights
  # The personal models differ from the global one, and λ matters (λ = 0: local training).
  cid = plans[-1].client_ids[0]
  assert np.abs(store.get(cid)[ditto.STATE][0] - expected[-1][0]).max() > 1e-3
  alone = _numpy_ditto(_client_arrays(task), theta0.trainable[0].astype(np.float64), plans,
                       lr, lr_server, epochs, 0.0)
  assert np.abs(alone[-1][1][cid] - expected[-1][1][cid]).max() > 1e-3


def test_global_model_is_fedavg(setting):
  """Ditto's personal models change nothing of the global model: it is FedAvg's."""
  task, lr, lr_server, epochs, m, lam = setting
  theta0 = plan_lib.initial_model_weights(task, 0)
  planner = plan_lib.RoundPlanner(task, m, seed=1)
  process = algorithms.create_learning_process(
      'fedavg', task, algorithms.create_optimizer('sgd', lr),
      algorithms.create_optimizer('sgd', lr_server))
  fedavg_state = process.set_model_weights(process.initialize(), theta0)
  rounds = ditto.DittoRounds(task, lr, algorithms.create_optimizer('sgd', lr_server),
                             ditto.initial_store(task), lam)
  state = fedavg_state
  for r in (1, 2):
    datasets = plan_lib.PlanDatasets(task)(planner.plan(r))
    fedavg_state = process.next(fedavg_state, datasets).state
    state = rounds.next(state, planner.plan(r)).state
    np.testing.assert_allclose(state.global_model_weights.trainable[0],
                               fedavg_state.global_model_weights.trainable[0], atol=1e-6)


def test_weighted_mean_against_numpy():
  rng = np.random.default_rng(0)
  deltas = [[rng.normal(size=(3, 2)), rng.normal(size=4)] for _ in range(3)]
  counts = [5, 1, 14]
  got = ditto.weighted_mean(deltas, counts)
  for i in range(2):
    want = sum(c * d[i] for c, d in zip(counts, deltas)) / sum(counts)
    np.testing.assert_allclose(got[i], want, rtol=1e-6)


def _config(tmp_path, name, rounds, **kwargs):
  kwargs.setdefault('algorithm_hparams', {'ditto_lambda': 0.5})
  return config_lib.ExperimentConfig(
      task='seed_linear', task_options={'iid': False}, algorithm='ditto', rounds=rounds,
      clients_per_round=4, eval_every=0, checkpoint_every=2, client_learning_rate=0.05,
      root_output_dir=str(tmp_path), experiment_name=name, progress=False, **kwargs)


def _final(tmp_path, name, rounds):
  cfg = _config(tmp_path, name, rounds)
  template = loop.build_process(cfg, loop.build_task(cfg)).initialize()
  return checkpoint.read_checkpoint(str(tmp_path / name / 'checkpoints'), rounds, template)


def test_ditto_runs_from_the_loop_and_resumes_bit_identically_with_its_personal_models(
    tmp_path):
  loop.run_experiment(_config(tmp_path, 'straight', 6))
  loop.run_experiment(_config(tmp_path, 'resumed', 3))  # stops after round 3 (checkpoint 3) ...
  loop.run_experiment(_config(tmp_path, 'resumed', 6))  # ... and resumes from it
  a, b = _final(tmp_path, 'straight', 6), _final(tmp_path, 'resumed', 6)
  for x, y in zip(a.state.global_model_weights.trainable, b.state.global_model_weights.trainable):
    np.testing.assert_array_equal(x, y)
  sa, sb = a.extra['client_store'], b.extra['client_store']
  assert sa['client_ids'] == sb['client_ids'] and len(sa['client_ids']) > 4
  for x, y in zip(sa['clients'], sb['clients']):
    for u, v in zip(x[ditto.STATE], y[ditto.STATE]):
      np.testing.assert_array_equal(u, v)
  with open(tmp_path / 'resumed' / 'metrics.csv') as f:
    rows = list(csv.DictReader(f))
  assert [r['round'] for r in rows] == ['1', '2', '3', '4', '5', '6']
  assert 'client_work/ditto/personal_train_accuracy' in rows[0]


@pytest.mark.parametrize('settings, message', [
    ({'algorithm_hparams': {'ditto_lambda': -0.1}}, 'ditto_lambda must be >= 0'),
    ({'client_optimizer': 'adam'}, 'runs client SGD'),
    ({'aggregation': {'clip_norm': 1.0}}, 'plain weighted mean'),
    ({'aggregation': {'secure_aggregation': True}}, 'plain weighted mean|secure'),
    ({'byzantine_fraction': 0.25}, 'does not simulate update attacks'),
    ({'simulation': 'fused'}, 'not ditto'),
])
def test_what_ditto_does_not_run_is_refused_in_one_line(tmp_path, settings, message):
  with pytest.raises(config_lib.ConfigError, match=message) as info:
    loop.run_experiment(_config(tmp_path, 'bad', 2, **settings))
  assert '\n' not in str(info.value)
  assert not (tmp_path / 'bad').exists()


def test_its_process_alone_is_refused_and_its_spec_says_why():
  task = tasks.create_task('seed_linear')
  with pytest.raises(ValueError, match='keeps client state'):
    algorithms.create_learning_process('ditto', task, algorithms.create_optimizer('sgd', 0.1),
                                       algorithms.create_optimizer('sgd', 1.0))
  assert ditto.SPEC.client_state == ('personal_model',) and not ditto.SPEC.runs_in_graph
  with pytest.raises(ValueError, match='ditto_lambda must be >= 0'):
    ditto.DittoRounds(task, 0.1, algorithms.create_optimizer('sgd', 1.0),
                      ditto.initial_store(task), -1.0)
