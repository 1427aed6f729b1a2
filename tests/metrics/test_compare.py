"""Run comparison over synthetic experiment directories (metrics.csv + config.json)."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from tff_lab.metrics import compare


def _write_run(directory, config, rows):
  directory.mkdir(parents=True)
  (directory / 'config.json').write_text(json.dumps(config))
  fields = list(dict.fromkeys(k for r in rows for k in r))
  with open(directory / 'metrics.csv', 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=fields)
    writer.writeheader()
    for row in rows:
      writer.writerow({k: row.get(k, '') for k in fields})
  return str(directory)


def _rows(rng, rounds, dp):
  rows = []
  for r in range(1, rounds + 1):
    row = {'round': r, 'train_loss': rng.uniform(), 'upload_bytes_per_client': 100 + r}
    if r % 2 == 0:  # evaluation every other round: empty cells between
      row['central_eval_accuracy'] = rng.uniform()
    if dp:
      row['dp_epsilon'] = 0.1 * r
    rows.append(row)
  return rows


@pytest.fixture
def two_runs(tmp_path):
  rng = np.random.default_rng(0)
  base = {'task': 'digits', 'rounds': 4, 'client_learning_rate': 0.1,
          'task_options': {'model': 'cnn', 'alpha': 0.5}, 'experiment_name': 'a'}
  other = dict(base, client_learning_rate=0.05, task_options={'model': 'mlp', 'alpha': 0.5},
               experiment_name='b', seed=1)
  rows_a, rows_b = _rows(rng, 4, dp=False), _rows(rng, 5, dp=True)
  dirs = [_write_run(tmp_path / 'a', base, rows_a), _write_run(tmp_path / 'b', other, rows_b)]
  return dirs, (rows_a, rows_b)


def test_table_holds_the_last_values(two_runs):
  dirs, all_rows = two_runs
  comparison = compare.compare_runs(dirs)
  assert [r['run'] for r in comparison.table] == ['a', 'b']
  for row, rows in zip(comparison.table, all_rows):
    assert row['rounds'] == rows[-1]['round']
    assert row['train_loss'] == pytest.approx(rows[-1]['train_loss'])
    last_eval = [r['central_eval_accuracy'] for r in rows if 'central_eval_accuracy' in r][-1]
    assert row['central_eval_accuracy'] == pytest.approx(last_eval)
    assert row['upload_bytes_per_client'] == sum(r['upload_bytes_per_client'] for r in rows)
  assert comparison.table[0]['dp_epsilon'] is None
  assert comparison.table[1]['dp_epsilon'] == pytest.approx(all_rows[1][-1]['dp_epsilon'])
  assert 'fed_eval_accuracy' not in comparison.table[0]  # no run has it


def test_differences_are_exactly_the_differing_keys(two_runs):
  comparison = compare.compare_runs(two_runs[0])
  assert list(comparison.config_differences) == ['client_learning_rate', 'task_options.model',
                                                 'seed']
  assert comparison.config_differences['seed'] == {'a': None, 'b': 1}
  assert comparison.config_differences['task_options.model'] == {'a': 'cnn', 'b': 'mlp'}


def test_plot_has_one_subplot_per_quantity(two_runs, tmp_path):
  comparison = compare.compare_runs(two_runs[0])
  assert [q[0] for q in comparison.quantities()] == [
      'train_loss', 'central_eval_accuracy', 'upload_bytes_per_client', 'dp_epsilon']
  path = comparison.plot(str(tmp_path / 'c.png'))
  assert open(path, 'rb').read(8) == b'\x89PNG\r\n\x1a\n'


def test_cli(two_runs, tmp_path):
  png = tmp_path / 'out.png'
  out = subprocess.run([sys.executable, '-m', 'tff_lab.compare_cli', *two_runs[0],
                        f'--output={png}'], capture_output=True, text=True, check=True).stdout
  assert '| run | rounds | train_loss |' in out and 'client_learning_rate: a=0.1, b=0.05' in out
  assert png.exists()
  bad = subprocess.run([sys.executable, '-m', 'tff_lab.compare_cli', two_runs[0][0],
                        str(tmp_path)], capture_output=True, text=True)
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines() == [f'error: {tmp_path}: no metrics.csv (not an '
                                             'experiment directory)']
