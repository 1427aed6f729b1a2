"""The experiment binary: bad input gives one line and exit 2 before tracing; exact resume."""

import os
import signal
import subprocess
import sys
import time

from absl import flags
import numpy as np
import pytest

from tff_lab import cli
from tff_lab.training import checkpoint
from tff_lab.training import loop

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(REPO, 'experiments', 'run_experiment.py')


@pytest.fixture
def run_cli(monkeypatch, capsys, tmp_path):
  """Runs the binary's main in-process with the given flags; returns (exit code, stderr).

  `loop.build_process` is replaced by a function that fails the test, which proves that every
  error is raised before the learning process (TFF tracing) is built.
  """
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


@pytest.mark.parametrize('argv, message', [
    (['--task=mnist_typo'], "unknown task 'mnist_typo'"),
    (['--algorithm=fedsag'], "unknown algorithm 'fedsag'"),
    (['--client_optimizer=adamw'], "unknown client optimizer 'adamw'"),
    (['--server_optimizer=lion'], "unknown server optimizer 'lion'"),
    (['--task=synthetic', '--clients_per_round=31'], 'exceeds the 30 training clients'),
    (['--rounds=0'], 'rounds must be positive'),
    (['--client_learning_rate=0'], 'client_learning_rate must be positive'),
    (['--server_learning_rate=-1'], 'server_learning_rate must be positive'),
    (['--client_batch_size=0'], 'client_batch_size must be positive'),
    (['--client_epochs=-2'], 'client_epochs must be positive'),
    (['--eval_every=-1'], 'eval_every must be >= 0'),
    (['--server_adam_beta_1=0.8'], '--server_adam_beta_1 is set but --server_optimizer=sgd'),
    (['--task=digits', '--synthetic_alpha=0.5'], '--synthetic_alpha is set but --task=digits'),
    (['--task=digits', '--digits_partition=zipf'], 'digits partition must be one of'),
    (['--mu=0.1'], 'only applies to --algorithm=fedprox'),
    (['--client_lr_schedule=cosine'], "unknown --client_lr_schedule='cosine'"),
    (['--algorithm=fedsgd', '--client_lr_schedule=step'], '--client_lr_schedule applies to'),
    (['--byzantine_fraction=1.0'], 'byzantine_fraction must be in [0, 1)'),
    (['--byzantine_fraction=0.2', '--attack=backdoor'], "unknown attack 'backdoor'"),
    (['--attack_scale=0'], 'attack_scale must be positive'),
    (['--straggler_fraction=1.5'], 'straggler_fraction must be in [0, 1)'),
    (['--algorithm=fedsgd', '--byzantine_fraction=0.2'], '--algorithm=fedsgd sends gradients'),
    (['--simulation=gpu'], "unknown simulation 'gpu'"),
    (['--aggregator=mode'], "unknown aggregator 'mode'"),
    (['--aggregator=trimmed_mean', '--trim_fraction=0.5'], 'trim_fraction must be in [0, 0.5)'),
    (['--aggregator=krum', '--krum_f=4'], 'Krum requires n > 2f + 2'),
    (['--compression=quantize', '--bits=17'], 'bits must be an integer in [1, 16]'),
    (['--compression=topk', '--topk_fraction=1.0'], 'topk_fraction must be in (0, 1)'),
    (['--dp=fixed', '--noise_multiplier=1.0'], "dp='fixed' needs clip_norm"),
    (['--dp=fixed', '--clip_norm=1', '--noise_multiplier=-1'], 'noise_multiplier must be positive'),
    (['--noise_multiplier=1.0'], 'only applies with dp=fixed|adaptive'),
    (['--clip_norm=0'], 'clip_norm must be positive'),
    (['--aggregator=median', '--secure_aggregation'], 'secure_aggregation cannot be combined'),
    (['--dp_delta=0.1'], '--dp_delta only applies with --dp'),
    (['--simulation=vectorized', '--aggregator=median'], 'runs the plain mean only'),
    (['--simulation=vectorized', '--algorithm=fedsgd'], 'not fedsgd'),
    (['--simulation=vectorized', '--byzantine_fraction=0.2'], 'runs the plain mean only'),
    (['--simulation=fused', '--workers=127.0.0.1:8000'],
     '--simulation=fused does not use --workers'),
    (['--simulation=vectorized', '--secure_aggregation'],
     '--secure_aggregation cannot be combined with --simulation=vectorized'),
    (['--secure_aggregation', '--dropout_fraction=0.5'],
     'fewer than the secure aggregation threshold secagg_threshold=6'),
    (['--secure_aggregation', '--adaptive_clip'], 'cannot be combined with adaptive_clip'),
    (['--secure_aggregation', '--dp=adaptive', '--noise_multiplier=0.1'],
     "cannot be combined with dp='adaptive'"),
    (['--secure_aggregation', '--compression=quantize'], 'cannot be combined with compression'),
    (['--secure_aggregation', '--secagg_threshold=11'], 'secagg_threshold must be an integer'),
    (['--secagg_threshold=3'], 'only applies with secure_aggregation'),
])
def test_bad_input_is_one_line_and_exit_2(run_cli, argv, message):
  code, err = run_cli(*argv)
  assert code == 2
  assert err.count('\n') == 1 and err.startswith('error: '), err
  assert message in err, err


