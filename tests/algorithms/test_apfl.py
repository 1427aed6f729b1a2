"""APFL, step by step against an independent NumPy implementation of Algorithm 1 (adaptive α)."""

import csv

import numpy as np
import pytest

from tff_lab import algorithms
from tff_lab import tasks
from tff_lab.algorithms import apfl
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


def _numpy_apfl(arrays, theta0, plans, lr, lr_server, epochs, alpha0, alpha_lr):
  """Deng et al. 2020, Alg. 1 with eq. (8): all updates of a step at the step's old values."""
  w = theta0.copy()
  v, alpha = {}, {}
  trajectory = []
  for plan in plans:
    deltas, counts = [], []
    for cid in plan.client_ids:
      xs, ys = arrays[cid]
      wk = w.copy()
      vk = v.get(cid, w).copy()  # initialised from the global model when first seen
      ak = alpha.get(cid, alpha0)
      for _ in range(epochs):
        mixed = ak * vk + (1 - ak) * wk
        g_mixed = _grad(xs, ys, mixed)
        new_w = wk - lr * _grad(xs, ys, wk)
        new_v = vk - lr * ak * g_mixed  # ∇_v f(αv + (1 − α)w) = α ∇f(mixed)
        ak = float(np.clip(ak - alpha_lr * np.sum((vk - wk) * g_mixed), 0.0, 1.0))
        wk, vk = new_w, new_v
      v[cid], alpha[cid] = vk, ak
      deltas.append(wk - w)
      counts.append(epochs * len(ys))
    w = w + lr_server * np.average(deltas, axis=0, weights=counts)
    trajectory.append((w.copy(), {k: a.copy() for k, a in v.items()}, dict(alpha)))
  return trajectory


@pytest.fixture(scope='module', name='setting')
def fixture_setting():
  lr, lr_server, epochs, m, alpha0, alpha_lr = 0.05, 0.8, 3, 4, 0.4, 0.5
  task = tasks.create_task('seed_linear', {'num_clients': 10, 'iid': False, 'seed': 2})
  sizes = {len(y) for _, y in _client_arrays(task).values()}
  assert len(sizes) == 1  # equal clients: one batch is exactly one client's epoch
  task = task.with_train_spec(batch_size=sizes.pop(), num_epochs=epochs, shuffle_buffer_size=1)
  return task, lr, lr_server, epochs, m, alpha0, alpha_lr


def test_apfl_rounds_equal_numpy_step_by_step(setting):
  task, lr, lr_server, epochs, m, alpha0, alpha_lr = setting
  store = apfl.initial_store(task)
  rounds = apfl.APFLRounds(task, lr, algorithms.create_optimizer('sgd', lr_server), store,
                           alpha0, alpha_lr)
  process = apfl.SPEC.build_process(task, algorithms.create_optimizer('sgd', lr),
                                    algorithms.create_optimizer('sgd', lr_server))
  theta0 = plan_lib.initial_model_weights(task, 0)
  state = process.set_model_weights(process.initialize(), theta0)
  planner = plan_lib.RoundPlanner(task, m, seed=5)
  plans = [planner.plan(r) for r in range(1, 3)]
  seen = [c for p in plans for c in p.client_ids]
  assert len(set(seen)) < len(seen)  # some client comes back: its v_i, α_i must carry over
  arrays = _client_arrays(task)
  theta = theta0.trainable[0].astype(np.float64)
  expected = _numpy_apfl(arrays, theta, plans, lr, lr_server, epochs, alpha0, alpha_lr)
  for r, (plan, (w, v, alpha)) in enumerate(zip(plans, expected), start=1):
    out = rounds.next(state, plan)
    state = out.state
    np.testing.assert_allclose(state.global_model_weights.trainable[0], w, atol=1e-5,
                               err_msg=f'global model, round {r}')
    assert sorted(c for c in task.train_data.client_ids if c in store) == sorted(v)
    for cid, value in v.items():
      held = store.get(cid)
      np.testing.assert_allclose(held[apfl.STATE][0], value, atol=1e-5,
                                 err_msg=f'v_{cid}, round {r}')
      np.testing.assert_allclose(held[apfl.ALPHA][0], alpha[cid], atol=1e-5,
                                 err_msg=f'alpha_{cid}, round {r}')
      personal = rounds.personal_model_weights(state.global_model_weights, cid)
      np.testing.assert_allclose(personal.trainable[0],
                                 alpha[cid] * value + (1 - alpha[cid]) * w, atol=1e-5)
    metrics = out.metrics['client_work']
    assert metrics['train']['num_batches'] == m * epochs
    assert metrics['apfl']['contributing_clients'] == m
    assert metrics['apfl']['clients_with_state'] == len(v)
  # α moved (the adaptive rule acts), and stays in [0, 1].
  last_alpha = expected[-1][2]
  assert max(abs(a - alpha0) for a in last_alpha.values()) > 1e-3
  assert all(0.0 <= a <= 1.0 for a in last_alpha.values())
  # A client never sampled has no personal model: its personalised model is the global one.
  unseen = [c for c in task.train_data.client_ids if c not in store]
  assert unseen
  assert apfl.personal_model_weights(state.global_model_weights, store,
                                     unseen[0]) is state.global_model_weights
  # apfl_alpha_lr = 0 keeps α fixed (and changes v).
  fixed = _numpy_apfl(arrays, theta, plans, lr, lr_server, epochs, alpha0, 0.0)
  assert set(fixed[-1][2].values()) == {alpha0}
  cid = plans[-1].client_ids[0]
  assert np.abs(fixed[-1][1][cid] - expected[-1][1][cid]).max() > 1e-6


