r"""Where a run's start-up goes: `tff-lab-run` with each stage of the training loop timed.

Runs `tff_lab.cli.run_experiment_app` in this process on the given flags (by default the main
job cut to one round without evaluation), with the loop's stages (`tff_lab.training.loop`:
task, learning process, runner, evaluation, report, restore, round, final outputs) wrapped by a
wall-clock timer, and prints the imports' and each stage's seconds, then one JSON line. The
time before round 1 is the imports plus every stage before `_train_round`.

Run (from the repository root; to compare two trees, run each with `PYTHONPATH=<tree>`):

  .venv/bin/python benchmarks/startup.py
  .venv/bin/python benchmarks/startup.py -- --task=synthetic --rounds=1
"""

import json
import sys
import tempfile
import time

_START = time.time()
import tensorflow  # pylint: disable=g-import-not-at-top,unused-import
import tensorflow_federated  # pylint: disable=g-import-not-at-top,unused-import
_FRAMEWORKS = time.time()
from tff_lab import cli  # pylint: disable=g-import-not-at-top
from tff_lab.training import loop  # pylint: disable=g-import-not-at-top
_TFF_LAB = time.time()

# The loop's stages, in the order a run reaches them.
STAGES = ('build_task', 'build_process', '_build_runner', 'create_evaluation', '_build_report',
          '_restore_or_init', '_train_round', '_write_final_outputs')
BEFORE_ROUND_1 = STAGES[:STAGES.index('_train_round')]


def _timed(timings: dict, name: str):
  function = getattr(loop, name)

  def wrapper(*args, **kwargs):
    start = time.time()
    try:
      return function(*args, **kwargs)
    finally:
      timings[name] = timings.get(name, 0.0) + time.time() - start

  return wrapper


def main(argv: list[str]) -> dict:
  """Runs `tff-lab-run` on `argv` with the stages timed; returns and prints the timings."""
  timings = {}
  for name in STAGES:
    setattr(loop, name, _timed(timings, name))
  with tempfile.TemporaryDirectory() as root:
    sys.argv = ['tff-lab-run', '--rounds=1', '--eval_every=0', '--noprogress',
                f'--root_output_dir={root}'] + argv
    try:
      cli.run_experiment_app()
    except SystemExit as e:
      if e.code:
        raise
  result = {'imports_tensorflow_tff': _FRAMEWORKS - _START,
            'imports_tff_lab': _TFF_LAB - _FRAMEWORKS,
            **{name: timings.get(name, 0.0) for name in STAGES}}
  result['before_round_1'] = (result['imports_tensorflow_tff'] + result['imports_tff_lab'] +
                              sum(result[name] for name in BEFORE_ROUND_1))
  for name, seconds in result.items():
    print(f'{name:24s} {seconds:7.2f} s')
  print(json.dumps({k: round(v, 3) for k, v in result.items()}))
  return result


if __name__ == '__main__':
  main(sys.argv[1:] if sys.argv[1:2] != ['--'] else sys.argv[2:])