def test_unwritable_output_dir(run_cli, tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a directory')
  code, err = run_cli(f'--root_output_dir={blocker}/runs')
  assert code == 2 and 'is not writable' in err and err.count('\n') == 1, err


def test_changed_config_is_refused_and_nothing_is_lost(run_cli, tmp_path, monkeypatch):
  exp_dir = tmp_path / 'exp'
  exp_dir.mkdir()
  # A previous run's directory, as prepare_experiment_dir leaves it.
  from tff_lab.training import config as config_lib  # pylint: disable=g-import-not-at-top
  saved = config_lib.ExperimentConfig(task='seed_linear', root_output_dir=str(tmp_path),
                                      experiment_name='exp', client_learning_rate=0.1)
  config_lib.prepare_experiment_dir(saved)
  (exp_dir / 'metrics.csv').write_text('round,train_loss\n1,0.5\n')
  before = {p.name: p.read_bytes() for p in exp_dir.iterdir()}
  code, err = run_cli('--task=seed_linear', '--experiment_name=exp', '--client_learning_rate=0.3')
  assert code == 2 and err.count('\n') == 1, err
  assert 'client_learning_rate: saved 0.1, given 0.3' in err
  assert '--overwrite' in err and 'resume' in err
  assert {p.name: p.read_bytes() for p in exp_dir.iterdir()} == before


def test_binary_exit_code_and_single_line():
  result = subprocess.run([sys.executable, BINARY, '--task=nope', '--noprogress'],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
  assert result.returncode == 2
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: unknown task 'nope'; choose one of ["), lines


def test_secure_aggregation_end_to_end(tmp_path):
  result = subprocess.run(
      [sys.executable, BINARY, '--task=digits', '--digits_model=mlp', '--secure_aggregation',
       '--rounds=2', '--clients_per_round=4', '--dropout_fraction=0.25', '--eval_every=0',
       '--seed=3', f'--root_output_dir={tmp_path}', '--experiment_name=sa', '--noprogress'],
      capture_output=True, text=True, timeout=600, cwd=REPO)
  assert result.returncode == 0, result.stderr[-2000:]
  rows = _rows(tmp_path / 'sa' / 'metrics.csv')
  assert [r['round'] for r in rows] == ['1', '2']
  for row in rows:  # the protocol ran: 4 clients started, 1 dropped and its masks were recovered
    assert row['aggregator/secagg/clients_started'] == '4'
    assert row['aggregator/secagg/recovered_masks'] == row['faults/dropped'] == '1'
    assert row['aggregator/secagg/masked_vectors_held'] == row['aggregator/num_clients'] == '3'
    assert row['aggregator/secagg/threshold'] == '3'
    assert float(row['aggregator/secagg/client_seconds']) > 0
    assert float(row['aggregator/secagg/server_seconds']) > 0
    assert float(row['upload_bytes_per_client']) > 0.75 * float(
        row['float32_upload_bytes_per_client'])  # 3 of 4 clients send a 32-bit vector
    assert 0 < float(row['compression_ratio']) < 1
    assert float(row['download_bytes_per_client']) > 0


def _cmd(root, name, algorithm='fedavg'):
  return [sys.executable, BINARY, '--task=digits', '--digits_model=mlp', '--rounds=10',
          '--clients_per_round=4', '--eval_every=4', '--checkpoint_every=3', '--seed=5',
          '--client_learning_rate=0.05', f'--root_output_dir={root}', f'--algorithm={algorithm}',
          f'--experiment_name={name}', '--noprogress']


def _rows(path):
  lines = path.read_text().splitlines()
  header = lines[0].split(',')
  return [dict(zip(header, l.split(','))) for l in lines[1:]]


# SCAFFOLD: a run with client state (control variates in the checkpoints' client store).
@pytest.mark.parametrize('algorithm', ['fedavg', 'scaffold'])
def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path, algorithm):
  subprocess.run(_cmd(tmp_path, 'straight', algorithm), check=True, capture_output=True,
                 timeout=600, cwd=REPO)
  proc = subprocess.Popen(_cmd(tmp_path, 'killed', algorithm), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, cwd=REPO)
  metrics = tmp_path / 'killed' / 'metrics.csv'
  deadline = time.monotonic() + 300
  while time.monotonic() < deadline and proc.poll() is None:
    if metrics.exists() and metrics.read_text().count('\n') >= 6:  # header + 5 rounds
      break
    time.sleep(0.05)
  assert proc.poll() is None, 'run finished before it could be killed'
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  killed_at = len(_rows(metrics))
  assert checkpoint.latest_checkpoint(str(tmp_path / 'killed' / 'checkpoints')) < 10
  result = subprocess.run(_cmd(tmp_path, 'killed', algorithm), capture_output=True, text=True,
                          timeout=600, cwd=REPO)
  assert result.returncode == 0, result.stderr[-2000:]

  straight, resumed = tmp_path / 'straight', tmp_path / 'killed'
  a = np.load(straight / 'checkpoints' / 'ckpt_000010.npz')
  b = np.load(resumed / 'checkpoints' / 'ckpt_000010.npz')
  assert a.files == b.files
  assert algorithm != 'scaffold' or any(k.startswith('extra_') for k in a.files)
  for key in a.files:
    np.testing.assert_array_equal(a[key], b[key], err_msg=f'{key} differs after resume')
  rows_a, rows_b = _rows(straight / 'metrics.csv'), _rows(resumed / 'metrics.csv')
  assert [r['round'] for r in rows_b] == [str(i) for i in range(1, 11)], killed_at
  for ra, rb in zip(rows_a, rows_b):
    for key in ('train_loss', 'train_accuracy', 'fed_eval_accuracy', 'central_eval_loss'):
      assert ra[key] == rb[key], (ra['round'], key)
  for name in ('summary.json', 'curves.png', 'final_model.keras', 'tensorboard'):
    assert (resumed / name).exists(), name


def test_killed_worker_is_named_and_rerun_resumes(tmp_path):
  from tff_lab.runtime import workers  # pylint: disable=g-import-not-at-top
  pool = [workers.ManagedWorker(), workers.ManagedWorker()]
  try:
    spec = ','.join(f'127.0.0.1:{w.port}' for w in pool)
    cmd = [sys.executable, BINARY, '--task=seed_linear', '--rounds=6', '--clients_per_round=4',
           '--eval_every=0', '--checkpoint_every=1', f'--workers={spec}', '--worker_timeout=2',
           f'--root_output_dir={tmp_path}', '--experiment_name=w', '--noprogress']
    straight = cmd[:-2] + ['--experiment_name=straight', '--noprogress']
    subprocess.run(straight, check=True, capture_output=True, timeout=600, cwd=REPO)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO,
                            text=True)
    metrics = tmp_path / 'w' / 'metrics.csv'
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
      if metrics.exists() and metrics.read_text().count('\n') >= 3:  # header + 2 rounds
        break
      time.sleep(0.02)
    victim = pool[1]
    os.kill(victim.pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    if proc.returncode == 0:
      pytest.skip('the run finished before the worker was killed')
    assert proc.returncode == 4, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith('error: ') and f'127.0.0.1:{victim.port}' in last, last
    pool[1] = workers.ManagedWorker(port=victim.port)  # the worker comes back
    subprocess.run(cmd, check=True, capture_output=True, timeout=600, cwd=REPO)
    a = np.load(tmp_path / 'straight' / 'checkpoints' / 'ckpt_000006.npz')
    b = np.load(tmp_path / 'w' / 'checkpoints' / 'ckpt_000006.npz')
    for key in a.files:
      np.testing.assert_allclose(a[key], b[key], atol=1e-6)
    assert [r['round'] for r in _rows(metrics)] == [str(i) for i in range(1, 7)]
  finally:
    for w in pool:
      w.stop()


# A user's plugin, from outside the package: a norm-bounded mean and a task on its own arrays.
PLUGIN = '''
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_lab import aggregators
from tff_lab import tasks
from tff_lab.data import client_data
from tff_lab.tasks import task as task_lib


def build_norm_mean(weighted: bool, max_norm: float = 1.0):
  """The mean of the client updates, each clipped to L2 norm max_norm."""
  if max_norm <= 0:
    raise ValueError(f'max_norm must be positive, got {max_norm}')
  mean = tff.aggregators.MeanFactory() if weighted else tff.aggregators.UnweightedMeanFactory()
  return tff.aggregators.clipping_factory(max_norm, mean)


def build_mytask(num_clients: int = 4, examples: int = 20, seed: int = 0):
  """Logistic regression on random 3-feature arrays."""
  rng = np.random.default_rng(seed)
  w = np.array([1.0, -2.0, 0.5], np.float32)

  def arrays():
    x = rng.normal(size=(examples, 3)).astype(np.float32)
    return x, (x @ w > 0).astype(np.float32)[:, None]

  train = {f'c{i}': arrays() for i in range(num_clients)}
  test = {f'c{i}': arrays() for i in range(num_clients)}
  return task_lib.Task(
      name='mytask', train_data=client_data.from_arrays(train),
      test_data=client_data.from_arrays(test), centralized_test_data=client_data.pool(test),
      model_fn=lambda: tf.keras.Sequential(
          [tf.keras.layers.Input((3,)), tf.keras.layers.Dense(1, activation='sigmoid')]),
      loss_fn=tf.keras.losses.BinaryCrossentropy, prediction_kind='binary')


aggregators.register('norm_mean', build_norm_mean)
tasks.register('mytask', build_mytask)
'''


def _run_binary(tmp_path, *argv):
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [str(tmp_path)] + [p for p in [os.environ.get('PYTHONPATH')] if p]))
  return subprocess.run([sys.executable, BINARY, f'--root_output_dir={tmp_path}/runs',
                         '--noprogress', *argv], capture_output=True, text=True, timeout=300,
                        cwd=REPO, env=env)


