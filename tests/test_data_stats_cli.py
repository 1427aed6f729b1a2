"""`tff-lab-data-stats`: the report from the shell; a missing dataset is one line and exit 2.

Run as subprocesses: the binary defines `--task` and the task flags, as `tff_lab.cli` (imported by
other tests in this process) does.
"""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _start(*argv):
  return subprocess.Popen([sys.executable, '-m', 'tff_lab.data_stats_cli', *argv], cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_report_and_errors(tmp_path):
  out = tmp_path / 'report'
  runs = [_start('--task=digits', '--digits_partition=shards', '--digits_num_clients=10',
                 f'--output_dir={out}'),
          _start('--task=emnist62', f'--emnist62_data_dir={tmp_path / "empty"}')]
  (ok_out, _), (_, missing_err) = [run.communicate(timeout=300) for run in runs]
  assert [run.returncode for run in runs] == [0, 2]

  assert 'clients: 10, examples: 1437' in ok_out and 'mean TV distance' in ok_out
  with open(out / 'stats.json') as f:
    assert json.load(f)['num_clients'] == 10
  assert (out / 'client_sizes.png').exists() and (out / 'label_heatmap.png').exists()

  assert missing_err.splitlines() == [
      f'error: EMNIST not found: expected {tmp_path}/empty/emnist_all.sqlite (download '
      'https://storage.googleapis.com/tff-datasets-public/emnist_all.sqlite.lzma, decompress it '
      'with `xz -d`, and place it there; or let TFF download it: download=True, flag '
      '--<task>_download)']


PLUGIN = '''
import numpy as np
import tensorflow as tf

from tff_lab import tasks
from tff_lab.data import client_data
from tff_lab.tasks import task as task_lib


def build_arrays_task(num_clients: int = 2):
  clients = {f'c{i}': (np.zeros((i + 3, 2), np.float32), np.full((i + 3,), i % 2, np.int32))
             for i in range(num_clients)}
  return task_lib.Task(
      name='arrays', train_data=client_data.from_arrays(clients),
      test_data=client_data.from_arrays(clients), centralized_test_data=client_data.pool(clients),
      model_fn=lambda: tf.keras.Sequential([tf.keras.layers.Input((2,)), tf.keras.layers.Dense(2)]),
      loss_fn=tf.keras.losses.SparseCategoricalCrossentropy, prediction_kind='sparse_categorical')


tasks.register('arrays', build_arrays_task)
'''


def test_a_plugin_task_gets_its_flags(tmp_path):
  (tmp_path / 'stats_plugin.py').write_text(PLUGIN)
  env = dict(os.environ, PYTHONPATH=str(tmp_path))
  run = subprocess.run([sys.executable, '-m', 'tff_lab.data_stats_cli', '--plugin=stats_plugin',
                        '--task=arrays', '--arrays_num_clients=3',
                        f'--output_dir={tmp_path / "out"}'], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-2000:]
  with open(tmp_path / 'out' / 'stats.json') as f:
    assert json.load(f)['num_clients'] == 3
