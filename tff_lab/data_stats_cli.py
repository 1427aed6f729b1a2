"""`tff-lab-data-stats`: the heterogeneity report of a task's training clients, from the shell.

    tff-lab-data-stats --task=digits --digits_partition=dirichlet --digits_alpha=0.1 \\
        --output_dir=runs/digits_stats

prints client count, client sizes and the label skew (`tff_lab.data.stats`), and writes
`stats.json`, `client_sizes.png` and `label_heatmap.png` to `--output_dir`. Task options are the
experiment binary's `--<task>_<option>` flags; `--plugin=my_package.my_module` imports a module
registering tasks of your own first (`tff_lab.plugins`). Bad input (unknown task, another task's
flag, a dataset missing from the cache, a plugin that does not import) gets one line on stderr
and exit code 2.

This module defines `--task` and the task flags, as `tff_lab.cli` does: a process must not import
both.
"""

import sys

from absl import app
from absl import flags
from absl import logging

from tff_lab import plugins
from tff_lab.data import stats as stats_lib
from tff_lab.flags import task_flags
from tff_lab.tasks import registry

_TASK = flags.DEFINE_string('task', 'digits', 'Task name, e.g. digits, emnist62, shakespeare.')
_OUTPUT_DIR = flags.DEFINE_string('output_dir', None,
                                  'Where to write the report (default: runs/<task>_data_stats).')
_MAX_CLIENTS = flags.DEFINE_integer('max_clients', 0,
                                    'Analyse a random sample of this many clients (0: all).')
_HEATMAP_CLIENTS = flags.DEFINE_integer('heatmap_clients', 30, 'Clients shown in the heatmap.')
_TOP_K_TOKENS = flags.DEFINE_integer('top_k_tokens', 50,
                                     'Token columns kept for next-token tasks.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the client samples.')
task_flags.define_task_flags()
plugins.define_plugin_flag()


def _run(argv) -> None:
  logging.set_verbosity(logging.WARNING)
  if len(argv) > 1:
    sys.exit(f'error: unexpected arguments {argv[1:]}')
  output_dir = _OUTPUT_DIR.value or f'runs/{_TASK.value}_data_stats'
  try:
    task = registry.create_task(_TASK.value, task_flags.task_options_from_flags(_TASK.value))
    stats = stats_lib.compute_stats(task, output_dir, max_clients=_MAX_CLIENTS.value,
                                    heatmap_clients=_HEATMAP_CLIENTS.value,
                                    top_k_tokens=_TOP_K_TOKENS.value, seed=_SEED.value)
  except ValueError as e:  # Includes tff_datasets.DatasetNotAvailableError.
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  print(stats_lib.format_summary(stats))


def main(argv=None) -> None:
  """Console script `tff-lab-data-stats`; `argv` defaults to `sys.argv`."""
  plugins.load_from_argv(argv)
  task_flags.define_task_flags()  # those of the tasks the plugins registered
  app.run(_run, argv=argv)


if __name__ == '__main__':
  main()
