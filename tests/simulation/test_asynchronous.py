"""FedBuff (Nguyen et al., AISTATS 2022) on the simulated clock: its schedule, built by hand; its
arithmetic, against NumPy; synchronous FedAvg as its special case; exact resume; bad input."""

import collections
import os
import signal
import subprocess
import sys
import time
import types

from absl import flags
import numpy as np
import pytest

from tff_lab import algorithms
from tff_lab import cli
from tff_lab import tasks
from tff_lab.algorithms import client_phase as client_phase_lib
from tff_lab.algorithms import fedavg
from tff_lab.algorithms import spec as spec_lib
from tff_lab.simulation import asynchronous
from tff_lab.simulation import latency
from tff_lab.simulation import plan as plan_lib
from tff_lab.training import checkpoint
from tff_lab.training import loop

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARY = os.path.join(REPO, 'experiments', 'run_experiment.py')


# Staleness weighting and the buffered update, against NumPy.

def test_staleness_weights_are_inverse_sqrt_or_constant():
  tau = np.array([0, 1, 3, 8, 24])
  np.testing.assert_allclose(asynchronous.staleness_weights(tau, 'inverse_sqrt'),
                             [1.0, 1 / np.sqrt(2), 0.5, 1 / 3, 0.2], rtol=1e-15)
  np.testing.assert_array_equal(asynchronous.staleness_weights(tau, 'constant'), np.ones(5))
  with pytest.raises(ValueError, match="unknown staleness 'linear'"):
    asynchronous.staleness_weights(tau, 'linear')


@pytest.mark.parametrize('kind', asynchronous.STALENESS)
def test_the_buffered_update_is_the_staleness_weighted_sum_over_the_total_weight(kind):
  rng = np.random.default_rng(0)
  deltas = [[rng.normal(size=(3, 2)).astype(np.float32), rng.normal(size=2).astype(np.float32)]
            for _ in range(4)]
  weights, taus = [5.0, 0.0, 2.0, 1.0], [0, 3, 2, 7]  # the second update is left out (weight 0)
  s = {'inverse_sqrt': lambda t: 1 / np.sqrt(1 + t), 'constant': lambda t: 1.0}[kind]
  for v in range(2):
    expected = sum(s(t) * w * d[v].astype(np.float64) for d, w, t in zip(deltas, weights, taus)
                   ) / sum(weights)
    got = asynchronous.buffered_update(deltas, weights, taus, kind)[v]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6)
  zero = asynchronous.buffered_update(deltas, [0, 0, 0, 0], taus, kind)
  assert all(np.all(z == 0) for z in zero)


# The schedule, built by hand.

def _latency_file(tmp_path, rows):
  path = tmp_path / 'latency.csv'
  path.write_text('client_id,latency\n' + ''.join(f'{c},{v}\n' for c, v in rows))
  return str(path)


def _schedule(client_ids, latencies, concurrency, buffer_size, seed=0):
  fake_task = types.SimpleNamespace(train_data=types.SimpleNamespace(client_ids=client_ids))
  model = latency.LatencyModel(collections.OrderedDict(zip(client_ids, latencies)), 0.0, seed)
  return asynchronous.FedBuffRounds(fake_task, None, None, concurrency=concurrency,
                                    buffer_size=buffer_size, staleness='inverse_sqrt',
                                    weighted=True, latency_model=model, seed=seed)


