"""benchmarks/startup.py times every stage of a real run and adds up the time before round 1."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_every_stage_is_timed_and_before_round_1_adds_up():
  out = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'benchmarks', 'startup.py'), '--', '--task=seed_linear',
       '--clients_per_round=4'],
      capture_output=True, text=True, timeout=600, check=True, cwd=ROOT).stdout
  record = json.loads(out.strip().splitlines()[-1])
  sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))
  import startup  # pylint: disable=g-import-not-at-top
  # Every stage a run reaches ran (a stage left unwrapped would read 0).
  for name in ('build_task', 'build_process', '_build_runner', '_restore_or_init',
               '_train_round', '_write_final_outputs'):
    assert record[name] > 0, name
  before = (record['imports_tensorflow_tff'] + record['imports_tff_lab'] +
            sum(record[name] for name in startup.BEFORE_ROUND_1))
  assert record['before_round_1'] == pytest.approx(before, abs=0.01)
  assert '_train_round' not in startup.BEFORE_ROUND_1
