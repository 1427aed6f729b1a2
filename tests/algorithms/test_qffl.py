"""q-FedAvg, step by step against an independent NumPy Li et al. 2020 (Algorithm 2)."""

import json

from absl import flags
import numpy as np
import pytest
import tensorflow as tf

from tff_lab import algorithms
from tff_lab import cli
from tff_lab import faults
from tff_lab import tasks
from tff_lab.algorithms import qffl
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


def _numpy_qfedavg(arrays, theta0, plans, lr, q):
  """Full-batch clients (a plan's epochs = its local steps), MSE loss, L = 1/lr."""
  x, trajectory, lipschitz = theta0.copy(), [], 1.0 / lr
  for plan in plans:
    numerator, denominator = np.zeros_like(x), 0.0
    for client in plan.clients:
      xs, ys = arrays[client.client_id]
      residual = lambda w: xs @ w - ys.reshape(-1, 1)
      f = np.mean(residual(x) ** 2) + 1e-10  # at the broadcast model, before training
      y = x.copy()
      for _ in range(client.train_spec.num_epochs):
        y = y - lr * 2.0 / len(ys) * xs.T @ residual(y)
      dw = lipschitz * (x - y)
      numerator += f ** q * dw
      denominator += q * f ** (q - 1) * np.sum(dw ** 2) + lipschitz * f ** q
    x = x - numerator / denominator
    trajectory.append(x.copy())
  return trajectory


def _full_batch_task(epochs):
  task = tasks.create_task('seed_linear', {'num_clients': 10, 'iid': False, 'seed': 2})
  sizes = {len(y) for _, y in _client_arrays(task).values()}
  assert len(sizes) == 1  # equal clients, so that one batch is exactly one client's epoch
  return task.with_train_spec(batch_size=sizes.pop(), num_epochs=epochs, shuffle_buffer_size=1)


@pytest.mark.parametrize('q, stragglers', [(1.0, 0.0), (5.0, 0.5)])
def test_qfedavg_rounds_equal_numpy_step_by_step(q, stragglers):
  lr, epochs, m = 0.05, 3, 4
  task = _full_batch_task(epochs)
  rounds = qffl.QFedAvgRounds(task, lr, q, algorithms.create_optimizer('sgd', 1.0))
  process = qffl.SPEC.build_process(task, algorithms.create_optimizer('sgd', lr),
                                    algorithms.create_optimizer('sgd', 1.0))
  theta0 = plan_lib.initial_model_weights(task, 0)
  state = process.set_model_weights(process.initialize(), theta0)
  planner = plan_lib.RoundPlanner(task, m, faults.FaultConfig(straggler_fraction=stragglers),
                                  seed=5)
  plans = [planner.plan(r) for r in range(1, 3)]
  arrays, x0 = _client_arrays(task), theta0.trainable[0].astype(np.float64)
  expected = _numpy_qfedavg(arrays, x0, plans, lr, q)
  for r, (plan, x) in enumerate(zip(plans, expected), start=1):
    out = rounds.next(state, plan)
    state = out.state
    np.testing.assert_allclose(state.global_model_weights.trainable[0], x, atol=1e-5,
                               err_msg=f'model, round {r}')
    metrics = out.metrics['client_work']['qfedavg']
    assert metrics['contributing_clients'] == m
    assert out.metrics['client_work']['train']['num_batches'] == sum(
        c.train_spec.num_epochs for c in plan.clients)
  if stragglers:
    assert any(c.train_spec.num_epochs < epochs for p in plans for c in p.clients)
  # q matters: the q = 0 rounds (FedAvg) end elsewhere.
  fedavg = _numpy_qfedavg(arrays, x0, plans, lr, 0.0)[-1]
  assert np.abs(fedavg - expected[-1]).max() > 1e-4


def test_q_zero_is_unweighted_fedavg_with_server_sgd_at_one():
  # Mini-batches, shuffled, unequal clients, stragglers: q = 0 gives wᵗ − mean_k (wᵗ − w̄_k).
  task = tasks.create_task('digits', {'model': 'mlp', 'num_clients': 8, 'seed': 1})
  task = task.with_train_spec(batch_size=16, num_epochs=2)
  lr = 0.05
  rounds = qffl.QFedAvgRounds(task, lr, 0.0, algorithms.create_optimizer('sgd', 1.0))
  fedavg = algorithms.create_learning_process(
      'fedavg_unweighted', task, algorithms.create_optimizer('sgd', lr),
      algorithms.create_optimizer('sgd', 1.0))
  datasets = plan_lib.PlanDatasets(task)
  start = fedavg.set_model_weights(fedavg.initialize(), plan_lib.initial_model_weights(task, 1))
  planner = plan_lib.RoundPlanner(task, 3, faults.FaultConfig(straggler_fraction=0.4), seed=3)
  q_state = avg_state = start
  for r in range(1, 4):
    plan = planner.plan(r)
    q_state = rounds.next(q_state, plan).state
    avg_state = fedavg.next(avg_state, datasets(plan)).state
  moved = 0.0
  for a, b, s in zip(q_state.global_model_weights.trainable,
                     avg_state.global_model_weights.trainable,
                     start.global_model_weights.trainable):
    np.testing.assert_allclose(a, b, atol=1e-6)
    moved = max(moved, float(np.abs(a - s).max()))
  assert moved > 1e-3  # it trained


