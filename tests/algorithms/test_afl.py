"""AFL, step by step against an independent NumPy Mohri et al. 2019 as FedJAX's AgnosticFedAvg."""

import json

from absl import flags
import numpy as np
import pytest
import tensorflow as tf

from tff_lab import algorithms
from tff_lab import cli
from tff_lab import faults
from tff_lab import tasks
from tff_lab.algorithms import afl
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


def _numpy_afl(arrays, client_ids, theta0, plans, lr, lr_global, eta, weighted=True):
  """Full-batch clients (a plan's epochs = its local steps), MSE; one domain per client.

  Returns, per round, the model and λ after it. Without `weighted`, the plain mean of deltas.
  """
  index = {cid: i for i, cid in enumerate(client_ids)}
  x, lam, trajectory = theta0.copy(), np.full(len(client_ids), 1.0 / len(client_ids)), []
  for plan in plans:
    deltas, weights, losses = [], [], np.zeros(len(client_ids))
    for client in plan.clients:
      xs, ys = arrays[client.client_id]
      residual = lambda w: xs @ w - ys.reshape(-1, 1)
      k, epochs = index[client.client_id], client.train_spec.num_epochs
      losses[k] = np.mean(residual(x) ** 2)  # at the broadcast model, before training
      y = x.copy()
      for _ in range(epochs):
        y = y - lr * 2.0 / len(ys) * xs.T @ residual(y)
      deltas.append(x - y)
      # λ_k / N_k · n_k, with N_k = |D_k| evaluated and n_k = epochs·|D_k| trained on.
      weights.append(lam[k] / len(ys) * epochs * len(ys) if weighted else 1.0)
    x = x - lr_global * sum(w * d for w, d in zip(weights, deltas)) / sum(weights)
    lam = lam * np.exp(eta * losses)
    lam = lam / lam.sum()
    trajectory.append((x.copy(), lam.copy()))
  return trajectory


def _full_batch_task(epochs):
  task = tasks.create_task('seed_linear', {'num_clients': 10, 'iid': False, 'seed': 2})
  sizes = {len(y) for _, y in _client_arrays(task).values()}
  assert len(sizes) == 1  # equal clients, so that one batch is exactly one client's epoch
  return task.with_train_spec(batch_size=sizes.pop(), num_epochs=epochs, shuffle_buffer_size=1)


@pytest.mark.parametrize('stragglers, lr_global', [(0.0, 1.0), (0.5, 0.8)])
def test_afl_rounds_equal_numpy_step_by_step_model_and_lambda(stragglers, lr_global):
  lr, eta, epochs, m = 0.05, 0.5, 3, 4
  task = _full_batch_task(epochs)
  store = afl.initial_store(task)
  rounds = afl.AflRounds(task, lr, eta, algorithms.create_optimizer('sgd', lr_global), store)
  process = afl.SPEC.build_process(task, algorithms.create_optimizer('sgd', lr),
                                   algorithms.create_optimizer('sgd', lr_global))
  theta0 = plan_lib.initial_model_weights(task, 0)
  state = process.set_model_weights(process.initialize(), theta0)
  planner = plan_lib.RoundPlanner(task, m, faults.FaultConfig(straggler_fraction=stragglers),
                                  seed=5)
  plans = [planner.plan(r) for r in range(1, 3)]
  arrays, x0 = _client_arrays(task), theta0.trainable[0].astype(np.float64)
  ids = list(task.train_data.client_ids)
  expected = _numpy_afl(arrays, ids, x0, plans, lr, lr_global, eta)
  np.testing.assert_allclose(store.server['domain_weights'][0], np.full(10, 0.1))
  for r, (plan, (x, lam)) in enumerate(zip(plans, expected), start=1):
    out = rounds.next(state, plan)
    state = out.state
    np.testing.assert_allclose(state.global_model_weights.trainable[0], x, atol=1e-5,
                               err_msg=f'model, round {r}')
    np.testing.assert_allclose(store.server['domain_weights'][0], lam, atol=1e-6,
                               err_msg=f'lambda, round {r}')
    assert len(store) == 0  # no per-client entries: λ is the server part
    metrics = out.metrics['client_work']['afl']
    assert metrics['contributing_clients'] == m
    assert metrics['lambda_max'] == pytest.approx(lam.max())
  lam = expected[-1][1]
  assert lam.max() / lam.min() > 1.05  # λ moved away from uniform
  if stragglers:
    assert any(c.train_spec.num_epochs < epochs for p in plans for c in p.clients)
  # The λ-weighting matters: the plain mean of the same deltas ends elsewhere.
  plain = _numpy_afl(arrays, ids, x0, plans, lr, lr_global, eta, weighted=False)[-1][0]
  assert np.abs(plain - expected[-1][0]).max() > 1e-5


