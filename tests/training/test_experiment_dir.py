"""Experiment directories: records that never contradict themselves (issue #13 part 1).

Each bug of the issue is reproduced as it was reported, through the public entry points
(`config.prepare_experiment_dir`, `loop.run_experiment`, the binary's main):
- a re-run with a resumable setting changed (`--simulation=fused` on a run trained with `tff`)
  rewrote config.json and summary.json and overwrote the original wall time;
- `--rounds` below the rounds completed was accepted, leaving summary.json beside more CSV rows;
- default directory names (`<task>_<algorithm>`) made the README's examples collide.
"""

import csv
import hashlib
import json
import os
import re
import sys

from absl import flags
import numpy as np
import pytest

import tff_lab
from tff_lab import cli
from tff_lab.metrics import writers
from tff_lab.training import config as config_lib
from tff_lab.training import experiment_dir
from tff_lab.training import loop

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# A tiny run: the seed article's linear task, 5 of its clients a round, no evaluation.
_RUN = ['--task=seed_linear', '--clients_per_round=5', '--eval_every=0', '--checkpoint_every=2',
        '--client_learning_rate=0.05', '--noprogress']


def _config(tmp_path, **kw):
  settings = dict(task='seed_linear', rounds=3, clients_per_round=5, eval_every=0,
                  checkpoint_every=2, client_learning_rate=0.05, root_output_dir=str(tmp_path),
                  experiment_name='e', progress=False)
  settings.update(kw)
  return config_lib.ExperimentConfig(**settings)


def _snapshot(directory):
  """Every file under `directory`: its bytes and modification time."""
  out = {}
  for root, _, names in os.walk(directory):
    for name in names:
      path = os.path.join(root, name)
      with open(path, 'rb') as f:
        out[os.path.relpath(path, directory)] = (f.read(), os.stat(path).st_mtime_ns)
  return out


def _csv_rows(exp_dir):
  with open(os.path.join(exp_dir, 'metrics.csv'), newline='') as f:
    return list(csv.DictReader(f))


def _csv_last_values(exp_dir):
  """The last non-empty value of each metrics.csv column, as a float."""
  last = {}
  for row in _csv_rows(exp_dir):
    for key, text in row.items():
      try:
        value = float(text)
      except (TypeError, ValueError):  # empty, or not a number
        continue
      if key != 'round':
        last[key] = value
  return last


def _json(path):
  with open(path) as f:
    return json.load(f)


def _history(exp_dir):
  with open(os.path.join(exp_dir, 'history.jsonl')) as f:
    return [json.loads(line) for line in f]


def _assert_summary_matches_csv(exp_dir):
  summary = _json(os.path.join(exp_dir, 'summary.json'))
  rows = _csv_rows(exp_dir)
  assert summary['rounds_completed'] == int(rows[-1]['round'])
  assert {k: float(v) for k, v in summary['final_metrics'].items()} == _csv_last_values(exp_dir)
  return summary


@pytest.fixture
def cli_main(monkeypatch, capsys, tmp_path):
  """Runs the binary's main in-process (sys.argv as a shell would give it); returns
  (exit code, stdout, stderr)."""
  def run(*argv):
    argv = ['run_experiment', f'--root_output_dir={tmp_path}', *argv]
    flags.FLAGS.unparse_flags()
    flags.FLAGS(argv)
    monkeypatch.setattr(sys, 'argv', argv)
    try:
      cli._main(['run_experiment'])  # pylint: disable=protected-access
      code = 0
    except SystemExit as e:
      code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err

  yield run
  flags.FLAGS.unparse_flags()


def _parsed_config(*argv):
  flags.FLAGS.unparse_flags()
  flags.FLAGS(['run_experiment', *argv])
  try:
    return cli.config_from_flags()
  finally:
    flags.FLAGS.unparse_flags()


# --- config.json keeps the settings the directory was made with -----------------------------


def test_a_resumable_setting_changed_leaves_config_json_as_made(tmp_path):
  config_lib.prepare_experiment_dir(_config(tmp_path, simulation='tff'))
  path = tmp_path / 'e' / 'config.json'
  made = path.read_bytes()
  assert json.loads(made)['simulation'] == 'tff'
  for kw in ({'simulation': 'fused'}, {'max_concurrent_clients': 2, 'progress': True},
             {'worker_timeout': 5.0}):
    config_lib.prepare_experiment_dir(_config(tmp_path, **kw))
    assert path.read_bytes() == made, kw
  # Extending the run sets its target, and nothing else.
  config_lib.prepare_experiment_dir(_config(tmp_path, rounds=7, simulation='fused'))
  assert json.loads(path.read_text()) == dict(json.loads(made), rounds=7)