# Clients a, b, c take 1, 2 and 3 time units; all three always train (concurrency 3), so each
# runs back to back and the schedule is deterministic; K = 2. By hand (v = model version):
#   t=0  dispatch a, b, c (v0)
#   t=1  a(v0) arrives; refill a (v0)
#   t=2  b(v0), then a(v0) (dispatched later) arrive: b fills the buffer -> aggregation 1
#        [a(v0), b(v0)], tau (0, 0); a(v0) waits in the next buffer; refill a, b (v1)
#   t=3  c(v0) -> aggregation 2 [a(v0), c(v0)], tau (1, 1); a(v1) arrives; refill a, c (v2)
#   t=4  b(v1) -> aggregation 3 [a(v1), b(v1)], tau (1, 1); a(v2) arrives; refill a, b (v3)
#   t=5  a(v3) -> aggregation 4 [a(v2), a(v3)], tau (1, 0); refill a (v4)
#   t=6  c(v2), b(v3) -> aggregation 5, tau (2, 1); then a(v4) waits
HAND_SCHEDULE = [  # (time, [(client, version it started from)], staleness)
    (2.0, [('a', 0), ('b', 0)], [0, 0]),
    (3.0, [('a', 0), ('c', 0)], [1, 1]),
    (4.0, [('a', 1), ('b', 1)], [1, 1]),
    (5.0, [('a', 2), ('a', 3)], [1, 0]),
    (6.0, [('c', 2), ('b', 3)], [2, 1]),
]


def test_the_schedule_matches_one_built_by_hand():
  rounds = _schedule(['a', 'b', 'c'], [1.0, 2.0, 3.0], concurrency=3, buffer_size=2)
  for k, (when, updates, staleness) in enumerate(HAND_SCHEDULE):
    rounds.collect()
    assert rounds.clock == when, k
    assert [(t.client_id, t.version) for t in rounds.buffer] == updates, k
    assert [rounds.version - t.version for t in rounds.buffer] == staleness, k
    assert len(rounds.in_flight) + rounds.free_slots == 3  # concurrency, once slots refill
    rounds.buffer = []
    rounds.version += 1  # what an aggregation does to the schedule
  assert [(t.client_id, t.version) for t in rounds.in_flight][:1] == [('a', 4)]


def test_every_dispatch_wave_samples_idle_clients_and_keeps_concurrency():
  ids = [f'c{i}' for i in range(12)]
  rng = np.random.default_rng(1)
  rounds = _schedule(ids, rng.lognormal(0, 1, 12), concurrency=5, buffer_size=3, seed=4)
  for _ in range(30):
    rounds.collect()
    training = [t.client_id for t in rounds.in_flight]
    assert len(set(training)) == len(training)  # nobody trains twice at once
    assert len(training) + rounds.free_slots == 5
    assert all(t.arrives_at > rounds.clock or t.arrives_at == rounds.clock
               for t in rounds.in_flight)
    rounds.buffer = []
    rounds.version += 1
  assert rounds.wave > 10


# FedBuff step by step against NumPy, on the hand schedule.

def _full_batch_task(num_clients, epochs=2):
  task = tasks.create_task('seed_linear', {'num_clients': num_clients, 'iid': False, 'seed': 2})
  return task.with_train_spec(batch_size=40, num_epochs=epochs, shuffle_buffer_size=1)


def _client_arrays(task):
  out = {}
  for cid in task.train_data.client_ids:
    batch = next(iter(task.train_data.create_tf_dataset_for_client(cid).batch(10_000)))
    out[cid] = (batch['x'].numpy().astype(np.float64), batch['y'].numpy().astype(np.float64))
  return out


def _runner(task, settings, *, lr=0.05, server_lr=0.7, seed=0, weighted=True,
            local_step=spec_lib.PLAIN_SGD):
  concurrency, buffer_size = settings.resolve(3)
  model = latency.create_latency_model(settings, list(task.train_data.client_ids), seed)
  return asynchronous.FedBuffRounds(
      task, client_phase_lib.build_client_phase(task, lr, local_step),
      algorithms.create_optimizer('sgd', server_lr), concurrency=concurrency,
      buffer_size=buffer_size, staleness=settings.staleness, weighted=weighted,
      latency_model=model, seed=seed)


def test_the_runner_takes_the_algorithms_hyperparameters():
  from tff_lab.training import config as config_lib  # pylint: disable=g-import-not-at-top
  config = config_lib.ExperimentConfig(algorithm='fedprox', algorithm_hparams={'mu': 0.5})
  assert asynchronous._hparams(config) == {'mu': 0.5}  # pylint: disable=protected-access