def test_alpha_is_clipped_to_the_unit_interval(setting):
  task, lr, lr_server, epochs, m, _, _ = setting
  plans = [plan_lib.RoundPlanner(task, m, seed=3).plan(1)]
  expected = _numpy_apfl(_client_arrays(task), plan_lib.initial_model_weights(
      task, 0).trainable[0].astype(np.float64), plans, lr, lr_server, epochs, 0.9, 1e4)
  store = apfl.initial_store(task)
  rounds = apfl.APFLRounds(task, lr, algorithms.create_optimizer('sgd', lr_server), store,
                           0.9, 1e4)
  process = apfl.SPEC.build_process(task, algorithms.create_optimizer('sgd', lr),
                                    algorithms.create_optimizer('sgd', lr_server))
  state = process.set_model_weights(process.initialize(), plan_lib.initial_model_weights(task, 0))
  rounds.next(state, plans[0])
  alphas = {cid: float(store.get(cid)[apfl.ALPHA][0]) for cid in plans[0].client_ids}
  assert all(a in (0.0, 1.0) for a in expected[0][2].values())  # the huge rate hits a bound
  for cid, a in alphas.items():
    np.testing.assert_allclose(a, expected[0][2][cid], atol=1e-6)
    np.testing.assert_allclose(store.get(cid)[apfl.STATE][0], expected[0][1][cid], atol=1e-5)


def test_global_model_is_fedavg(setting):
  """APFL's personal models change nothing of the global model: it is FedAvg's."""
  task, lr, lr_server, _, m, alpha0, alpha_lr = setting
  theta0 = plan_lib.initial_model_weights(task, 0)
  planner = plan_lib.RoundPlanner(task, m, seed=1)
  process = algorithms.create_learning_process(
      'fedavg', task, algorithms.create_optimizer('sgd', lr),
      algorithms.create_optimizer('sgd', lr_server))
  fedavg_state = process.set_model_weights(process.initialize(), theta0)
  rounds = apfl.APFLRounds(task, lr, algorithms.create_optimizer('sgd', lr_server),
                           apfl.initial_store(task), alpha0, alpha_lr)
  state = fedavg_state
  for r in (1, 2):
    datasets = plan_lib.PlanDatasets(task)(planner.plan(r))
    fedavg_state = process.next(fedavg_state, datasets).state
    state = rounds.next(state, planner.plan(r)).state
    np.testing.assert_allclose(state.global_model_weights.trainable[0],
                               fedavg_state.global_model_weights.trainable[0], atol=1e-6)


