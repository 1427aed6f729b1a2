"""SCAFFOLD, step by step against an independent NumPy implementation of Algorithm 1 (option II)."""

import collections
import csv

import numpy as np
import pytest

from tff_lab import algorithms
from tff_lab import tasks
from tff_lab.algorithms import scaffold
from tff_lab.simulation import backends
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


def _numpy_scaffold(arrays, theta0, plans, lr_local, lr_global, epochs):
  """Karimireddy et al. 2020, Alg. 1, option II, full-batch clients (K = epochs steps), MSE loss."""
  n = len(arrays)
  x, c = theta0.copy(), np.zeros_like(theta0)
  c_i = collections.defaultdict(lambda: np.zeros_like(theta0))
  trajectory = []
  for plan in plans:
    dy, dc = [], []
    for cid in plan.client_ids:
      xs, ys = arrays[cid]
      y = x.copy()
      for _ in range(epochs):
        grad = 2.0 / len(ys) * xs.T @ (xs @ y - ys.reshape(-1, 1))  # ∇ mean((xθ − y)²)
        y = y - lr_local * (grad - c_i[cid] + c)
      new_ci = c_i[cid] - c + (x - y) / (epochs * lr_local)
      dy.append(y - x)
      dc.append(new_ci - c_i[cid])
      c_i[cid] = new_ci
    x = x + lr_global * np.mean(dy, axis=0)
    c = c + np.sum(dc, axis=0) / n
    trajectory.append((x.copy(), c.copy(), {k: v.copy() for k, v in c_i.items()}))
  return trajectory


def test_scaffold_rounds_equal_numpy_step_by_step():
  lr_local, lr_global, epochs, m = 0.05, 0.8, 3, 4
  task = tasks.create_task('seed_linear', {'num_clients': 10, 'iid': False, 'seed': 2})
  sizes = {len(y) for _, y in _client_arrays(task).values()}
  assert len(sizes) == 1  # equal clients, so that one batch is exactly one client's epoch
  # Full-batch clients, unshuffled: every epoch is one step on the client's whole dataset, and
  # K = epochs (the ClientSpec repeats, then batches).
  task = task.with_train_spec(batch_size=sizes.pop(), num_epochs=epochs, shuffle_buffer_size=1)
  store = scaffold.initial_store(task)
  rounds = scaffold.ScaffoldRounds(task, lr_local, algorithms.create_optimizer('sgd', lr_global),
                                   store, population=10)
  process = scaffold.SPEC.build_process(task, algorithms.create_optimizer('sgd', lr_local),
                                        algorithms.create_optimizer('sgd', lr_global))
  theta0 = plan_lib.initial_model_weights(task, 0)
  state = process.set_model_weights(process.initialize(), theta0)
  planner = plan_lib.RoundPlanner(task, m, seed=5)
  plans = [planner.plan(r) for r in range(1, 7)]
  expected = _numpy_scaffold(_client_arrays(task), theta0.trainable[0].astype(np.float64), plans,
                             lr_local, lr_global, epochs)
  for r, (plan, (x, c, c_i)) in enumerate(zip(plans, expected), start=1):
    out = rounds.next(state, plan)
    state = out.state
    np.testing.assert_allclose(state.global_model_weights.trainable[0], x, atol=1e-5,
                               err_msg=f'model, round {r}')
    np.testing.assert_allclose(store.server['control_variate'][0], c, atol=1e-5,
                               err_msg=f'server control variate, round {r}')
    assert len(store) == len(c_i)
    for cid, value in c_i.items():
      np.testing.assert_allclose(store.get(cid)['control_variate'][0], value, atol=1e-5,
                                 err_msg=f'c_{cid}, round {r}')
    train = out.metrics['client_work']['train']
    assert train['num_batches'] == m * epochs
    assert out.metrics['client_work']['scaffold']['contributing_clients'] == m
  # The control variates matter: FedAvg from the same start ends elsewhere.
  fedavg = _numpy_scaffold_without_control(task, theta0, plans, lr_local, lr_global, epochs)
  assert np.abs(fedavg - expected[-1][0]).max() > 1e-3


