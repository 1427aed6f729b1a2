"""The evaluation benchmark runs end to end on a small task and prints its table and JSON line
(it raises if the two evaluators' metrics differ)."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_small_run_prints_both_evaluators_and_their_ratio():
  out = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'benchmarks', 'evaluation_cost.py'), '--repeats=2',
       '--task=seed_linear'], capture_output=True, text=True, timeout=600, check=True,
      cwd=ROOT).stdout
  record = json.loads(out.strip().splitlines()[-1])
  assert record['benchmark'] == 'evaluation_cost' and record['task'] == 'seed_linear'
  median = record['median_seconds']
  assert set(median) == {'tff', 'fused'} and all(t > 0 for t in median.values())
  assert abs(record['ratio_tff_over_fused'] - median['tff'] / median['fused']) < 1e-9
  assert 'tff / fused (median)' in out
