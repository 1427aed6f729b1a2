"""`tff-lab-tune`: a hyperparameter search over tff-lab-run experiments, on Optuna.

    tff-lab-tune --config=experiments/configs/tune_fedadam_digits.py --n_trials=20 \\
        --sampler=tpe --pruner=median --n_jobs=2

The study file (`--config`) names the base settings, the search space, the metric and its
direction (tff_lab/tuning/study.py says how); `--config.<field>=value` overrides one of its
fields. Each trial is an ordinary tff-lab-run experiment under `<study_dir>/trials/`. Re-running
the same command resumes the study (`--n_trials` is its total). The outputs are written to the
study directory: best_config.py (a tff-lab-run config file), trials.csv, history.png and
importances.png.

Exit codes: 0 done; 2 bad input (one line, before any trial starts, except a metric that the
runs do not write, found after the first trial's first chunk); 130 interrupted.
"""

import os
import sys

from absl import flags
from absl import logging
from ml_collections import config_flags

from tff_lab.tuning import study as study_lib


def define_flags(argv=None) -> flags.FlagValues:
  """tff-lab-tune's own flags, apart from absl's global FlagValues: those hold tff-lab-run's
  flags, which build each trial's experiment (and `--seed` there is the experiment's seed)."""
  TUNE_FLAGS = flags.FlagValues()  # pylint: disable=invalid-name
  config_flags.DEFINE_config_file(
      'config', None, 'The study file: an ml_collections config file with base_file, base, space, '
      'metric, direction (tff_lab/tuning/study.py; e.g. '
      'experiments/configs/tune_fedadam_digits.py).', flag_values=TUNE_FLAGS,
      sys_argv=argv)  # where it finds the --config.<field> overrides
  define = lambda kind, *args: kind(*args, flag_values=TUNE_FLAGS)
  define(flags.DEFINE_string, 'base_file', None, 'A tff-lab-run config file replacing the study '
         'file\'s base_file (its base settings still apply over it).')
  define(flags.DEFINE_string, 'study_dir', None, 'The study\'s directory (trials, database, '
         'outputs); default runs/<study file name>, with _<arg> for `--config=file.py:arg`.')
  define(flags.DEFINE_string, 'study_name', None, 'The study\'s name in the storage; default the '
         'study directory\'s name.')
  define(flags.DEFINE_string, 'storage', None, 'An SQLAlchemy URL for the study database; '
         'default sqlite:///<study_dir>/study.db.')
  define(flags.DEFINE_integer, 'n_trials', 20, 'The study\'s total number of trials (a re-run '
         'runs only the missing ones).')
  define(flags.DEFINE_integer, 'n_jobs', 1, 'Trials run at once (each in its own tff-lab-run '
         'process when > 1).')
  define(flags.DEFINE_string, 'sampler', 'tpe', f'One of {", ".join(study_lib.SAMPLERS)}.')
  define(flags.DEFINE_integer, 'seed', 0, 'The sampler\'s seed (each trial\'s experiment seed is '
         'the base\'s `seed` setting).')
  define(flags.DEFINE_integer, 'n_startup_trials', 5, 'Random trials before TPE models the '
         'results; trials the median pruner lets finish before it prunes.')
  define(flags.DEFINE_string, 'pruner', 'none', f'One of {", ".join(study_lib.PRUNERS)}: prunes '
         'on the metric of each metrics.csv row.')
  define(flags.DEFINE_integer, 'report_every', 0, 'With a pruner: rounds between reports (each '
         'resumes the trial from its checkpoint); 0: a quarter of the rounds.')
  return TUNE_FLAGS


_FLAG_NAMES = ('config', 'base_file', 'study_dir', 'study_name', 'storage', 'n_trials', 'n_jobs',
               'sampler', 'seed', 'n_startup_trials', 'pruner', 'report_every')


def help_text(program: str = 'tff-lab-tune') -> str:
  """`--help`: the usage, then each flag."""
  TUNE_FLAGS = define_flags()  # pylint: disable=invalid-name
  lines = [f'usage: {os.path.basename(program)} --config=<study file> [--flag=value ...]', '',
           __doc__.split('\n\n', 1)[1].strip(), '', 'flags:']
  for name in _FLAG_NAMES:
    flag = TUNE_FLAGS[name]
    default = '' if flag.default is None else f' (default: {flag.default!r})'
    lines.append(f'  --{flag.name}: {flag.help}{default}')
  return '\n'.join(lines)


def _parse(TUNE_FLAGS, argv) -> None:  # pylint: disable=invalid-name
  try:
    rest = TUNE_FLAGS(argv)
  except AttributeError as e:  # ml_collections: --config.<key> the file does not have
    raise study_lib.TuneError(f'the study file has no field {str(e).strip(chr(34))}') from None
  except flags.Error as e:
    raise study_lib.TuneError(' '.join(str(e).split())) from None
  if len(rest) > 1:
    raise study_lib.TuneError(f'unexpected arguments {rest[1:]}')
  if TUNE_FLAGS.config is None:
    raise study_lib.TuneError('--config=<study file> is required (e.g. '
                              'experiments/configs/tune_fedadam_digits.py)')


def main(argv=None) -> int:
  """Console script `tff-lab-tune`; returns the exit code."""
  argv = list(sys.argv if argv is None else argv)
  if any(arg in ('--help', '-help', '-h', '--helpfull') for arg in argv[1:]):
    print(help_text(argv[0]))
    return 0
  logging.set_verbosity(logging.WARNING)
  f = define_flags(argv)
  try:
    _parse(f, argv)
    config_path = config_flags.get_config_filename(f['config'])
    path, _, arg = config_path.partition(':')  # `file.py:arg`: runs/<file>_<arg>
    stem = os.path.splitext(os.path.basename(path))[0] + (f'_{arg}'.replace('/', '_') if arg
                                                          else '')
    result = study_lib.run_study(
        f.config, f.study_dir or os.path.join('runs', stem), n_trials=f.n_trials,
        sampler=f.sampler, seed=f.seed, pruner=f.pruner, n_startup_trials=f.n_startup_trials,
        report_every=f.report_every, storage=f.storage, study_name=f.study_name,
        n_jobs=f.n_jobs, base_file=f.base_file)
  except study_lib.TuneError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print('interrupted; re-run the same command to resume the study (the interrupted trial '
          'resumes from its checkpoint)', file=sys.stderr)
    return 130
  if result.best_trial is None:
    print(f'no trial completed; trials: {result.files["trials"]}')
  else:
    params = ', '.join(f'{k}={v!r}' for k, v in result.best_params.items())
    print(f'best: trial {result.best_trial}, value {result.best_value:.6g} ({params})')
    print(f'best config: {result.files["best_config"]}  '
          f'(tff-lab-run --config={result.files["best_config"]})')
  print(f'trials: {result.files["trials"]}; plots: {result.files["history"]}, '
        f'{result.files["importances"]}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
