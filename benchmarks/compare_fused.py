r"""The W1 fused row alone, before and after a change: two source trees, alternated in processes.

`compare_revisions.py` times all five W1 rows per run, which takes long and, on a loaded machine,
cannot tell a change from load. This script times only `--simulation=fused`'s runner on the W1
task (`round_throughput.py`'s data and plans), in one process per measurement, alternating the
trees (baseline, current, baseline, current, ...), and prints each tree's median seconds per
round and the current/baseline quotient.

  git worktree add /tmp/baseline <commit-before-the-change>
  .venv/bin/python benchmarks/compare_fused.py --baseline=/tmp/baseline --repeats=4
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

_CURRENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _child(tree: str, rounds: int) -> None:
  sys.path.insert(0, os.path.join(tree, 'benchmarks'))
  import round_throughput as rt  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  from tff_lab import algorithms, runtime  # pylint: disable=g-import-not-at-top
  from tff_lab.algorithms import vectorized  # pylint: disable=g-import-not-at-top
  from tff_lab.simulation import backends  # pylint: disable=g-import-not-at-top
  flags.FLAGS(['compare_fused'])
  task = rt.make_task(rt.make_client_arrays(100, 100, 0), 20, shuffle_buffer=100)
  runtime.set_local_context()
  process, _ = rt.bench_tff_lab(task, 0)
  runner = backends.InGraphRunner(vectorized.VectorizedRounds(
      task, rt.CLIENT_LR, algorithms.create_optimizer('sgd', rt.SERVER_LR),
      client_loop='sequential'))
  plans = rt.make_plans(task, 0)
  state, times = process.initialize(), []
  for r in range(1, rounds + 3):  # two warm-up rounds (the first traces)
    start = time.perf_counter()
    state = runner.next(state, plans(r)).state
    times.append(time.perf_counter() - start)
  runtime.stop_all_workers()
  print(json.dumps({'median_s': statistics.median(times[2:])}))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--baseline', required=True, help='the other source tree')
  parser.add_argument('--repeats', type=int, default=4)
  parser.add_argument('--rounds', type=int, default=8, help='timed rounds per process')
  parser.add_argument('--child', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    _child(args.child, args.rounds)
    return
  trees = {'baseline': os.path.abspath(args.baseline), 'current': _CURRENT}
  results = {name: [] for name in trees}
  for _ in range(args.repeats):
    for name, tree in trees.items():
      out = subprocess.run([sys.executable, os.path.abspath(__file__), '--baseline', tree,
                            '--child', tree, '--rounds', str(args.rounds)],
                           env=dict(os.environ, PYTHONPATH=tree), cwd=tree, capture_output=True,
                           text=True, check=True)
      line = [l for l in out.stdout.splitlines() if l.startswith('{')][-1]
      results[name].append(json.loads(line)['median_s'])
      print(f'{name:<8s} fused {results[name][-1]:.4f} s/round', flush=True)
  before, after = (statistics.median(results[n]) for n in trees)
  print(f'\nfused s/round (median)  baseline {before:.4f}  current {after:.4f}  '
        f'current/baseline {after / before:.3f}')


if __name__ == '__main__':
  main()
