r"""W1 before and after a change, in one run: `round_throughput.py` of two source trees, alternated.

Each invocation of `benchmarks/round_throughput.py` measures its rows (fused, vectorized, the TFF
path, vanilla TFF, centralised Keras) interleaved round by round. This script runs it from a
baseline tree (for instance `git worktree add ../baseline <commit>`) and from this tree in turn,
`--repeats` times each (baseline, current, baseline, current, ...), so drift in the machine's load
hits both trees alike, and prints each tree's median ratios and the current/baseline quotient.

Run from the repository root, on an otherwise idle machine:

  git worktree add /tmp/baseline <commit-before-the-change>
  .venv/bin/python benchmarks/compare_revisions.py --baseline=/tmp/baseline

The trees are selected with PYTHONPATH (which precedes the editable install); both run in this
venv. Extra flags after `--` go to round_throughput.py (e.g. `-- --rounds=3`).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
_CURRENT = os.path.dirname(_HERE)
_KEYS = (('ratio_vs_vanilla_tff', 'fused vs vanilla TFF'),
         ('ratio_vs_centralized', 'fused vs centralised'),
         ('ratio_vs_vanilla_tff_tff_path', 'TFF path vs vanilla TFF'))


def run_tree(tree: str, extra: list[str]) -> dict:
  """One run of `tree`'s round_throughput.py; its JSON line."""
  env = dict(os.environ, PYTHONPATH=tree)
  out = subprocess.run([sys.executable, os.path.join(tree, 'benchmarks', 'round_throughput.py'),
                        *extra], env=env, cwd=tree, capture_output=True, text=True, check=True)
  line = [l for l in out.stdout.splitlines() if l.startswith('{"workload"')][-1]
  return json.loads(line)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--baseline', required=True, help='Source tree of the "before" revision.')
  parser.add_argument('--repeats', type=int, default=2, help='Runs of each tree.')
  args, extra = parser.parse_known_args()
  extra = [a for a in extra if a != '--']
  if not os.path.isfile(os.path.join(args.baseline, 'benchmarks', 'round_throughput.py')):
    parser.error(f'--baseline={args.baseline} has no benchmarks/round_throughput.py')
  results = {'baseline': [], 'current': []}
  for i in range(args.repeats):
    for name, tree in (('baseline', args.baseline), ('current', _CURRENT)):
      results[name].append(run_tree(tree, extra))
      fused = results[name][-1]['examples_per_second']['tff_lab_fused']
      print(f'run {i + 1} {name:<8s} fused {fused:.0f} examples/s', flush=True)
  print()
  print(f'{"W1 ratio (median of runs)":<28s} {"baseline":>9s} {"current":>9s} {"current/base":>13s}')
  for key, label in _KEYS:
    base = statistics.median(r[key] for r in results['baseline'])
    cur = statistics.median(r[key] for r in results['current'])
    print(f'{label:<28s} {base:>8.2f}x {cur:>8.2f}x {cur / base:>12.3f}')
  for row in ('tff_lab_fused', 'tff_lab_fedavg', 'vanilla_tff', 'centralized_keras'):
    base = statistics.median(r['examples_per_second'][row] for r in results['baseline'])
    cur = statistics.median(r['examples_per_second'][row] for r in results['current'])
    print(f'{row + " examples/s":<28s} {base:>9.0f} {cur:>9.0f} {cur / base:>12.3f}')


if __name__ == '__main__':
  main()
