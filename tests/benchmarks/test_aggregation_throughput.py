"""W4's benchmark runs end to end at a tiny size and prints its table and JSON line."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_tiny_w4_run_prints_the_ratios():
  out = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'benchmarks', 'aggregation_throughput.py'),
       '--rounds=1', '--clients=4', '--examples_per_client=10', '--settings=median,clip'],
      capture_output=True, text=True, timeout=600, check=True, cwd=ROOT).stdout
  record = json.loads(out.strip().splitlines()[-1])
  assert record['workload'] == 'W4'
  assert set(record['ratio_vs_tff_path']) == {'median', 'clip'}
  assert {'median fused', 'median tff', 'clip fused', 'clip tff', 'vanilla TFF',
          'centralised Keras'} == set(record['examples_per_second'])
  assert all(rate > 0 for rate in record['examples_per_second'].values())
  assert 'vs same on tff' in out


def test_unknown_setting_is_one_line():
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'benchmarks', 'aggregation_throughput.py'),
       '--settings=bogus'], capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert result.returncode != 0
  assert "unknown --settings ['bogus']" in result.stderr