def test_shrinking_rounds_is_refused_and_changes_nothing(tmp_path):
  config_lib.prepare_experiment_dir(_config(tmp_path, rounds=15))
  exp_dir = tmp_path / 'e'
  csv_writer = writers.CSVMetricsWriter(str(exp_dir / 'metrics.csv'))
  for r in range(1, 16):
    csv_writer.write(r, {'train_loss': 1.0 / r})
  os.makedirs(exp_dir / 'checkpoints')
  (exp_dir / 'checkpoints' / 'ckpt_000015.npz').write_bytes(b'')  # only its name is read
  before = _snapshot(exp_dir)
  with pytest.raises(config_lib.ConfigError) as error:
    config_lib.prepare_experiment_dir(_config(tmp_path, rounds=5))
  message = str(error.value)
  assert '\n' not in message
  assert message.startswith('--rounds=5 is below the 15 rounds the run in')
  assert '--rounds=15 or more' in message
  assert _snapshot(exp_dir) == before
  config_lib.prepare_experiment_dir(_config(tmp_path, rounds=15))  # the same target: resumes
  # Rows after the newest checkpoint (a kill before the next one) count as completed too.
  csv_writer.write(16, {'train_loss': 0.01})
  with pytest.raises(config_lib.ConfigError, match='below the 16 rounds'):
    config_lib.prepare_experiment_dir(_config(tmp_path, rounds=15))


def test_shrinking_rounds_from_the_binary_is_one_line_and_exit_2_before_tracing(
    tmp_path, cli_main, monkeypatch):
  config_lib.prepare_experiment_dir(_parsed_config(
      *_RUN, '--experiment_name=e', f'--root_output_dir={tmp_path}', '--rounds=4'))
  exp_dir = tmp_path / 'e'
  writer = writers.CSVMetricsWriter(str(exp_dir / 'metrics.csv'))
  for r in range(1, 5):
    writer.write(r, {'train_loss': 1.0})
  before = _snapshot(exp_dir)

  def no_tracing(*args, **kwargs):
    raise AssertionError('TFF tracing started before the input was rejected')

  monkeypatch.setattr(loop, 'build_process', no_tracing)
  code, _, err = cli_main(*_RUN, '--experiment_name=e', '--rounds=2')
  assert code == 2
  lines = err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: --rounds=2 is below the 4 rounds'), lines
  assert _snapshot(exp_dir) == before


# --- default directory names -----------------------------------------------------------------


def test_default_name_is_task_algorithm_server_optimizer_and_a_hash_of_the_rest():
  config = config_lib.ExperimentConfig(task='seed_linear', seed=3, client_learning_rate=0.05,
                                       simulation='fused', rounds=7, workers=('h:1',))
  # Independently of the code: SHA-256 of the canonical JSON of the non-default comparable
  # settings other than task, algorithm and server optimizer (resumable ones excluded).
  identity = json.dumps({'client_learning_rate': 0.05, 'seed': 3}, sort_keys=True,
                        separators=(',', ':'))
  expected = 'seed_linear_fedavg_sgd_' + hashlib.sha256(identity.encode()).hexdigest()[:8]
  assert experiment_dir.default_experiment_name(config) == expected


def test_readme_examples_get_distinct_names_and_the_same_command_resumes():
  main_job = _parsed_config()
  assert re.fullmatch(r'digits_fedavg_sgd_[0-9a-f]{8}', main_job.experiment_name)
  # Resumable settings and options given at their defaults keep the name: the same run.
  for argv in (['--simulation=fused'], ['--rounds=5', '--noprogress', '--workers='],
               ['--digits_model=cnn', '--client_learning_rate=0.1']):
    assert _parsed_config(*argv).experiment_name == main_job.experiment_name, argv
  examples = [
      [],
      ['--task=synthetic', '--synthetic_alpha=1', '--synthetic_beta=1',
       '--server_optimizer=adam', '--server_learning_rate=0.01', '--server_adam_beta_1=0.9',
       '--client_learning_rate=0.01', '--client_batch_size=10', '--rounds=100'],
      ['--task=synthetic', '--synthetic_alpha=1', '--synthetic_beta=1', '--server_optimizer=adam',
       '--server_learning_rate=0.02'],
      ['--task=synthetic', '--algorithm=fedprox', '--mu=1', '--client_epochs=20',
       '--client_batch_size=10', '--client_learning_rate=0.01', '--rounds=200'],
      ['--task=synthetic', '--algorithm=fedprox', '--mu=0.5'],
      ['--task=seed_linear', '--algorithm=fedsgd', '--server_learning_rate=0.1'],
      ['--task=digits', '--digits_partition=shards', '--digits_shards_per_client=2',
       '--digits_model=mlp'],
      ['--task=digits', '--digits_model=mlp'],
  ]
  names = [_parsed_config(*argv).experiment_name for argv in examples]
  assert len(set(names)) == len(names), names
  assert names[1].startswith('synthetic_fedavg_adam_') and names[3].startswith(
      'synthetic_fedprox_sgd_')
  # The README names the main job's directory by its real name, and no longer by the old one.
  readme = open(os.path.join(REPO, 'README.md'), encoding='utf-8').read()
  assert f'runs/{main_job.experiment_name}/' in readme
  assert not re.search(r'runs/[a-z0-9]+(_[a-z0-9]+)?_(fedavg|fedprox|fedsgd)\b(?!_)', readme)