def test_the_domain_weight_step_is_normalised_exponentiated_gradient():
  lam = np.array([0.5, 0.25, 0.25])
  got = afl.update_domain_weights(lam, np.array([1.0, 0.0, 2000.0]), 1.0)  # no overflow
  assert np.isfinite(got).all() and got.sum() == pytest.approx(1.0)
  np.testing.assert_allclose(afl.update_domain_weights(lam, [0.2, 0.0, 1.0], 0.3),
                             lam * np.exp(0.3 * np.array([0.2, 0.0, 1.0]))
                             / np.sum(lam * np.exp(0.3 * np.array([0.2, 0.0, 1.0]))))


def _config(tmp_path, name, rounds, **kwargs):
  kwargs.setdefault('algorithm_hparams', {'afl_lambda_lr': 0.5})
  return config_lib.ExperimentConfig(
      task='digits', task_options={'model': 'mlp', 'num_clients': 8, 'seed': 2},
      algorithm='afl', rounds=rounds, clients_per_round=3, client_batch_size=32,
      client_learning_rate=0.05, eval_every=0, checkpoint_every=2,
      root_output_dir=str(tmp_path), experiment_name=name, progress=False, **kwargs)


def _final(tmp_path, name, rounds, **kwargs):
  cfg = _config(tmp_path, name, rounds, **kwargs)
  template = loop.build_process(cfg, loop.build_task(cfg)).initialize()
  return checkpoint.read_checkpoint(str(tmp_path / name / 'checkpoints'), rounds, template)


def test_afl_runs_from_the_loop_on_tff_and_fused_and_resumes_bit_identically(tmp_path):
  loop.run_experiment(_config(tmp_path, 'tff', 4))
  loop.run_experiment(_config(tmp_path, 'fused', 4, simulation='fused'))
  loop.run_experiment(_config(tmp_path, 'resumed', 2))  # stops after round 2 ...
  loop.run_experiment(_config(tmp_path, 'resumed', 4))  # ... and resumes from it
  a, b = _final(tmp_path, 'tff', 4), _final(tmp_path, 'resumed', 4)
  fused = _final(tmp_path, 'fused', 4, simulation='fused')
  cfg = _config(tmp_path, 'tff', 4)
  start = plan_lib.initial_model_weights(loop.build_task(cfg), cfg.seed).trainable
  for x, y, z, s in zip(a.state.global_model_weights.trainable,
                        b.state.global_model_weights.trainable,
                        fused.state.global_model_weights.trainable, start):
    np.testing.assert_array_equal(x, y)
    np.testing.assert_allclose(x, z, rtol=1e-4, atol=1e-5)
  assert max(float(np.abs(u - v).max()) for u, v in zip(
      start, a.state.global_model_weights.trainable)) > 1e-3  # it trained
  lam_a = a.extra['client_store']['server']['domain_weights'][0]
  lam_b = b.extra['client_store']['server']['domain_weights'][0]
  lam_f = fused.extra['client_store']['server']['domain_weights'][0]
  np.testing.assert_array_equal(lam_a, lam_b)
  np.testing.assert_allclose(lam_a, lam_f, rtol=1e-5)
  assert lam_a.shape == (8,) and lam_a.sum() == pytest.approx(1.0)
  assert lam_a.max() / lam_a.min() > 1.01  # λ is not the uniform start
  for u, v in zip(tf.nest.flatten(a.state.finalizer), tf.nest.flatten(b.state.finalizer)):
    np.testing.assert_array_equal(u, v)


