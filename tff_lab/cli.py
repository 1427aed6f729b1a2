"""Command-line entry points (console scripts) over the library.

`tff-lab-run` (also `python experiments/run_experiment.py`) runs one federated training
experiment from absl flags. Flags map one-to-one onto `tff_lab.training.ExperimentConfig` and are
generated from its typed sections (`tff_lab.training.sections`: default, help and choices), one
`--help` group per section; task options come from `--<task>_<option>` flags and optimiser
settings from `--client_*`/`--server_*` flags, both generated from builder signatures, and
algorithm hyperparameters from `--<name>` flags generated from the algorithm specs
(`tff_lab.flags`).

`--plugin=my_package.my_module` (repeatable) imports a module of yours before the flags are
parsed (`tff_lab.plugins`): the tasks, algorithms and aggregators it registers get their flags
(`--<task>_<option>`, `--<aggregator>_<option>`) and can be selected. `run_experiment_app` scans
`sys.argv` for it first; `load_plugins()` does the same for the other binaries built on these
flags (experiments/run_grid.py).

Exit codes: 0 success, 2 invalid input (one line on stderr, before any TFF tracing), 3 training
diverged (non-finite loss; the last good checkpoint is kept), 4 a remote worker failed (named;
checkpoints are kept, re-running resumes), 5 a secure-aggregation round failed, 130 interrupted
(Ctrl-C: one line naming the round reached; re-running resumes).
"""

import dataclasses
import os
import sys

from absl import app
from absl import flags
from absl import logging

from tff_lab import plugins
from tff_lab import runtime
from tff_lab.flags import aggregation_flags
from tff_lab.flags import async_flags
from tff_lab.flags import algorithm_flags
from tff_lab.flags import common_flags
from tff_lab.flags import config_file
from tff_lab.flags import section_flags
from tff_lab.privacy import secagg
from tff_lab.flags import optimizer_flags
from tff_lab.flags import task_flags
from tff_lab.algorithms import schedules
from tff_lab.training import config as config_lib
from tff_lab.training import experiment_dir
from tff_lab.training import sections


def _define_algorithm_flags() -> None:
  """The flags generated for the algorithm section: each optimiser's hyperparameters, the
  learning-rate schedules' settings and every registered algorithm's hyperparameters."""
  for role in ('client', 'server'):
    optimizer_flags.define_optimizer_flags(role)
  for role in schedules.ROLES:  # --client_lr_schedule, --server_lr_decay_rate, ...
    section_flags.define_section_flags(schedules.LearningRateSchedule, f'{role}_lr_')
  algorithm_flags.define_algorithm_flags()


# What each section's dict settings are generated from (builder signatures, specs, settings
# classes), defined after the section's own flags and shown with them in --help.
_GENERATED_FLAGS = {
    'task': task_flags.define_task_flags,
    'algorithm': _define_algorithm_flags,
    'aggregation': aggregation_flags.define_aggregation_flags,
    'simulation': async_flags.define_async_flags,
    'output': lambda: (common_flags.define_progress_flag(), plugins.define_plugin_flag()),
}


def _define_flags() -> None:
  """Every tff-lab-run flag, generated from the config's sections, grouped by section; and
  `--config`, a config file of them."""
  with section_flags.flag_group('config file'):
    config_file.define_config_flag()
  for title, section in sections.SECTIONS:
    with section_flags.flag_group(title):
      section_flags.define_section_flags(section)
      _GENERATED_FLAGS.get(title, lambda: None)()
    # Flags another binary's module may have defined first still belong to the section.
    section_flags.add_to_group(title, [section_flags.flag_name(f) for f in
                                       section_flags.section_fields(section)]
                               + (['plugin'] if title == 'output' else []))


_define_flags()
_FLAGS = flags.FLAGS


def config_from_flags() -> config_lib.ExperimentConfig:
  """Builds the config from parsed flags (and the `--config` file's, where the command line does
  not give them). Raises ConfigError on inconsistent flags or a bad config file."""
  try:
    config_file.apply_config_file(n for title, names in section_flags.GROUPS.items()
                                  if title != 'config file' for n in names)
  except ValueError as e:
    raise config_lib.ConfigError(str(e)) from None
  settings = {}
  for _, section in sections.SECTIONS:
    settings.update(section_flags.section_values_from_flags(section))
  try:
    settings.update(
        task_options=task_flags.task_options_from_flags(_FLAGS.task),
        algorithm_hparams=algorithm_flags.algorithm_hparams_from_flags(),
        aggregation=aggregation_flags.aggregation_from_flags(),
        asynchrony=async_flags.asynchrony_from_flags(),
        **optimizer_flags.optimizer_settings_from_flags('client'),
        **optimizer_flags.optimizer_settings_from_flags('server'),
        **{f'{role}_lr_schedule': section_flags.section_from_flags(
            schedules.LearningRateSchedule, f'{role}_lr_') for role in schedules.ROLES})
  except ValueError as e:
    raise config_lib.ConfigError(str(e)) from None
  settings['plugins'] = tuple(dict.fromkeys(_FLAGS.plugin))
  settings['experiment_name'] = _FLAGS.experiment_name or 'experiment'  # None: derived below
  config = config_lib.ExperimentConfig(**settings)
  if _FLAGS.experiment_name:
    return config
  return dataclasses.replace(config, experiment_name=experiment_dir.default_experiment_name(config))


