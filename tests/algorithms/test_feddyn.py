"""FedDyn, step by step against an independent NumPy implementation of Acar et al.'s Algorithm 1."""

import collections
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tff_lab import algorithms
from tff_lab import tasks
from tff_lab.algorithms import feddyn
from tff_lab.simulation import plan as plan_lib
from tff_lab.training import checkpoint
from tff_lab.training import config as config_lib
from tff_lab.training import loop

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARY = os.path.join(REPO, 'experiments', 'run_experiment.py')


def _client_arrays(task):
  out = {}
  for cid in task.train_data.client_ids:
    batch = next(iter(task.train_data.create_tf_dataset_for_client(cid).batch(10_000)))
    out[cid] = (batch['x'].numpy().astype(np.float64), batch['y'].numpy().astype(np.float64))
  return out


def _numpy_feddyn(arrays, theta0, plans, lr, alpha, epochs):
  """Acar et al. 2021, Alg. 1: full-batch clients (K = epochs SGD steps), MSE loss mean((xθ − y)²).

  Returns, after each round: θ^t, h^t and every client's ∇L_k(θ_k^t) so far.
  """
  m = len(arrays)
  theta, h = theta0.copy(), np.zeros_like(theta0)
  grad_k = collections.defaultdict(lambda: np.zeros_like(theta0))
  trajectory = []
  for plan in plans:
    local_models = []
    for cid in plan.client_ids:
      xs, ys = arrays[cid]
      w = theta.copy()
      for _ in range(epochs):
        loss_grad = 2.0 / len(ys) * xs.T @ (xs @ w - ys.reshape(-1, 1))
        w = w - lr * (loss_grad - grad_k[cid] + alpha * (w - theta))
      grad_k[cid] = grad_k[cid] - alpha * (w - theta)
      local_models.append(w)
    h = h - alpha / m * sum(w - theta for w in local_models)
    theta = np.mean(local_models, axis=0) - h / alpha
    trajectory.append((theta.copy(), h.copy(), {k: v.copy() for k, v in grad_k.items()}))
  return trajectory


def _full_batch_task(epochs):
  task = tasks.create_task('seed_linear', {'num_clients': 10, 'iid': False, 'seed': 2})
  sizes = {len(y) for _, y in _client_arrays(task).values()}
  assert len(sizes) == 1  # equal clients, so that one batch is exactly one client's epoch
  # Full-batch clients, unshuffled: every epoch is one step on the client's whole dataset.
  return task.with_train_spec(batch_size=sizes.pop(), num_epochs=epochs, shuffle_buffer_size=1)


def test_feddyn_rounds_equal_numpy_step_by_step():
  lr, alpha, epochs, m = 0.05, 0.3, 3, 4
  task = _full_batch_task(epochs)
  store = feddyn.initial_store(task)
  rounds = feddyn.FedDynRounds(task, lr, alpha, store, population=10)
  process = feddyn.SPEC.build_process(task, algorithms.create_optimizer('sgd', lr),
                                      algorithms.create_optimizer('sgd', 1.0))
  theta0 = plan_lib.initial_model_weights(task, 0)
  state = process.set_model_weights(process.initialize(), theta0)
  planner = plan_lib.RoundPlanner(task, m, seed=5)
  plans = [planner.plan(r) for r in range(1, 5)]
  assert len(set(plans[0].client_ids) & set(plans[1].client_ids)) >= 1  # a client's 2nd round
  expected = _numpy_feddyn(_client_arrays(task), theta0.trainable[0].astype(np.float64), plans,
                           lr, alpha, epochs)
  for r, (plan, (theta, h, grads)) in enumerate(zip(plans, expected), start=1):
    out = rounds.next(state, plan)
    state = out.state
    np.testing.assert_allclose(state.global_model_weights.trainable[0], theta, atol=1e-5,
                               err_msg=f'θ, round {r}')
    np.testing.assert_allclose(store.server['h'][0], h, atol=1e-5, err_msg=f'h, round {r}')
    assert len(store) == len(grads)
    for cid, value in grads.items():
      np.testing.assert_allclose(store.get(cid)['local_gradient'][0], value, atol=1e-5,
                                 err_msg=f'∇L_{cid}, round {r}')
    assert out.metrics['client_work']['train']['num_batches'] == m * epochs
    assert out.metrics['client_work']['feddyn']['contributing_clients'] == m
    assert out.metrics['finalizer']['update_non_finite'] == 0
  # The dynamic terms matter: with them zeroed (and no proximal term) this is FedAvg, which
  # ends elsewhere.
  fedavg = _numpy_fedavg(_client_arrays(task), theta0.trainable[0].astype(np.float64), plans, lr,
                         epochs)
  assert np.abs(fedavg - expected[-1][0]).max() > 1e-3
  assert np.abs(expected[-1][1]).max() > 1e-3  # h is not all zeros


def _numpy_fedavg(arrays, theta, plans, lr, epochs):
  for plan in plans:
    local = []
    for cid in plan.client_ids:
      xs, ys = arrays[cid]
      w = theta.copy()
      for _ in range(epochs):
        w = w - lr * 2.0 / len(ys) * xs.T @ (xs @ w - ys.reshape(-1, 1))
      local.append(w)
    theta = np.mean(local, axis=0)
  return theta


def test_its_local_step_is_the_gradient_of_the_regularised_objective():
  rng = np.random.default_rng(0)
  g, prev, w, w0 = (rng.normal(size=(3, 2)) for _ in range(4))
  (out,) = feddyn.FEDDYN_STEP.gradient((g,), (w,), (w0,), {'alpha': 0.5},
                                       aux={'correction': (prev,)})
  np.testing.assert_allclose(out, g - prev + 0.5 * (w - w0))