def test_a_default_named_run_of_a_missing_plugin_names_the_plugin(tmp_path, cli_main):
  run = tmp_path / 'mytask_fedavg_sgd_0123abcd'  # as made with --plugin=myplugin
  run.mkdir()
  (run / 'config.json').write_text(json.dumps({'task': 'mytask', 'plugins': ['myplugin']}))
  code, _, err = cli_main('--task=mytask', '--noprogress')
  assert code == 2
  lines = err.strip().splitlines()
  assert len(lines) == 1 and "plugins: saved ['myplugin'], given []" in lines[0], lines
  assert 're-run with --plugin=myplugin' in lines[0]


# --- history.jsonl and summary.json ----------------------------------------------------------


def test_rerun_with_another_backend_keeps_the_record_and_appends_history(tmp_path, cli_main):
  code, out, err = cli_main(*_RUN, '--rounds=3', '--simulation=tff')
  assert code == 0, err
  name = _parsed_config(*_RUN, '--rounds=3').experiment_name
  exp_dir = str(tmp_path / name)
  assert out.strip().startswith(f'done: {exp_dir}')
  config_bytes = open(os.path.join(exp_dir, 'config.json'), 'rb').read()
  first = _assert_summary_matches_csv(exp_dir)
  assert first['status'] == 'finished' and first['config']['simulation'] == 'tff'
  [entry] = _history(exp_dir)
  assert entry['status'] == 'finished' and entry['exit_code'] == 0
  assert (entry['rounds_from'], entry['rounds_to']) == (0, 3)
  assert entry['argv'][1:] == [f'--root_output_dir={tmp_path}', *_RUN, '--rounds=3',
                               '--simulation=tff']
  assert entry['settings']['simulation'] == 'tff' and entry['changed'] == {}
  assert entry['tff_lab_version'] == tff_lab.__version__
  assert entry['git_commit'] is None or re.fullmatch(r'[0-9a-f]{40}', entry['git_commit'])
  assert entry['wall_seconds'] > 0 and entry['started'] <= entry['ended']

  # The re-run: nothing to train. It says done, and rewrites no record of the run.
  code, out, err = cli_main(*_RUN, '--rounds=3', '--simulation=fused')
  assert code == 0, err
  assert 'train_loss=' in out  # the final metrics, from metrics.csv
  assert open(os.path.join(exp_dir, 'config.json'), 'rb').read() == config_bytes
  summary = _assert_summary_matches_csv(exp_dir)
  assert summary['config']['simulation'] == 'tff'
  assert summary['final_metrics'] == first['final_metrics']
  history = _history(exp_dir)
  assert history[0] == entry  # the original wall time and settings are kept
  assert history[1]['settings']['simulation'] == 'fused'
  assert history[1]['changed'] == {'simulation': 'fused'}
  assert (history[1]['rounds_from'], history[1]['rounds_to']) == (3, 3)
  assert summary['invocations'] == 2
  assert summary['wall_seconds'] == pytest.approx(sum(e['wall_seconds'] for e in history))

  # Extending with the other backend trains the new rounds; the record follows metrics.csv.
  code, _, err = cli_main(*_RUN, '--rounds=5', '--simulation=fused')
  assert code == 0, err
  summary = _assert_summary_matches_csv(exp_dir)
  assert summary['rounds_completed'] == 5 and summary['resumed_from_round'] == 3
  assert summary['config'] == dict(json.loads(config_bytes), rounds=5)
  history = _history(exp_dir)
  assert [(e['rounds_from'], e['rounds_to'], e['status']) for e in history] == [
      (0, 3, 'finished'), (3, 3, 'finished'), (3, 5, 'finished')]
  assert summary['last_invocation'] == history[-1]
  assert summary['wall_seconds'] == pytest.approx(sum(e['wall_seconds'] for e in history))

  # Shrinking is refused, and nothing is written.
  before = _snapshot(exp_dir)
  code, _, err = cli_main(*_RUN, '--rounds=4')
  assert code == 2 and err.count('\n') == 1 and 'below the 5 rounds' in err
  assert _snapshot(exp_dir) == before


class _Interrupt(KeyboardInterrupt):
  """Ctrl-C in the middle of a round's outputs."""