def test_a_plugin_task_and_aggregator_train_and_resuming_without_the_plugin_is_refused(tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  (tmp_path / 'myplugin.py').write_text(PLUGIN)
  run = ['--task=mytask', '--aggregator=norm_mean', '--rounds=2', '--clients_per_round=2',
         '--eval_every=1', '--experiment_name=p']
  result = _run_binary(tmp_path, '--plugin=myplugin', '--norm_mean_max_norm=0.5',
                       '--mytask_num_clients=3', *run)
  assert result.returncode == 0, result.stderr[-2000:]
  exp_dir = tmp_path / 'runs' / 'p'
  saved = json.loads((exp_dir / 'config.json').read_text())
  assert saved['plugins'] == ['myplugin']
  assert saved['task_options'] == {'num_clients': 3, 'examples': 20, 'seed': 0}
  assert saved['aggregation'] == {'aggregator': 'norm_mean', 'aggregator_options': {'max_norm': 0.5}}
  rows = _rows(exp_dir / 'metrics.csv')
  assert [r['round'] for r in rows] == ['1', '2']
  # The rule ran (its clip is measured) and the byte counts reached metrics.csv.
  assert all(float(r['aggregator/clipping_norm']) == 0.5 for r in rows), rows[0]
  assert all(int(r['upload_bytes_per_client']) == 16 for r in rows), rows[0]  # 3 weights + bias

  again = _run_binary(tmp_path, *run)  # the same run without its plugin
  assert again.returncode == 2, again.stderr[-2000:]
  lines = again.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), lines
  assert "plugins: saved ['myplugin'], given []" in lines[0] and '--plugin=myplugin' in lines[0]
  assert [r['round'] for r in _rows(exp_dir / 'metrics.csv')] == ['1', '2']  # nothing changed

  (tmp_path / 'broken_plugin.py').write_text('import no_such_dependency\n')
  broken = _run_binary(tmp_path, '--plugin', 'broken_plugin', *run)
  assert broken.returncode == 2
  assert broken.stderr.strip().splitlines() == [
      "error: --plugin=broken_plugin: cannot import broken_plugin (ModuleNotFoundError: No module "
      "named 'no_such_dependency')"], broken.stderr