def _config(tmp_path, name, rounds, **kwargs):
  kwargs.setdefault('algorithm_hparams', {'q': 1.0})
  return config_lib.ExperimentConfig(
      task='digits', task_options={'model': 'mlp', 'num_clients': 8, 'seed': 2},
      algorithm='qfedavg', rounds=rounds, clients_per_round=3, client_batch_size=32,
      client_learning_rate=0.05, eval_every=0, checkpoint_every=2,
      root_output_dir=str(tmp_path), experiment_name=name, progress=False, **kwargs)


def _final(tmp_path, name, rounds, **kwargs):
  cfg = _config(tmp_path, name, rounds, **kwargs)
  template = loop.build_process(cfg, loop.build_task(cfg)).initialize()
  return checkpoint.read_checkpoint(str(tmp_path / name / 'checkpoints'), rounds, template)


def test_qfedavg_runs_from_the_loop_on_tff_and_fused_and_resumes_bit_identically(tmp_path):
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


def test_the_binary_runs_qfedavg_with_its_flag(run_cli, tmp_path):
  code, err = run_cli('--task=digits', '--digits_model=mlp', '--digits_num_clients=6',
                      '--rounds=2', '--clients_per_round=2', '--eval_every=0',
                      '--algorithm=qfedavg', '--q=1', '--experiment_name=cli',
                      no_tracing=False)
  assert code == 0, err
  with open(tmp_path / 'cli' / 'config.json') as f:
    saved = json.load(f)
  assert saved['algorithm'] == 'qfedavg' and saved['algorithm_hparams'] == {'q': 1.0}


@pytest.mark.parametrize('argv, message', [
    (['--algorithm=qfedavg', '--q=-1'], 'q must be >= 0, got -1'),
    (['--algorithm=fedavg', '--q=1'], 'q only applies to --algorithm=qfedavg'),
    (['--algorithm=qfedavg', '--client_optimizer=adam'], 'estimates L = 1/η of client SGD'),
    (['--algorithm=qfedavg', '--simulation=vectorized'], 'not --simulation=vectorized'),
])
def test_bad_qfedavg_flags_exit_2_with_one_line_before_tracing(run_cli, argv, message):
  code, err = run_cli('--task=digits', *argv)
  assert code == 2
  assert message in err and err.count('\n') == 1, err


@pytest.mark.parametrize('settings, message', [
    ({'algorithm_hparams': {'q': -0.5}}, 'q must be >= 0'),
    ({'client_optimizer': 'sgdm'}, 'estimates L = 1/η of client SGD'),
    ({'aggregation': {'clip_norm': 1.0}}, 'its own Σ Δ_k / Σ h_k'),
    ({'aggregation': {'secure_aggregation': True}}, 'its own Σ Δ_k / Σ h_k'),
    ({'aggregation': {'aggregator': 'median'}}, 'its own Σ Δ_k / Σ h_k'),
    ({'byzantine_fraction': 0.34, 'attack': 'sign_flip'}, 'does not simulate update attacks'),
    ({'simulation': 'vectorized'}, 'own rounds on --simulation=tff|fused, not '
     '--simulation=vectorized'),
    ({'client_lr_schedule': {'schedule': 'step'}}, 'client_lr_schedule applies to'),
])
def test_what_qfedavg_does_not_run_is_refused_in_one_line(tmp_path, settings, message):
  with pytest.raises(config_lib.ConfigError, match=message) as error:
    _config(tmp_path, 'bad', 2, **settings).validate()
  assert '\n' not in str(error.value)


def test_its_spec_is_stateless_unweighted_and_has_no_process_of_its_own():
  spec = algorithms.registry.get('qfedavg')
  assert spec.client_state == () and not spec.weighted and not spec.runs_in_graph
  assert spec.fused_runner and spec.hparams['q'].default == 0.0
  task = tasks.create_task('seed_linear')
  with pytest.raises(ValueError, match='runs its rounds through its own runner'):
    algorithms.create_learning_process('qfedavg', task, algorithms.create_optimizer('sgd', 0.1),
                                       algorithms.create_optimizer('sgd', 1.0))
  with pytest.raises(ValueError, match='no stand-alone client work'):
    algorithms.registry.create_client_work('qfedavg', task,
                                           algorithms.create_optimizer('sgd', 0.1))