def _plan(round_num):
  return types.SimpleNamespace(round_num=round_num)


@pytest.mark.parametrize('mu', [0.0, 0.5])  # fedavg; fedprox's proximal local step
def test_fedbuff_equals_numpy_on_the_hand_schedule(tmp_path, mu):
  task = _full_batch_task(3)
  ids = list(task.train_data.client_ids)
  names = dict(zip('abc', ids))
  settings = asynchronous.AsyncSettings(
      concurrency=3, buffer_size=2, latency_model='file', latency_jitter=0.0,
      latency_file=_latency_file(tmp_path, zip(ids, [1, 2, 3])))
  # pylint: disable-next=protected-access
  step = asynchronous._bound_step(spec_lib.PROXIMAL_SGD, {'mu': mu})
  rounds = _runner(task, settings, local_step=step)
  process = fedavg.build_fedavg(task, algorithms.create_optimizer('sgd', 0.05),
                                algorithms.create_optimizer('sgd', 0.7))
  theta0 = plan_lib.initial_model_weights(task, 0)
  state = process.set_model_weights(process.initialize(), theta0)

  arrays = _client_arrays(task)
  versions = [theta0.trainable[0].astype(np.float64)]  # x_v, the model of each version

  def local(cid, x):  # two full-batch (proximal) GD epochs on MSE; x − y and the examples seen
    xs, ys = arrays[cid]
    y = x.copy()
    for _ in range(2):
      y = y - 0.05 * (2.0 / len(ys) * xs.T @ (xs @ y - ys.reshape(-1, 1)) + mu * (y - x))
    return x - y, 2 * len(ys)

  for k, (when, updates, staleness) in enumerate(HAND_SCHEDULE, 1):
    output = rounds.next(state, _plan(k))
    state = output.state
    parts = [local(names[c], versions[v]) for c, v in updates]
    s = 1 / np.sqrt(1 + np.asarray(staleness, np.float64))
    mean = sum(si * n * d for si, (d, n) in zip(s, parts)) / sum(n for _, n in parts)
    versions.append(versions[-1] - 0.7 * mean)
    np.testing.assert_allclose(state.global_model_weights.trainable[0], versions[-1],
                               rtol=2e-5, atol=1e-6, err_msg=f'aggregation {k}')
    m = output.metrics
    assert m['simulated_time'] == when
    assert m['async']['staleness_max'] == max(staleness)
    assert m['async']['staleness_mean'] == np.mean(staleness)
    assert m['async']['staleness_p90'] == np.percentile(staleness, 90)
    assert m['async']['model_version'] == k
    assert m['client_work']['train']['num_examples'] == sum(n for _, n in parts)


# With zero latency spread and K = concurrency = clients per round: synchronous FedAvg.

@pytest.mark.parametrize('weighted', [True, False])
def test_zero_spread_and_full_buffer_equals_synchronous_fedavg(weighted):
  task = tasks.create_task('seed_linear', {'num_clients': 10, 'iid': False, 'seed': 2})
  task = task.with_train_spec(batch_size=7, num_epochs=2, shuffle_buffer_size=100)
  m, seed = 4, 3
  settings = asynchronous.AsyncSettings(concurrency=m, buffer_size=m, latency_sigma=0.0,
                                        latency_jitter=0.0)
  rounds = _runner(task, settings, seed=seed, weighted=weighted, lr=0.1, server_lr=1.0)
  process = fedavg.build_fedavg(task, algorithms.create_optimizer('sgd', 0.1),
                                algorithms.create_optimizer('sgd', 1.0), weighted=weighted)
  theta0 = plan_lib.initial_model_weights(task, seed)
  sync_state = async_state = process.set_model_weights(process.initialize(), theta0)
  planner = plan_lib.RoundPlanner(task, m, seed=seed)
  datasets = plan_lib.PlanDatasets(task)
  for r in range(1, 5):
    plan = planner.plan(r)
    sync = process.next(sync_state, datasets(plan))
    sync_state = sync.state
    out = rounds.next(async_state, plan)
    async_state = out.state
    assert rounds.last_arrivals == [(c, r - 1) for c in plan.sampled]  # same clients, staleness 0
    assert out.metrics['async']['staleness_max'] == 0
    assert out.metrics['simulated_time'] == r * 1.0  # one median latency per round
    np.testing.assert_allclose(async_state.global_model_weights.trainable[0],
                               sync_state.global_model_weights.trainable[0], rtol=1e-5, atol=1e-6)
    train_a, train_s = out.metrics['client_work']['train'], sync.metrics['client_work']['train']
    assert train_a['num_examples'] == train_s['num_examples']
    np.testing.assert_allclose(train_a['loss'], train_s['loss'], rtol=1e-5)