def _check_saved_plugins() -> None:
  """Refuses a run directory made with other plugins before the task or aggregator is looked up
  (they may be the missing plugin's).

  Without --experiment_name, the directory is named after the settings; where they cannot be
  read (a missing plugin's task or aggregator), every `<task>_<algorithm>_<server optimizer>_*`
  run of the root is checked.
  """
  if _FLAGS.experiment_name:
    names = [_FLAGS.experiment_name]
  else:
    try:
      names = [config_from_flags().experiment_name]
    except (config_lib.ConfigError, ValueError):
      prefix = f'{_FLAGS.task}_{_FLAGS.algorithm}_{_FLAGS.server_optimizer}_'
      root = _FLAGS.root_output_dir
      names = sorted(n for n in (os.listdir(root) if os.path.isdir(root) else [])
                     if n.startswith(prefix))
  for name in names:
    config_lib.check_saved_plugins(config_lib.ExperimentConfig(
        root_output_dir=_FLAGS.root_output_dir, experiment_name=name, overwrite=_FLAGS.overwrite,
        plugins=tuple(dict.fromkeys(_FLAGS.plugin))))


def load_plugins(argv=None) -> tuple[str, ...]:
  """Imports the `--plugin` modules of `argv` (default `sys.argv`) and defines the flags of what
  they registered; call it before `app.run`. One line on stderr and exit code 2 for a plugin
  that does not import or a flag it would define twice."""
  names = plugins.load_from_argv(argv)
  try:
    for title, define in (('task', task_flags.define_task_flags),
                          ('aggregation', aggregation_flags.define_aggregation_flags),
                          ('algorithm', algorithm_flags.define_algorithm_flags)):
      with section_flags.flag_group(title):
        define()
  except flags.Error as e:  # e.g. DuplicateFlagError: a registered option's flag exists
    print(f'error: --plugin: {" ".join(str(e).split())}', file=sys.stderr)
    sys.exit(2)
  return names


def _main(argv):
  logging.set_verbosity(logging.WARNING)
  if len(argv) > 1:
    sys.exit(f'error: unexpected arguments {argv[1:]}')
  from tff_lab.training import loop  # pylint: disable=g-import-not-at-top
  config = None
  try:
    _check_saved_plugins()
    config = config_from_flags()
    summary = loop.run_experiment(config, argv=sys.argv)
  except KeyboardInterrupt:  # Ctrl-C: one line, not a traceback (history.jsonl records it)
    where = ''
    if config is not None and os.path.isdir(config.experiment_dir):
      where = f' at round {experiment_dir.completed_rounds(config.experiment_dir)}'
    print(f'interrupted{where}; re-run the same command to resume from its last checkpoint',
          file=sys.stderr)
    sys.exit(130)
  except config_lib.ConfigError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  except loop.NonFiniteLossError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(3)
  except runtime.WorkerError as e:
    print(f'error: {e}; checkpoints are kept: re-run the same command to resume', file=sys.stderr)
    sys.exit(4)
  except secagg.SecAggError as e:  # a secure-aggregation round failed: no sum was computed
    print(f'error: {e}; checkpoints are kept', file=sys.stderr)
    sys.exit(5)
  final = summary['final_metrics']
  shown = ', '.join(f'{k}={final[k]:.4f}' for k in
                    ('train_loss', 'fed_eval_accuracy', 'central_eval_accuracy') if k in final)
  print(f'done: {config.experiment_dir} ({shown})')


def help_text(program: str = 'tff-lab-run') -> str:
  """`--help`: the usage line, then every tff_lab flag under its section."""
  usage = (f'usage: {os.path.basename(program)} [--flag=value ...]\n\nRuns one federated '
           'training experiment (tff_lab.training.run_experiment); re-running the same command '
           'resumes it. Flags by section (tff_lab/training/sections.py); --helpfull also lists '
           'absl\'s and TensorFlow\'s.\n')
  return usage + '\n' + section_flags.grouped_help()


def run_experiment_app() -> None:
  """Console script `tff-lab-run`."""
  load_plugins()
  app.run(_main, flags_parser=parse_flags)


def parse_flags(argv):
  """absl's parser, with a bad flag as one line and exit code 2 (as all bad input), and
  `--help` as tff_lab's own flags grouped by section (`--helpfull`: absl's, all of them)."""
  if any(arg in ('--help', '-help', '-h', '-?', '--h') for arg in argv[1:]):
    print(help_text(argv[0]))
    sys.exit(0)
  try:
    return flags.FLAGS(argv)
  except AttributeError as e:  # ml_collections: --config.<key> the file does not have
    key = next((a.split('=')[0] for a in argv if a.startswith(f'--{config_file.CONFIG_FLAG}.')
                and str(e).strip('"\'') in a), '--config.<key>')
    print(f'error: {key}: the config file has no setting {str(e).strip(chr(34))}; override only '
          'its own keys, or set the flag itself (--<setting>=value)', file=sys.stderr)
    sys.exit(2)
  except flags.Error as e:
    lines = [line for line in str(e).splitlines() if line.strip()]
    if lines and lines[0].startswith(f'flag --{config_file.CONFIG_FLAG}='):  # not its traceback
      lines = [lines[0], lines[-1]] if len(lines) > 1 else lines
    message = ' '.join(' '.join(lines).split())
    if 'Unknown command line flag' in message:
      message += ' (the flags of a plugin\'s task or aggregator need its --plugin)'
    print(f'error: {message}', file=sys.stderr)
    sys.exit(2)
