"""`tff-lab-compare`: several runs side by side, from the shell.

    tff-lab-compare runs/a runs/b --output=comparison.png

prints a table of each run's final metrics and the config keys whose values differ, and writes
one PNG overlaying the runs' learning curves (`tff_lab.metrics.compare`; default
`comparison.png`). A directory without metrics.csv or config.json gets one line naming it on
stderr and exit code 2.
"""

import sys

from absl import app
from absl import flags

from tff_lab.metrics import compare

_OUTPUT = flags.DEFINE_string('output', 'comparison.png', 'Where to write the curves PNG.')


def _run(argv) -> None:
  try:
    comparison = compare.compare_runs(argv[1:])
  except compare.RunDirectoryError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  print(compare.format_table(comparison.table))
  print()
  print(compare.format_differences(comparison.config_differences))
  print(f'written: {comparison.plot(_OUTPUT.value)}')


def main(argv=None) -> None:
  """Console script `tff-lab-compare`; `argv` defaults to `sys.argv`."""
  app.run(_run, argv=argv)


if __name__ == '__main__':
  main()