def _config(tmp_path, name, rounds, **kwargs):
  kwargs.setdefault('algorithm_hparams', {'apfl_alpha': 0.5, 'apfl_alpha_lr': 0.1})
  return config_lib.ExperimentConfig(
      task='digits', task_options={'num_clients': 8}, algorithm='apfl', rounds=rounds,
      clients_per_round=3, eval_every=0, checkpoint_every=2, client_learning_rate=0.05,
      root_output_dir=str(tmp_path), experiment_name=name, progress=False, **kwargs)


def _final(tmp_path, name, rounds):
  cfg = _config(tmp_path, name, rounds)
  template = loop.build_process(cfg, loop.build_task(cfg)).initialize()
  return checkpoint.read_checkpoint(str(tmp_path / name / 'checkpoints'), rounds, template)


def test_apfl_runs_from_the_loop_and_resumes_bit_identically_with_its_client_state(tmp_path):
  loop.run_experiment(_config(tmp_path, 'straight', 4))
  loop.run_experiment(_config(tmp_path, 'resumed', 2))  # stops after round 2 (checkpoint 2) ...
  loop.run_experiment(_config(tmp_path, 'resumed', 4))  # ... and resumes from it
  a, b = _final(tmp_path, 'straight', 4), _final(tmp_path, 'resumed', 4)
  for x, y in zip(a.state.global_model_weights.trainable, b.state.global_model_weights.trainable):
    np.testing.assert_array_equal(x, y)
  sa, sb = a.extra['client_store'], b.extra['client_store']
  assert sa['client_ids'] == sb['client_ids'] and len(sa['client_ids']) > 3
  for x, y in zip(sa['clients'], sb['clients']):
    for key in (apfl.STATE, apfl.ALPHA):
      for u, v in zip(x[key], y[key]):
        np.testing.assert_array_equal(u, v)
  with open(tmp_path / 'resumed' / 'metrics.csv') as f:
    rows = list(csv.DictReader(f))
  assert [r['round'] for r in rows] == ['1', '2', '3', '4']
  assert 'client_work/apfl/personal_train_accuracy' in rows[0]


@pytest.mark.parametrize('settings, message', [
    ({'algorithm_hparams': {'apfl_alpha': 1.5}}, r'apfl_alpha must be in \[0, 1\]'),
    ({'algorithm_hparams': {'apfl_alpha': -0.1}}, 'apfl_alpha must be >= 0'),
    ({'algorithm_hparams': {'apfl_alpha_lr': -0.1}}, 'apfl_alpha_lr must be >= 0'),
    ({'client_optimizer': 'adam'}, 'runs client SGD'),
    ({'aggregation': {'clip_norm': 1.0}}, 'plain weighted mean'),
    ({'aggregation': {'secure_aggregation': True}}, 'plain weighted mean|secure'),
    ({'byzantine_fraction': 0.25}, 'does not simulate update attacks'),
    ({'simulation': 'fused'}, 'apfl'),
])
def test_what_apfl_does_not_run_is_refused_in_one_line(tmp_path, settings, message):
  with pytest.raises(config_lib.ConfigError, match=message) as info:
    _config(tmp_path, 'bad', 2, **settings).validate()
  assert '\n' not in str(info.value)
  assert not (tmp_path / 'bad').exists()


def test_its_process_alone_is_refused_and_its_spec_says_why():
  task = tasks.create_task('seed_linear')
  with pytest.raises(ValueError, match='keeps client state'):
    algorithms.create_learning_process('apfl', task, algorithms.create_optimizer('sgd', 0.1),
                                       algorithms.create_optimizer('sgd', 1.0))
  assert apfl.SPEC.client_state == ('personal_model', 'alpha') and not apfl.SPEC.runs_in_graph
  assert apfl.SPEC.resolve_hparams({}) == {'apfl_alpha': 0.25, 'apfl_alpha_lr': 0.01}
  with pytest.raises(ValueError, match=r'apfl_alpha must be in \[0, 1\]'):
    apfl.APFLRounds(task, 0.1, algorithms.create_optimizer('sgd', 1.0),
                    apfl.initial_store(task), 1.2, 0.0)