def _config(tmp_path, name, rounds, **kwargs):
  kwargs.setdefault('algorithm_hparams', {'alpha': 0.1})
  return config_lib.ExperimentConfig(
      task='digits', task_options={'num_clients': 8, 'model': 'mlp'}, algorithm='feddyn',
      rounds=rounds, clients_per_round=3, eval_every=0, checkpoint_every=2,
      client_learning_rate=0.05, client_batch_size=32, root_output_dir=str(tmp_path),
      experiment_name=name, progress=False, **kwargs)


def _final(tmp_path, name, rounds):
  cfg = _config(tmp_path, name, rounds)
  template = loop.build_process(cfg, loop.build_task(cfg)).initialize()
  return checkpoint.read_checkpoint(str(tmp_path / name / 'checkpoints'), rounds, template)


def test_feddyn_runs_from_the_loop_and_resumes_bit_identically_with_its_state(tmp_path):
  loop.run_experiment(_config(tmp_path, 'straight', 4))
  loop.run_experiment(_config(tmp_path, 'resumed', 2))  # stops after round 2 (checkpoint 2) ...
  loop.run_experiment(_config(tmp_path, 'resumed', 4))  # ... a new call resumes from it
  a, b = _final(tmp_path, 'straight', 4), _final(tmp_path, 'resumed', 4)
  for x, y in zip(a.state.global_model_weights.trainable, b.state.global_model_weights.trainable):
    np.testing.assert_array_equal(x, y)
  sa, sb = a.extra['client_store'], b.extra['client_store']
  assert sa['client_ids'] == sb['client_ids'] and len(sa['client_ids']) > 3
  for x, y in zip(sa['clients'], sb['clients']):
    for u, v in zip(x['local_gradient'], y['local_gradient']):
      np.testing.assert_array_equal(u, v)
  for u, v in zip(sa['server']['h'], sb['server']['h']):
    np.testing.assert_array_equal(u, v)
  assert max(np.abs(u).max() for u in sa['server']['h']) > 0  # the state is not all zeros
  with open(tmp_path / 'resumed' / 'metrics.csv') as f:
    rows = list(csv.DictReader(f))
  assert [r['round'] for r in rows] == ['1', '2', '3', '4']
  assert float(rows[-1]['client_work/feddyn/h_norm']) > 0
  assert np.isfinite(float(rows[-1]['train_loss']))


@pytest.mark.parametrize('settings, message', [
    ({'algorithm_hparams': {'alpha': 0.0}}, '--alpha must be > 0'),
    ({'algorithm_hparams': {'alpha': -1.0}}, 'alpha must be >= 0'),
    ({'algorithm_hparams': {'mu': 1.0}}, 'mu only applies to --algorithm=fedprox'),
    ({'client_optimizer': 'sgdm'}, 'runs client SGD'),
    ({'server_optimizer': 'adam'}, 'server SGD at rate 1'),
    ({'server_learning_rate': 0.5}, 'server SGD at rate 1'),
    ({'server_lr_schedule': {'schedule': 'step'}}, 'it takes no --server_lr_schedule'),
    ({'aggregation': {'clip_norm': 1.0}}, 'plain mean'),
    ({'aggregation': {'secure_aggregation': True}}, 'plain mean'),
    ({'byzantine_fraction': 0.34}, 'does not simulate update attacks'),
    ({'simulation': 'vectorized'}, 'own rounds on --simulation=tff|fused, not '
     '--simulation=vectorized'),
])
def test_what_feddyn_does_not_run_is_refused_in_one_line(tmp_path, settings, message):
  with pytest.raises(config_lib.ConfigError, match=message) as e:
    _config(tmp_path, 'bad', 2, **settings).validate()
  assert '\n' not in str(e.value)
  assert not (tmp_path / 'bad').exists()


def test_its_process_alone_is_refused_and_its_spec_says_why():
  task = tasks.create_task('seed_linear')
  with pytest.raises(ValueError, match='keeps client state'):
    algorithms.create_learning_process('feddyn', task, algorithms.create_optimizer('sgd', 0.1),
                                       algorithms.create_optimizer('sgd', 1.0))
  spec = algorithms.registry.get('feddyn')
  assert spec.client_state == ('local_gradient',) and not spec.runs_in_graph
  assert spec.hparams['alpha'].default == 0.01


def test_the_binary_runs_feddyn_with_its_alpha_flag(tmp_path):
  def cmd(alpha, name):
    return [sys.executable, BINARY, '--task=digits', '--digits_model=mlp',
            '--digits_num_clients=6', '--rounds=2', '--clients_per_round=2', '--eval_every=0',
            '--algorithm=feddyn', f'--alpha={alpha}', f'--root_output_dir={tmp_path}',
            f'--experiment_name={name}', '--noprogress']

  result = subprocess.run(cmd(0.2, 'cli'), capture_output=True, text=True, timeout=600, cwd=REPO)
  assert result.returncode == 0, result.stderr[-2000:]
  with open(tmp_path / 'cli' / 'config.json') as f:
    assert json.load(f)['algorithm_hparams'] == {'alpha': 0.2}
  bad = subprocess.run(cmd(0, 'bad'), capture_output=True, text=True, timeout=600, cwd=REPO)
  assert bad.returncode == 2
  assert '--alpha must be > 0' in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
  assert not (tmp_path / 'bad').exists()