@pytest.fixture
def run_cli(monkeypatch, capsys, tmp_path):
  """Runs the binary's main in-process; `no_tracing` makes building the process fail the test."""
  def run(*argv, no_tracing=True):
    if no_tracing:
      def fail(*args, **kwargs):
        raise AssertionError('TFF tracing started before the input was rejected')
      monkeypatch.setattr(loop, 'build_process', fail)
    flags.FLAGS.unparse_flags()
    flags.FLAGS(['run_experiment', f'--root_output_dir={tmp_path}', '--noprogress', *argv])
    code = 0
    try:
      cli._main(['run_experiment'])  # pylint: disable=protected-access
    except SystemExit as exc:
      code = exc.code
    return code, capsys.readouterr().err

  yield run
  flags.FLAGS.unparse_flags()


def test_the_binary_runs_afl_with_its_flag(run_cli, tmp_path):
  code, err = run_cli('--task=digits', '--digits_model=mlp', '--digits_num_clients=6',
                      '--rounds=2', '--clients_per_round=2', '--eval_every=0',
                      '--algorithm=afl', '--afl_lambda_lr=0.1', '--experiment_name=cli',
                      no_tracing=False)
  assert code == 0, err
  with open(tmp_path / 'cli' / 'config.json') as f:
    saved = json.load(f)
  assert saved['algorithm'] == 'afl' and saved['algorithm_hparams'] == {'afl_lambda_lr': 0.1}


@pytest.mark.parametrize('argv, message', [
    (['--algorithm=afl', '--afl_lambda_lr=0'], 'afl_lambda_lr must be > 0, got 0'),
    (['--algorithm=afl', '--afl_lambda_lr=-0.1'], 'afl_lambda_lr must be > 0, got -0.1'),
    (['--algorithm=fedavg', '--afl_lambda_lr=0.1'], 'afl_lambda_lr only applies to '
     '--algorithm=afl'),
    (['--algorithm=afl', '--client_optimizer=adam'], 'runs client SGD'),
    (['--algorithm=afl', '--simulation=vectorized'], 'not --simulation=vectorized'),
])
def test_bad_afl_flags_exit_2_with_one_line_before_tracing(run_cli, argv, message):
  code, err = run_cli('--task=digits', *argv)
  assert code == 2
  assert message in err and err.count('\n') == 1, err


@pytest.mark.parametrize('settings, message', [
    ({'algorithm_hparams': {'afl_lambda_lr': 0.0}}, 'afl_lambda_lr must be > 0'),
    ({'algorithm_hparams': {'afl_lambda_lr': 'big'}}, 'afl_lambda_lr must be a finite number'),
    ({'client_optimizer': 'sgdm'}, 'runs client SGD'),
    ({'aggregation': {'clip_norm': 1.0}}, 'its own λ-weighted mean'),
    ({'aggregation': {'secure_aggregation': True}}, 'its own λ-weighted mean'),
    ({'aggregation': {'aggregator': 'median'}}, 'its own λ-weighted mean'),
    ({'byzantine_fraction': 0.34, 'attack': 'sign_flip'}, 'does not simulate update attacks'),
    ({'simulation': 'vectorized'}, 'own rounds on --simulation=tff|fused, not '
     '--simulation=vectorized'),
    ({'client_lr_schedule': {'schedule': 'step'}}, 'client_lr_schedule applies to'),
])
def test_what_afl_does_not_run_is_refused_in_one_line(tmp_path, settings, message):
  with pytest.raises(config_lib.ConfigError, match=message) as error:
    _config(tmp_path, 'bad', 2, **settings).validate()
  assert '\n' not in str(error.value)


def test_its_spec_keeps_lambda_in_the_store_and_has_no_process_of_its_own():
  spec = algorithms.registry.get('afl')
  assert spec.client_state and not spec.weighted and not spec.runs_in_graph
  assert spec.fused_runner and spec.hparams['afl_lambda_lr'].default == 0.1
  task = tasks.create_task('seed_linear')
  with pytest.raises(ValueError, match='runs its rounds through its own runner'):
    algorithms.create_learning_process('afl', task, algorithms.create_optimizer('sgd', 0.1),
                                       algorithms.create_optimizer('sgd', 1.0))
  with pytest.raises(ValueError, match='no stand-alone client work'):
    algorithms.registry.create_client_work('afl', task, algorithms.create_optimizer('sgd', 0.1))
  with pytest.raises(ValueError, match='afl_lambda_lr must be > 0'):
    afl.AflRounds(task, 0.1, 0.0, algorithms.create_optimizer('sgd', 1.0),
                  afl.initial_store(task))
