r"""Runs a grid of experiments and prints one table. A thin binary over `tff_lab.training.grid`.

Takes every flag of run_experiment.py as the shared settings (`--plugin` included), plus:

  --grid     settings and values, e.g. 'aggregator=mean,median;byzantine_fraction=0,0.1,0.2'
  --report   final metrics to tabulate (default: central_eval_accuracy)
  --seeds    runs of each cell (seeds --seed, --seed+1, ...); the table shows mean ± std

Keys are any setting: ExperimentConfig's, aggregation, algorithm hyperparameters (mu), task
options and optimiser hyperparameters by their flag names (digits_model, client_sgdm_momentum).

Example:

  python experiments/run_grid.py --task=digits --rounds=30 --experiment_name=robust \
      --grid='byzantine_fraction=0,0.1,0.2' --report=central_eval_accuracy,fed_eval_accuracy

The table is printed and written to <root_output_dir>/<experiment_name>.md (and .json).
"""

import sys

from absl import app
from absl import flags
from absl import logging

from tff_lab import cli
from tff_lab.training import config as config_lib
from tff_lab.training import grid

_GRID = flags.DEFINE_string('grid', None, 'Settings and values: key=v1,v2;key2=w1,w2.')
_REPORT = flags.DEFINE_list('report', ['central_eval_accuracy'], 'Final metrics to tabulate.')
_SEEDS = flags.DEFINE_integer('seeds', 1, 'Runs of each cell, seeds --seed, --seed+1, ...; the '
                              'table reports mean ± std over them.')


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  try:
    base = cli.config_from_flags()
    rows = grid.run_grid(base, _GRID.value or '', _REPORT.value, seeds=_SEEDS.value)
  except config_lib.ConfigError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  path = grid.write_table(rows, base.root_output_dir, base.experiment_name)
  print(grid.format_table(rows))
  print(f'written: {path}')


if __name__ == '__main__':
  cli.load_plugins()  # before the flags are parsed, so their registrations have flags
  app.run(main)
