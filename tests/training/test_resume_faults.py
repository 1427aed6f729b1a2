"""Resume survives a damaged experiment directory, as a user would damage it by hand.

- A damaged (truncated, overwritten) newest checkpoint: the run falls back to the newest good one
  with one warning line and ends bit-identical to an uninterrupted run, one CSV row per round.
- A run interrupted after a checkpoint, then resumed (with and without DP): each round holds
  exactly one TensorBoard value per tag, the one metrics.csv holds, and metrics.jsonl holds
  metrics.csv's rows (also after a kill between a round's CSV row and its JSON line).
- A config.json that does not parse, or a seed NumPy cannot take: one line, exit 2, before any
  TFF tracing, and nothing in the directory is lost.
"""

import csv
import glob
import json
import os
import subprocess
import sys

from absl import flags
from absl import logging
import numpy as np
import pytest
import tensorflow as tf

from tff_lab import cli
from tff_lab.metrics import writers
from tff_lab.training import checkpoint
from tff_lab.training import config as config_lib
from tff_lab.training import loop

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARY = os.path.join(REPO, 'experiments', 'run_experiment.py')
ROUNDS = 5
# Per-round values that must repeat exactly in a resumed run (round_seconds is wall time).
_EXACT = ('train_loss', 'train_accuracy', 'train_examples', 'fed_eval_loss', 'fed_eval_accuracy',
          'central_eval_loss')


def _config(root, name, **kw):
  settings = dict(task='seed_linear', rounds=ROUNDS, clients_per_round=4, eval_every=2,
                  checkpoint_every=1, client_learning_rate=0.05, seed=3, root_output_dir=str(root),
                  experiment_name=name, progress=False)
  settings.update(kw)
  return config_lib.ExperimentConfig(**settings)


def _rows(exp_dir):
  with open(os.path.join(exp_dir, 'metrics.csv'), newline='') as f:
    return list(csv.DictReader(f))


def _tensorboard(exp_dir):
  """(tag, step) -> every value the event files hold for it."""
  out = {}
  for path in glob.glob(os.path.join(exp_dir, 'tensorboard', '*tfevents*')):
    for event in tf.compat.v1.train.summary_iterator(path):
      for v in event.summary.value:
        out.setdefault((v.tag, event.step), []).append(float(tf.make_ndarray(v.tensor)))
  return out


def _checkpoint_arrays(exp_dir, round_num):
  with np.load(os.path.join(exp_dir, 'checkpoints', f'ckpt_{round_num:06d}.npz')) as data:
    return {k: data[k] for k in data.files}


def _assert_one_value_per_round(exp_dir):
  """Each round has exactly one value per TensorBoard tag, equal to metrics.csv's (float32)."""
  values = _tensorboard(exp_dir)
  rows = _rows(exp_dir)
  assert [r['round'] for r in rows] == [str(i) for i in range(1, ROUNDS + 1)]
  duplicated = {k: v for k, v in values.items() if len(v) != 1}
  assert not duplicated, duplicated
  assert {step for _, step in values} == set(range(1, ROUNDS + 1))
  for row in rows:
    for tag, text in row.items():
      if tag != 'round' and text:
        if tag == 'dp_accounting':  # text (the convention of dp_epsilon): not a TensorBoard scalar
          continue
        assert values[(tag, int(row['round']))] == [float(np.float32(float(text)))], (tag, row)
  return values


@pytest.fixture(scope='module')
def straight(tmp_path_factory):
  """An uninterrupted run: its directory."""
  root = tmp_path_factory.mktemp('straight')
  loop.run_experiment(_config(root, 'straight'))
  return str(root / 'straight')


@pytest.fixture
def warnings(monkeypatch):
  logged = []
  monkeypatch.setattr(logging, 'warning', lambda msg, *args: logged.append(msg % args))
  return logged