@pytest.mark.parametrize('source, message', [
    ('import tff_lab\ntff_lab.tasks.register("digits", lambda: None)\n',
     "task 'digits' is already registered"),
    ('import tff_lab\ntff_lab.aggregators.register("t_twice", lambda weighted: None)\n'
     'tff_lab.aggregators.register("t_twice", lambda weighted: None)\n',
     "aggregator 't_twice' is already registered"),
    ('import tff_lab\ntff_lab.tasks.register("t_nodefault", lambda num_clients: None)\n',
     "task 't_nodefault': builder option 'num_clients' has no default"),
])
def test_bad_plugins_are_one_line_and_exit_2(tmp_path, monkeypatch, capsys, source, message):
  from tff_lab.aggregators import registry  # pylint: disable=g-import-not-at-top
  (tmp_path / 't_bad_plugin.py').write_text(source)
  monkeypatch.syspath_prepend(str(tmp_path))
  monkeypatch.delitem(sys.modules, 't_bad_plugin', raising=False)
  try:
    with pytest.raises(SystemExit) as exc:
      cli.load_plugins(['run_experiment', '--plugin=t_bad_plugin'])
  finally:
    registry._BUILDERS.pop('t_twice', None)  # pylint: disable=protected-access
  err = capsys.readouterr().err
  assert exc.value.code == 2 and err.count('\n') == 1, err
  assert err.startswith('error: --plugin=t_bad_plugin: cannot import t_bad_plugin (ValueError: ')
  assert message in err, err


def test_an_unknown_flag_is_one_line_and_exit_2(capsys):
  with pytest.raises(SystemExit) as exc:
    cli.parse_flags(['run_experiment', '--mytask_num_clients=3'])
  err = capsys.readouterr().err
  assert exc.value.code == 2 and err.count('\n') == 1, err
  assert "Unknown command line flag 'mytask_num_clients'" in err and '--plugin' in err
  flags.FLAGS.unparse_flags()


def test_ctrl_c_is_one_line_naming_the_round_reached(run_cli, monkeypatch, tmp_path):
  def interrupted_after_two_rounds(config, argv=None):
    del argv
    os.makedirs(os.path.join(config.experiment_dir, 'checkpoints'))
    with open(os.path.join(config.experiment_dir, 'metrics.csv'), 'w') as f:
      f.write('round,train_loss\n1,0.5\n2,0.4\n')
    raise KeyboardInterrupt

  monkeypatch.setattr(loop, 'run_experiment', interrupted_after_two_rounds)
  code, err = run_cli('--experiment_name=ctrl_c')
  assert code == 130
  assert err.strip().splitlines() == [
      'interrupted at round 2; re-run the same command to resume from its last checkpoint']