# Exact resume, clients in flight included (no kill: checkpoint, new runner, restore).

def test_resumed_from_a_checkpoint_it_continues_bit_for_bit(tmp_path):
  task = tasks.create_task('seed_linear', {'num_clients': 10, 'iid': False, 'seed': 2})
  task = task.with_train_spec(batch_size=7, num_epochs=1, shuffle_buffer_size=100)
  settings = asynchronous.AsyncSettings(concurrency=6, buffer_size=2, latency_sigma=0.8,
                                        latency_jitter=0.3, staleness='inverse_sqrt')
  process = fedavg.build_fedavg(task, algorithms.create_optimizer('sgd', 0.1),
                                algorithms.create_optimizer('sgd', 1.0))
  initial = process.set_model_weights(process.initialize(), plan_lib.initial_model_weights(task, 1))

  def run(rounds, state, first, last):
    metrics = []
    for r in range(first, last + 1):
      out = rounds.next(state, _plan(r))
      state = out.state
      metrics.append(loop.round_metrics(out.metrics))
    return state, metrics

  straight = _runner(task, settings, seed=1, lr=0.1, server_lr=1.0)
  state_a, metrics_a = run(straight, initial, 1, 8)
  first = _runner(task, settings, seed=1, lr=0.1, server_lr=1.0)
  state_b, metrics_b = run(first, initial, 1, 4)
  assert first.in_flight and any(t.result is not None for t in first.in_flight)
  checkpoint.save_checkpoint(str(tmp_path), 4, state_b, extra=first.checkpoint_parts())
  restored = checkpoint.read_checkpoint(str(tmp_path), 4, process.initialize())
  second = _runner(task, settings, seed=1, lr=0.1, server_lr=1.0)
  second.restore_parts(restored.extra)
  state_b, more = run(second, restored.state, 5, 8)
  metrics_b += more
  assert max(m['async/staleness_max'] for m in metrics_a) > 0  # it is asynchronous
  assert metrics_a == metrics_b
  for a, b in zip(process.get_model_weights(state_a).trainable,
                  process.get_model_weights(state_b).trainable):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match='holds no asynchronous queue'):
    second.restore_parts({})


# Through the binary: bad input is one line and exit 2, before tracing.

@pytest.fixture
def run_cli(monkeypatch, capsys, tmp_path):
  """The binary's main in-process; fails the test if TFF tracing starts (as tests/test_cli.py)."""
  def no_tracing(*args, **kwargs):
    raise AssertionError('TFF tracing started before the input was rejected')

  monkeypatch.setattr(loop, 'build_process', no_tracing)

  def run(*argv):
    flags.FLAGS.unparse_flags()
    flags.FLAGS(['run_experiment', f'--root_output_dir={tmp_path}', '--noprogress', *argv])
    with pytest.raises(SystemExit) as exc:
      cli._main(['run_experiment'])  # pylint: disable=protected-access
    return exc.value.code, capsys.readouterr().err

  yield run
  flags.FLAGS.unparse_flags()


DIGITS = [f'client_{i:02d}' for i in range(20)]