def _truncate(path):
  data = open(path, 'rb').read()
  with open(path, 'wb') as f:
    f.write(data[:len(data) // 3])


def _garbage(path):
  with open(path, 'wb') as f:
    f.write(b'not a checkpoint\n' * 20)


@pytest.mark.parametrize('damage', [_truncate, _garbage])
def test_damaged_newest_checkpoints_fall_back_and_resume_exactly(tmp_path, straight, warnings,
                                                                 damage):
  loop.run_experiment(_config(tmp_path, 'damaged'))
  exp_dir = str(tmp_path / 'damaged')
  ckpt_dir = os.path.join(exp_dir, 'checkpoints')
  assert checkpoint.list_checkpoints(ckpt_dir) == [3, 4, 5]
  for r in (4, 5):  # the two newest are damaged; round 3's is good
    damage(os.path.join(ckpt_dir, f'ckpt_{r:06d}.npz'))
  with open(os.path.join(ckpt_dir, 'ckpt_000006.npz.tmp'), 'wb') as f:  # a write a kill cut short
    f.write(b'PK\x03\x04torn')
  summary = loop.run_experiment(_config(tmp_path, 'damaged'))
  assert summary['resumed_from_round'] == 3
  said = [w for w in warnings if 'checkpoint' in w]
  assert len(said) == 1 and '\n' not in said[0], warnings
  assert 'ckpt_000004.npz' in said[0] and 'ckpt_000005.npz' in said[0]
  assert 'resuming from round 3' in said[0]
  assert sorted(os.listdir(ckpt_dir)) == ['ckpt_000003.npz', 'ckpt_000004.npz',
                                          'ckpt_000004.npz.damaged', 'ckpt_000005.npz',
                                          'ckpt_000005.npz.damaged']

  a, b = _checkpoint_arrays(straight, ROUNDS), _checkpoint_arrays(exp_dir, ROUNDS)
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=f'{key} differs after the fallback')
  rows_a, rows_b = _rows(straight), _rows(exp_dir)
  assert [r['round'] for r in rows_b] == [r['round'] for r in rows_a]  # one row per round
  for ra, rb in zip(rows_a, rows_b):
    for key in _EXACT:
      assert ra[key] == rb[key], (ra['round'], key)
  values_a, values_b = _assert_one_value_per_round(straight), _assert_one_value_per_round(exp_dir)
  assert {k: v for k, v in values_a.items() if k[0] in _EXACT} == {
      k: v for k, v in values_b.items() if k[0] in _EXACT}


class _Killed(BaseException):
  """Stands in for a kill: the loop stops where it is raised."""


@pytest.mark.parametrize('dp', [False, True])
def test_resume_rewrites_tensorboard_to_one_value_per_round(tmp_path, monkeypatch, dp):
  kw = dict(checkpoint_every=2)
  if dp:
    kw.update(algorithm='fedavg_unweighted', dp_delta=1e-3,
              aggregation={'dp': 'fixed', 'clip_norm': 0.5, 'noise_multiplier': 1.0})
  real_write = writers.TensorBoardWriter.write

  def write_then_die(self, round_num, metrics):
    real_write(self, round_num, metrics)
    if round_num == 3:  # round 3 is in metrics.csv and TensorBoard; the last checkpoint is 2
      raise _Killed()

  with monkeypatch.context() as m:
    m.setattr(writers.TensorBoardWriter, 'write', write_then_die)
    with pytest.raises(_Killed):
      loop.run_experiment(_config(tmp_path, 'e', **kw))
  exp_dir = str(tmp_path / 'e')
  first = _tensorboard(exp_dir)
  assert {s for _, s in first} == {1, 2, 3}
  assert checkpoint.latest_checkpoint(os.path.join(exp_dir, 'checkpoints')) == 2

  summary = loop.run_experiment(_config(tmp_path, 'e', **kw))
  assert summary['resumed_from_round'] == 2
  values = _assert_one_value_per_round(exp_dir)
  for (tag, step), v in first.items():  # the rounds before the checkpoint are kept as written
    if step <= 2:
      assert values[(tag, step)] == v, (tag, step)
  if dp:
    assert ('dp_epsilon', ROUNDS) in values
  _assert_jsonl_equals_csv(exp_dir)


@pytest.fixture
def run_cli(monkeypatch, capsys, tmp_path):
  """Runs the binary's main in-process; fails the test if TFF tracing starts. (code, stderr)."""
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


@pytest.mark.parametrize('content', [b'{"task": "seed_linear", "rounds": ', b'\xff\xfe\x00garbage',
                                     b'[1, 2]', b''])
def test_unparsable_config_json_is_one_line_and_nothing_is_lost(run_cli, tmp_path, content):
  exp_dir = tmp_path / 'exp'
  config_lib.prepare_experiment_dir(_config(tmp_path, 'exp'))
  (exp_dir / 'config.json').write_bytes(content)
  (exp_dir / 'metrics.csv').write_text('round,train_loss\n1,0.5\n')
  before = {p.name: p.read_bytes() for p in exp_dir.iterdir()}
  code, err = run_cli('--task=seed_linear', '--experiment_name=exp')
  assert code == 2
  assert err.count('\n') == 1 and err.startswith('error: '), err
  assert str(exp_dir / 'config.json') in err
  assert '--overwrite' in err and 'restore the file' in err
  assert {p.name: p.read_bytes() for p in exp_dir.iterdir()} == before


@pytest.mark.parametrize('seed', [-1, 2**32])
def test_out_of_range_seed_is_refused(run_cli, tmp_path, seed):
  code, err = run_cli('--task=seed_linear', f'--seed={seed}')
  assert code == 2
  assert err.count('\n') == 1 and err.startswith('error: '), err
  assert f'seed must be an integer in [0, 2**32 - 1], got {seed}' in err
  assert not os.listdir(tmp_path)  # refused before the experiment directory was made
  with pytest.raises(config_lib.ConfigError, match='seed must be'):
    _config(tmp_path, 'e', seed=seed).validate()
  _config(tmp_path, 'e', seed=2**32 - 1).validate()  # the bounds themselves are fine
  _config(tmp_path, 'e', seed=0).validate()


def test_binary_says_in_one_line_which_checkpoint_it_skipped(tmp_path):
  cmd = [sys.executable, BINARY, '--task=seed_linear', '--rounds=2', '--clients_per_round=4',
         '--eval_every=0', '--checkpoint_every=1', f'--root_output_dir={tmp_path}',
         '--experiment_name=e', '--noprogress']
  subprocess.run(cmd, check=True, capture_output=True, timeout=600, cwd=REPO)
  _garbage(str(tmp_path / 'e' / 'checkpoints' / 'ckpt_000002.npz'))
  result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'Traceback' not in result.stderr
  lines = [l for l in result.stderr.splitlines() if 'checkpoint' in l]
  assert len(lines) == 1, result.stderr
  assert 'ckpt_000002.npz' in lines[0] and 'resuming from round 1' in lines[0]
  assert [r['round'] for r in _rows(str(tmp_path / 'e'))] == ['1', '2']


def _jsonl(exp_dir):
  with open(os.path.join(exp_dir, 'metrics.jsonl'), encoding='utf-8') as f:
    return [json.loads(line) for line in f]


def _assert_jsonl_equals_csv(exp_dir):
  """metrics.jsonl holds metrics.csv's rows, one per round: each row's non-empty cells, typed."""
  rows, objects = _rows(exp_dir), _jsonl(exp_dir)
  assert [o['round'] for o in objects] == list(range(1, ROUNDS + 1))
  for row, obj in zip(rows, objects):
    cells = {k: v for k, v in row.items() if v != ''}
    assert {k: repr(v) if isinstance(v, float) else str(v) for k, v in obj.items()} == cells
  assert all(type(o['round']) is int for o in objects)  # pylint: disable=unidiomatic-typecheck
  assert any(isinstance(v, float) for v in objects[-1].values())  # numbers, not CSV text


def test_resume_after_a_kill_between_csv_and_jsonl_keeps_them_equal(tmp_path, monkeypatch):
  """Killed between round 3's CSV row and its JSON line (last checkpoint: round 2): the resumed
  run's metrics.jsonl holds metrics.csv's rows, one per round."""
  real = writers.json_row

  def json_row(row):
    if row.get('round') == '3':
      raise _Killed()
    return real(row)

  with monkeypatch.context() as m:
    m.setattr(writers, 'json_row', json_row)
    with pytest.raises(_Killed):
      loop.run_experiment(_config(tmp_path, 'e', checkpoint_every=2))
  exp_dir = str(tmp_path / 'e')
  assert [r['round'] for r in _rows(exp_dir)] == ['1', '2', '3']
  assert [o['round'] for o in _jsonl(exp_dir)] == [1, 2]
  summary = loop.run_experiment(_config(tmp_path, 'e', checkpoint_every=2))
  assert summary['resumed_from_round'] == 2
  assert 'metrics.jsonl' in summary['files']
  _assert_jsonl_equals_csv(exp_dir)
  objects = _jsonl(exp_dir)
  assert isinstance(objects[-1]['train_examples'], int)
  assert 'fed_eval_accuracy' in objects[1] and 'fed_eval_accuracy' not in objects[0]
