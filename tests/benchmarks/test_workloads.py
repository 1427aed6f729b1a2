"""W2, W3 and W5 (benchmarks/workloads.py) run at smoke size; their table and JSON agree."""

import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROWS = ('tff_lab fused', 'tff_lab tff', 'vanilla TFF', 'centralised Keras')
SMOKE = {
    'W2': ['--users=6', '--per_client=10', '--clients_per_round=3'],
    'W3': ['--max_roles=30', '--per_client=4', '--clients_per_round=3'],
    'W5': ['--epochs=2', '--clients_per_round=3'],
}


def _run(workload):
  return subprocess.run(
      [sys.executable, os.path.join(ROOT, 'benchmarks', 'workloads.py'), f'--workload={workload}',
       '--rounds=1', '--peak_size=128', '--peak_repeats=2'] + SMOKE[workload],
      capture_output=True, text=True, timeout=900, check=True, cwd=ROOT).stdout


@pytest.mark.parametrize('workload', sorted(SMOKE))
def test_smoke_run_prints_consistent_table_and_json(workload):
  out = _run(workload)
  record = json.loads(out.strip().splitlines()[-1])
  assert record['workload'] == workload
  rate = record['examples_per_second']
  rows = ROWS if 'tff_lab fused: left out' not in out else ROWS[1:]
  assert set(rate) == set(rows)
  assert record['tff_lab_path'] == rows[0]
  assert all(r > 0 for r in rate.values())
  assert record['peak_flops_per_second'] > 0 and record['train_flops_per_example'] > 0
  for row in rows:
    assert record['ratio_vs_vanilla_tff'][row] == pytest.approx(
        rate[row] / rate['vanilla TFF'], rel=1e-3)
    assert record['ratio_vs_centralized'][row] == pytest.approx(
        rate[row] / rate['centralised Keras'], rel=1e-3)
    assert record['flops_per_second'][row] == pytest.approx(
        rate[row] * record['train_flops_per_example'], rel=1e-3)
    # The table's line of the row: examples/s and the two ratios as printed.
    line = next(l for l in out.splitlines() if l.startswith(row) and 'timed rounds' not in l)
    fields = re.findall(r'[\d.]+', line[len(row):])
    assert float(fields[1]) == pytest.approx(rate[row], rel=1e-3, abs=0.1)
    assert float(fields[2]) == pytest.approx(rate[row] / rate['vanilla TFF'], abs=0.01)
    assert float(fields[3]) == pytest.approx(rate[row] / rate['centralised Keras'], abs=0.001)
  assert record['ratio_vs_vanilla_tff']['vanilla TFF'] == 1.0
  assert record['ratio_vs_centralized']['centralised Keras'] == 1.0


def test_missing_workload_is_refused():
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'benchmarks', 'workloads.py')],
      capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert result.returncode != 0
  assert '--workload is required' in result.stderr