@pytest.mark.parametrize('argv, message', [
    (['--algorithm=scaffold'], '--simulation=async runs fedavg, fedavg_unweighted, fedprox'),
    (['--algorithm=fedsgd'], 'not --algorithm=fedsgd (stateless local SGD'),
    (['--client_optimizer=adam'], 'runs client SGD without options, not --client_optimizer=adam'),
    (['--aggregator=median'], "cannot run the aggregation settings ['aggregator']"),
    (['--clip_norm=1'], "cannot run the aggregation settings ['clip_norm']"),
    (['--dropout_fraction=0.2'], 'does not simulate attacks, dropouts or stragglers'),
    (['--client_sampling=poisson'], '--client_sampling=poisson does not apply'),
    (['--secure_aggregation'], '--secure_aggregation cannot be combined with --simulation=async'),
    (['--client_lr_schedule=step'], 'a --client_lr_schedule does not apply'),
    (['--concurrency=0'], 'concurrency must be a positive integer, got 0'),
    (['--buffer_size=-2'], 'buffer_size must be a positive integer, got -2'),
    (['--concurrency=21'], 'concurrency=21 exceeds the 20 training clients'),
    (['--staleness=linear'], "unknown staleness 'linear'; choose one of"),
    (['--latency_model=pareto'], "unknown latency_model 'pareto'"),
    (['--latency_median=0'], 'latency_median must be positive'),
    (['--latency_sigma=-0.1'], 'latency_sigma must be >= 0'),
    (['--latency_jitter=-1'], 'latency_jitter must be >= 0'),
    (['--latency_tail_fraction=0.3'], 'latency_tail_fraction only applies with '
                                      'latency_model=heavy_tail'),
    (['--latency_model=heavy_tail', '--latency_tail_fraction=1.5'],
     'latency_tail_fraction must be in [0, 1]'),
    (['--latency_model=heavy_tail', '--latency_tail_alpha=0'],
     'latency_tail_alpha must be positive'),
    (['--latency_model=file'], 'latency_model=file needs latency_file'),
    (['--latency_file=lat.csv'], 'latency_file only applies with latency_model=file'),
    (['--latency_model=file', '--latency_file=missing.csv'], 'cannot be read'),
    (['--latency_model=file', '--latency_file=@bad'], 'the header must be client_id,latency or'),
    (['--latency_model=file', '--latency_file=@unknown'],
     "names 1 client(s) the task does not have: 'client_99'"),
    (['--latency_model=file', '--latency_file=@partial'],
     "gives no latency for 19 of the task's 20 training clients: 'client_01'"),
    (['--latency_model=file', '--latency_file=@partial', '--latency_sigma=1'],
     'latency_sigma does not apply with latency_model=file'),
])
def test_bad_input_is_one_line_and_exit_2(run_cli, tmp_path, argv, message):
  files = {'@bad': 'client,speed\nclient_00,1\n',
           '@unknown': 'client_id,latency\n' + ''.join(f'{c},1\n' for c in DIGITS + ['client_99']),
           '@partial': 'client_id,speed\nclient_00,2\n'}
  for i, arg in enumerate(argv):
    for key, content in files.items():
      if arg.endswith(key):
        (tmp_path / 'lat.csv').write_text(content)
        argv[i] = arg.replace(key, str(tmp_path / 'lat.csv'))
  code, err = run_cli('--task=digits', '--clients_per_round=4', '--simulation=async', *argv)
  assert code == 2
  assert err.count('\n') == 1 and err.startswith('error: '), err
  assert message in err, err


def test_the_latency_settings_are_checked_for_synchronous_runs_too(run_cli):
  code, err = run_cli('--task=digits', '--latency_model=file')
  assert code == 2 and 'latency_model=file needs latency_file' in err