def _numpy_scaffold_without_control(task, theta0, plans, lr_local, lr_global, epochs):
  arrays, x = _client_arrays(task), theta0.trainable[0].astype(np.float64)
  for plan in plans:
    dy = []
    for cid in plan.client_ids:
      xs, ys = arrays[cid]
      y = x.copy()
      for _ in range(epochs):
        y = y - lr_local * 2.0 / len(ys) * xs.T @ (xs @ y - ys.reshape(-1, 1))
      dy.append(y - x)
    x = x + lr_global * np.mean(dy, axis=0)
  return x


def _config(tmp_path, name, rounds, **kwargs):
  return config_lib.ExperimentConfig(
      task='seed_linear', task_options={'iid': False}, algorithm='scaffold', rounds=rounds,
      clients_per_round=4, eval_every=0, checkpoint_every=2, client_learning_rate=0.05,
      root_output_dir=str(tmp_path), experiment_name=name, progress=False, **kwargs)


def _final(tmp_path, name, rounds):
  cfg = _config(tmp_path, name, rounds)
  template = loop.build_process(cfg, loop.build_task(cfg)).initialize()
  return checkpoint.read_checkpoint(str(tmp_path / name / 'checkpoints'), rounds, template)


def test_scaffold_runs_from_the_loop_and_resumes_bit_identically_with_its_control_variates(
    tmp_path):
  loop.run_experiment(_config(tmp_path, 'straight', 6))
  loop.run_experiment(_config(tmp_path, 'resumed', 3))  # stops after round 3 (checkpoint 3) ...
  loop.run_experiment(_config(tmp_path, 'resumed', 6))  # ... and resumes from it
  a, b = _final(tmp_path, 'straight', 6), _final(tmp_path, 'resumed', 6)
  for x, y in zip(a.state.global_model_weights.trainable, b.state.global_model_weights.trainable):
    np.testing.assert_array_equal(x, y)
  sa, sb = a.extra['client_store'], b.extra['client_store']
  assert sa['client_ids'] == sb['client_ids'] and len(sa['client_ids']) > 4
  for x, y in zip(sa['clients'] + [sa['server']], sb['clients'] + [sb['server']]):
    for u, v in zip(x['control_variate'], y['control_variate']):
      np.testing.assert_array_equal(u, v)
  assert np.abs(sa['server']['control_variate'][0]).max() > 0  # the state is not all zeros
  with open(tmp_path / 'resumed' / 'metrics.csv') as f:
    rows = list(csv.DictReader(f))
  assert [r['round'] for r in rows] == ['1', '2', '3', '4', '5', '6']
  assert 'client_work/scaffold/server_control_variate_norm' in rows[0]


@pytest.mark.parametrize('settings, message', [
    ({'client_optimizer': 'adam'}, 'runs client SGD'),
    ({'aggregation': {'clip_norm': 1.0}}, 'plain mean'),
    ({'byzantine_fraction': 0.25}, 'does not simulate update attacks'),
    ({'simulation': 'vectorized'}, 'own rounds on --simulation=tff|fused, not '
     '--simulation=vectorized'),
])
def test_what_scaffold_does_not_run_is_refused_in_one_line(tmp_path, settings, message):
  with pytest.raises(config_lib.ConfigError, match=message):
    loop.run_experiment(_config(tmp_path, 'bad', 2, **settings))
  assert not (tmp_path / 'bad').exists()


def test_its_process_alone_is_refused_and_its_spec_says_why():
  task = tasks.create_task('seed_linear')
  with pytest.raises(ValueError, match='keeps client state'):
    algorithms.create_learning_process('scaffold', task, algorithms.create_optimizer('sgd', 0.1),
                                       algorithms.create_optimizer('sgd', 1.0))
  spec = algorithms.registry.get('scaffold')
  assert spec.client_state == ('control_variate',) and not spec.runs_in_graph
  assert 'scaffold' not in [n for n in backends.simulation_names()]
