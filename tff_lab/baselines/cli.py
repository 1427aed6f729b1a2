"""`tff-lab-reproduce <paper>`: runs a paper's grid and writes its report (issue #12).

  tff-lab-reproduce seed_article --output_dir=reproductions/seed_article
  tff-lab-reproduce fedprox --quick --seeds=1

Writes `<output_dir>/report.md` (our table beside the paper's, each claim ✓/✗ with its tolerance)
and `<output_dir>/figures/*.png`; the runs live under `<output_dir>/runs/`, so re-running the same
command reuses finished runs and resumes unfinished ones (`tff_lab.baselines.reproduction`).

Exit codes: 0 done (whether or not every claim held), 2 invalid input (unknown paper or claim,
an output dir holding other settings; one line on stderr, before any TFF tracing), 3 a run
diverged.
"""

import sys

from absl import app
from absl import flags
from absl import logging

from tff_lab import baselines
from tff_lab import plugins
from tff_lab.flags import common_flags

_QUICK = flags.DEFINE_bool('quick', False, 'The shrunken grid (few rounds and seeds) used in CI.')
_SEEDS = flags.DEFINE_integer('seeds', None, 'Number of seeds (default: the paper\'s).')
_OUTPUT_DIR = flags.DEFINE_string('output_dir', None,
                                  'Holds runs/, figures/ and report.md (default: '
                                  'reproductions/<paper>[_quick]).')
_CLAIMS = flags.DEFINE_list('claims', [], 'Check only these claims (default: all).')
_PROGRESS = common_flags.define_progress_flag()
plugins.define_plugin_flag()  # modules imported first (registering tasks, algorithms, aggregators)


def _fail(message: str, code: int = 2) -> None:
  print(f'error: {message}', file=sys.stderr)
  sys.exit(code)


def main(argv) -> None:
  logging.set_verbosity(logging.WARNING)
  if len(argv) != 2:
    _fail(f'usage: tff-lab-reproduce <paper> [--quick] [--seeds=N] [--output_dir=DIR] '
          f'[--claims=a,b]; known papers: {", ".join(baselines.paper_names())}')
  name = argv[1]
  try:
    paper = baselines.get_paper(name)
  except ValueError as e:
    _fail(str(e))
  # pylint: disable=g-import-not-at-top
  from tff_lab import training
  from tff_lab.baselines import reproduction
  output_dir = _OUTPUT_DIR.value or f'reproductions/{name}{"_quick" if _QUICK.value else ""}'
  command = ' '.join(['tff-lab-reproduce', name] + [a for a in sys.argv[1:] if a.startswith('--')])
  try:
    report = reproduction.reproduce(paper, output_dir, quick=_QUICK.value, seeds=_SEEDS.value,
                                    claims=_CLAIMS.value, command=command,
                                    progress=_PROGRESS.value)
  except training.ConfigError as e:
    _fail(str(e))
  except training.NonFiniteLossError as e:
    _fail(str(e), 3)
  held = sum(1 for _, o in report.claims if o.held)
  print(f'report: {report.path} ({held}/{len(report.claims)} claims held; '
        f'{len(report.trained)} runs trained, {len(report.reused)} reused, '
        f'{report.wall_seconds:.0f} s)')
  for claim, outcome in report.claims:
    print(f'  {"✓" if outcome.held else "✗" if outcome.held is False else "–"} {claim.name}: '
          f'{outcome.ours}')


def run_app() -> None:
  """Console script `tff-lab-reproduce`."""
  plugins.load_from_argv()
  app.run(main)