def test_summary_follows_metrics_csv_when_a_run_stops_and_resumes(tmp_path, monkeypatch):
  real_write = writers.TensorBoardWriter.write

  def write_then_interrupt(self, round_num, metrics):
    real_write(self, round_num, metrics)
    if round_num == 3:  # round 3 is in metrics.csv; the newest checkpoint is round 2's
      raise _Interrupt()

  with monkeypatch.context() as m:
    m.setattr(writers.TensorBoardWriter, 'write', write_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
      loop.run_experiment(_config(tmp_path, rounds=4))
  exp_dir = str(tmp_path / 'e')
  summary = _assert_summary_matches_csv(exp_dir)
  assert summary['status'] == 'interrupted' and summary['rounds_completed'] == 3
  assert summary['last_checkpoint_round'] == 2
  [entry] = _history(exp_dir)
  assert entry['status'] == 'interrupted' and entry['exit_code'] == 130
  assert entry['argv'] is None  # from Python, not a command line

  summary = loop.run_experiment(_config(tmp_path, rounds=4))
  assert summary == _json(os.path.join(exp_dir, 'summary.json'))
  _assert_summary_matches_csv(exp_dir)
  assert [r['round'] for r in _csv_rows(exp_dir)] == ['1', '2', '3', '4']
  assert summary['status'] == 'finished' and summary['resumed_from_round'] == 2
  assert [(e['rounds_from'], e['rounds_to'], e['status']) for e in _history(exp_dir)] == [
      (0, 3, 'interrupted'), (2, 4, 'finished')]


def test_an_invocation_killed_without_a_word_is_closed_by_the_next(tmp_path):
  config = _config(tmp_path, rounds=4)
  config_lib.prepare_experiment_dir(config)
  exp_dir = config.experiment_dir
  csv_writer = writers.CSVMetricsWriter(os.path.join(exp_dir, 'metrics.csv'))
  killed = experiment_dir.RunRecord(config, argv=['tff-lab-run', '--rounds=4'])
  killed.restored(0, {'num_train_clients': 10})
  for r in (1, 2):
    csv_writer.write(r, {'train_loss': 1.0 / r, 'note': 'x'})
    killed.round_done(r, {'train_loss': 1.0 / r, 'note': 'x'})
  killed.checkpointed(2)
  # SIGKILL here: the history line still says running; summary.json is as of round 2.
  assert _history(exp_dir)[0]['status'] == 'running'
  summary = _assert_summary_matches_csv(exp_dir)
  assert summary['status'] == 'running' and summary['last_checkpoint_round'] == 2

  record = experiment_dir.RunRecord(config)
  first, second = _history(exp_dir)
  assert first['status'] == 'killed' and first['rounds_to'] == 2 and first['wall_seconds'] > 0
  assert first['ended'] == summary['last_invocation']['updated']
  assert second['status'] == 'running' and second['invocation'] == 2
  assert record.rounds_completed == 2 and record.final_metrics == {'train_loss': 0.5}
  record.restored(2, {'num_train_clients': 10})
  summary = record.finish('diverged', error=loop.NonFiniteLossError('round 3: loss\nis nan'))
  assert summary['status'] == 'diverged'
  last = _history(exp_dir)[-1]
  assert last['exit_code'] == 3 and last['error'] == 'NonFiniteLossError: round 3: loss is nan'
  assert summary['task'] == {'num_train_clients': 10}
  assert summary['wall_seconds'] == pytest.approx(first['wall_seconds'] + last['wall_seconds'])


def test_the_model_card_says_how_raw_inputs_become_the_models(tmp_path):
  """final_model.json's preprocessing, applied to the raw data, gives what the model was fed."""
  from sklearn import datasets as sk_datasets  # pylint: disable=g-import-not-at-top
  from tff_lab import tasks  # pylint: disable=g-import-not-at-top
  task = tasks.create_task('breast_cancer_silos')
  with open(experiment_dir.write_model_card(str(tmp_path), task), encoding='utf-8') as f:
    card = json.load(f)
  assert card['input_shape'] == [30] and card['input_dtype'] == 'float32'
  raw = sk_datasets.load_breast_cancer().data.astype(np.float32)
  standardised = (raw - np.array(card['input_preprocessing']['mean'], np.float32)) / np.array(
      card['input_preprocessing']['std'], np.float32)
  test_x = task.centralized_test_data[0]
  nearest = [np.abs(standardised - row).max(axis=1).min() for row in test_x]
  assert max(nearest) < 1e-4  # every test input is a raw example, standardised as the card says
  digits = json.load(open(experiment_dir.write_model_card(
      str(tmp_path), tasks.create_task('digits')), encoding='utf-8'))
  assert digits['input_shape'] == [8, 8, 1] and '16' in digits['input_preprocessing']['description']
