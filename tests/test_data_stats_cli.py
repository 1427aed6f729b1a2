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
