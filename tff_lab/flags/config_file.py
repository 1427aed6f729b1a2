"""Config files: `ml_collections` config files through absl's `config_flags` (`--config`).

A config file is a Python file whose `get_config()` returns an `ml_collections.ConfigDict` of
tff-lab-run settings, each named as its flag: flags and config fields are one namespace, the one
generated from the config's typed sections (`tff_lab.training.sections`) and the builders'
signatures, so no setting is listed twice:

    import ml_collections

    def get_config():
      config = ml_collections.ConfigDict()
      config.task = 'synthetic'
      config.synthetic_alpha = 1.0   # a task option: --synthetic_alpha
      config.algorithm = 'fedprox'
      config.mu = 1.0                # an algorithm hyperparameter: --mu
      config.rounds = 200
      return config

`tff-lab-run --config=experiments/configs/fedprox_synthetic.py --config.rounds=10` runs it with
one setting overridden; a flag given on the command line also overrides the file
(`--rounds=10`). Every experiment directory holds its settings as such a file, `config.py`, so
`tff-lab-run --config=runs/<name>/config.py` repeats a run (add `--experiment_name=...` or
`--seed=...` for a new one). `get_config(arg)` receives what follows a colon
(`--config=experiments/configs/reproductions.py:fedprox/<run>`).

A key that names no flag, and a value of the wrong type, get one line each (ValueError), before
anything is built.
"""

import collections
import difflib
import pprint
from typing import Any, Iterable, Mapping

from absl import flags
from ml_collections import config_flags

CONFIG_FLAG = 'config'
# Settings a saved run's config.py leaves out: how it was invoked, not what it is.
_NOT_REPEATED = ('overwrite', 'progress', 'model_aggregator')


def define_config_flag(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines `--config` (once per process)."""
  if CONFIG_FLAG in flag_values:
    return
  config_flags.DEFINE_config_file(
      CONFIG_FLAG, None, 'An ml_collections config file of settings named as these flags '
      '(tff_lab/flags/config_file.py; e.g. experiments/configs/fedprox_synthetic.py, or a run\'s '
      'own runs/<name>/config.py to repeat it); --config.<setting>=value or --<setting>=value '
      'overrides one.', flag_values=flag_values)


def apply_config_file(names: Iterable[str],
                      flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Sets the flags that the `--config` file names, unless given on the command line.

  Args:
    names: The flags a config file may set (the binary's own).
    flag_values: The parsed flags.

  Raises:
    ValueError: One line, for a key that names no flag in `names` or a value its flag refuses.
  """
  if CONFIG_FLAG not in flag_values or flag_values[CONFIG_FLAG].value is None:
    return
  path = config_flags.get_config_filename(flag_values[CONFIG_FLAG])
  settings = flag_values[CONFIG_FLAG].value.to_dict()
  names = list(names)
  unknown = [k for k in settings if k not in names]
  if unknown:
    close = {k: difflib.get_close_matches(k, names, n=1) for k in unknown}
    hints = '; '.join(f'{k}: did you mean {c[0]}?' for k, c in close.items() if c)
    raise ValueError(f'config file {path}: unknown setting(s) {unknown}'
                     f'{" (" + hints + ")" if hints else ""}; its keys are tff-lab-run flags '
                     '(tff-lab-run --help lists them)')
  for name, value in settings.items():
    flag = flag_values[name]
    if flag.present:  # the command line wins
      continue
    if value is None:
      if flag.default is None:
        continue
      raise ValueError(f'config file {path}: {name}=None; --{name} needs a value')
    if isinstance(value, tuple):
      value = list(value)
    try:
      flag.parse(value)
    except (flags.Error, TypeError, ValueError) as e:
      reason = ' '.join(str(e).split())
      raise ValueError(f'config file {path}: {name}={value!r} is not a valid --{name} '
                       f'({reason})') from None


def flag_settings(config: Mapping[str, Any]) -> 'collections.OrderedDict[str, Any]':
  """An experiment's settings (`ExperimentConfig.to_dict()` or a saved config.json), named as
  tff-lab-run's flags: the inverse of how the flags build the config."""
  out = collections.OrderedDict()
  for key, value in config.items():
    if key in _NOT_REPEATED:
      continue
    if key == 'task_options':
      out.update((f'{config["task"]}_{k}', v) for k, v in value.items())
    elif key in ('client_optimizer_hparams', 'server_optimizer_hparams'):
      role = key.split('_')[0]
      out.update((f'{role}_{config[f"{role}_optimizer"]}_{k}', v) for k, v in value.items())
    elif key in ('client_lr_schedule', 'server_lr_schedule'):
      out.update((f'{key.split("_")[0]}_lr_{k}', v) for k, v in value.items())
    elif key == 'aggregation':
      for name, setting in value.items():
        if name == 'aggregator_options':
          out.update((f'{value["aggregator"]}_{k}', v) for k, v in setting.items())
        else:
          out[name] = setting
    elif key in ('algorithm_hparams', 'asynchrony'):
      out.update(value)
    elif key == 'plugins':
      out['plugin'] = list(value)
    else:
      out[key] = list(value) if isinstance(value, tuple) else value
  return out


def config_file_text(settings: Mapping[str, Any], docstring: str) -> str:
  """The text of a config file whose `get_config()` returns `settings` (flag names -> values)."""
  body = pprint.pformat(dict(settings), indent=4, width=96, sort_dicts=False)
  body = body.replace('\n', '\n    ')
  return (f'"""{docstring}"""\n\nimport ml_collections\n\n\ndef get_config():\n'
          f'  return ml_collections.ConfigDict(\n    {body})\n')


def config_dict(config) -> Any:
  """An `ExperimentConfig` as the `ConfigDict` a config file's `get_config()` returns."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  return ml_collections.ConfigDict(dict(flag_settings(config.to_dict())))
