"""benchmarks/scaling_memory.py prints a row per size and the memory growth of a real run."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_it_times_each_size_and_measures_memory_at_both_marks():
  out = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'benchmarks', 'scaling_memory.py'), '--paths=fused',
       '--sizes=2,4', '--rounds=1', '--examples_per_client=10', '--first_mark=2',
       '--long_rounds=4', '--memory_simulations=fused'],
      capture_output=True, text=True, timeout=600, check=True, cwd=ROOT).stdout
  rows = re.findall(r'^\s+(\d+)\s+fused\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$', out, re.M)
  assert [int(r[0]) for r in rows] == [2, 4]
  assert float(rows[0][3]) == 1.0  # the smallest size is the reference
  for size, median, per_client, _ in rows:
    assert float(per_client) * int(size) == pytest.approx(float(median), abs=0.01)
  memory = re.search(r'--simulation=fused: .* round 2 (\d+) MB, round 4 (\d+) MB, growth '
                     r'([-+][\d.]+)%', out)
  assert memory, out
  assert int(memory.group(1)) > 100 and int(memory.group(2)) > 100  # TF alone is more


def test_marks_out_of_order_are_refused():
  run = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'benchmarks', 'scaling_memory.py'), '--sizes=',
       '--first_mark=5', '--long_rounds=5'], capture_output=True, text=True, timeout=600,
      cwd=ROOT)
  assert run.returncode != 0
  assert 'need 0 < --first_mark < --long_rounds, got 5 and 5' in run.stderr + run.stdout