def test_resuming_a_synchronous_run_asynchronously_is_refused(run_cli, tmp_path):
  sync = ['--task=digits', '--clients_per_round=4', '--experiment_name=e', '--simulation=tff']
  from tff_lab.training import config as config_lib  # pylint: disable=g-import-not-at-top
  config_lib.prepare_experiment_dir(config_lib.ExperimentConfig(
      task='digits', clients_per_round=4, experiment_name='e', root_output_dir=str(tmp_path),
      progress=False))
  code, err = run_cli(*sync[:-1], '--simulation=async')
  assert code == 2 and err.count('\n') == 1, err
  assert 'asynchronous (--simulation=async): saved False, given True' in err, err
  code, err = run_cli(*sync[:-1], '--simulation=fused', '--rounds=0')  # fused may resume tff
  assert 'rounds must be positive' in err


# Through the binary: SIGKILL, then re-run, equals an uninterrupted run (clients in flight).

def _cmd(root, name):
  return [sys.executable, BINARY, '--task=digits', '--digits_model=mlp', '--rounds=8',
          '--clients_per_round=3', '--eval_every=0', '--checkpoint_every=2', '--seed=5',
          '--client_learning_rate=0.05', '--simulation=async', '--concurrency=6',
          '--buffer_size=2', '--latency_sigma=0.8', f'--root_output_dir={root}',
          f'--experiment_name={name}', '--noprogress']


def _rows(path):
  lines = path.read_text().splitlines()
  header = lines[0].split(',')
  return [dict(zip(header, l.split(','))) for l in lines[1:]]


def _run_in_process(argv):
  flags.FLAGS.unparse_flags()
  flags.FLAGS(argv[1:])
  try:
    cli._main(['run_experiment'])  # pylint: disable=protected-access
  finally:
    flags.FLAGS.unparse_flags()


def _async_queue(ckpt_dir, round_num):
  with np.load(os.path.join(ckpt_dir, f'ckpt_{round_num:06d}.npz')) as data:
    template = [data[f'leaf_{i:05d}'] for i in range(int(data['num_leaves']))]
  return checkpoint.read_checkpoint(ckpt_dir, round_num, template).extra['async_queue']


def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path):
  proc = subprocess.Popen(_cmd(tmp_path, 'killed'), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, cwd=REPO)
  metrics = tmp_path / 'killed' / 'metrics.csv'
  deadline = time.monotonic() + 300
  while time.monotonic() < deadline and proc.poll() is None:
    if metrics.exists() and metrics.read_text().count('\n') >= 6:  # header + 5 aggregations
      break
    time.sleep(0.02)
  assert proc.poll() is None, 'run finished before it could be killed'
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  killed_at = len(_rows(metrics))
  ckpt_dir = str(tmp_path / 'killed' / 'checkpoints')
  resumed_from = checkpoint.latest_checkpoint(ckpt_dir)
  assert 0 < resumed_from < 8
  assert len(_async_queue(ckpt_dir, resumed_from)['in_flight']) == 5  # clients in flight
  resumed = subprocess.Popen(_cmd(tmp_path, 'killed'), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, cwd=REPO)
  _run_in_process(_cmd(tmp_path, 'straight'))  # the uninterrupted run, meanwhile
  _, err = resumed.communicate(timeout=600)
  assert resumed.returncode == 0, err[-2000:]

  a = np.load(tmp_path / 'straight' / 'checkpoints' / 'ckpt_000008.npz')
  b = np.load(tmp_path / 'killed' / 'checkpoints' / 'ckpt_000008.npz')
  assert a.files == b.files and any(k.startswith('extra_') for k in a.files)
  for key in a.files:
    np.testing.assert_array_equal(a[key], b[key], err_msg=f'{key} differs after resume')
  rows_a, rows_b = _rows(tmp_path / 'straight' / 'metrics.csv'), _rows(metrics)
  assert [r['round'] for r in rows_b] == [str(i) for i in range(1, 9)], killed_at
  assert max(int(r['async/staleness_max']) for r in rows_a) > 0
  for ra, rb in zip(rows_a, rows_b):
    for key in ra:
      if key != 'round_seconds':
        assert ra[key] == rb[key], (ra['round'], key)
  assert (tmp_path / 'killed' / asynchronous.PLOT_FILENAME).exists()
