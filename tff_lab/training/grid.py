"""Grids of experiments: every combination of a few settings, one table of final metrics.

A grid spec names settings of `ExperimentConfig` and their values, e.g.

    aggregator=mean,median,trimmed_mean;byzantine_fraction=0,0.1,0.2

Each combination runs as its own experiment (its own directory under `root_output_dir`, named
after the combination, so an interrupted grid resumes run by run), and the table reports the
chosen final metrics of each. Used for the robustness and compression evidence in BUILD.md.
"""

import collections
import dataclasses
import difflib
import itertools
import json
import os
from typing import Any, Callable, Optional

import numpy as np

from tff_lab.algorithms import optimizers as optimizers_lib
from tff_lab.algorithms import registry as algorithms_registry
from tff_lab.flags import aggregation_flags
from tff_lab.flags import section_flags
from tff_lab.tasks import registry as tasks_registry
from tff_lab.training import config as config_lib

Table = list['collections.OrderedDict[str, Any]']


def _task_option_keys() -> dict[str, tuple[str, str, Any, type]]:
  """`<task>_<option>` (the experiment binary's task flags) -> (task, option, default, type)."""
  keys = {}
  for task in tasks_registry.task_names():
    for option, spec in tasks_registry.task_option_specs(task).items():
      keys[f'{task}_{option}'] = (task, option, spec.default, spec.type or str)
  return keys


def _optimizer_hparam_keys() -> dict[str, tuple[str, str, str, Any]]:
  """`<role>_<optimizer>_<hparam>` (the optimiser flags) -> (role, optimizer, hparam, default)."""
  return {f'{role}_{name}_{hparam}': (role, name, hparam, default)
          for role in ('client', 'server') for name in optimizers_lib.optimizer_names()
          for hparam, default in optimizers_lib.optimizer_hparams(name).items()}


# Settings a grid does not sweep: where the runs go, and what run_experiment records itself.
_NOT_SWEPT = ('root_output_dir', 'experiment_name', 'model_aggregator', 'overwrite', 'plugins',
              'workers')


def _setting_types() -> dict[str, type]:
  """Grid-able settings and their types: ExperimentConfig's scalars, the aggregation flags, the
  algorithms' hyperparameters, the task options and the optimiser hyperparameters."""
  types = {f.name: aggregation_flags.setting_type(f) for f in aggregation_flags.setting_fields()}
  types.update({name: hparam.type
                for name, (hparam, _) in algorithms_registry.hparam_specs().items()})
  types.update({k: v[3] for k, v in _task_option_keys().items()})
  types.update({k: float for k in _optimizer_hparam_keys()})
  defaults = config_lib.ExperimentConfig()
  for f in dataclasses.fields(config_lib.ExperimentConfig):
    value = getattr(defaults, f.name)
    if f.name not in _NOT_SWEPT and not isinstance(value, (dict, list, tuple)):
      types[f.name] = section_flags.field_type(f) if value is None else type(value)
  return types


def _valid_keys_text(types: dict[str, type]) -> str:
  """The valid keys, grouped, for the one-line error."""
  tasks = _task_option_keys()
  hparams = _optimizer_hparam_keys()
  algorithm = set(algorithms_registry.hparam_specs())
  aggregation = {f.name for f in aggregation_flags.setting_fields()}
  settings = [k for k in types if k not in tasks and k not in hparams and k not in algorithm
              and k not in aggregation]
  optimizer = sorted({k.split('_', 1)[1] for k in hparams})
  return (f'settings: {", ".join(sorted(settings))}; aggregation: {", ".join(sorted(aggregation))}'
          f'; algorithm hyperparameters: {", ".join(sorted(algorithm))}; task options: '
          f'{", ".join(tasks)}; optimiser hyperparameters: '
          f'{", ".join("{client,server}_" + k for k in optimizer)}')


def parse_grid(spec: str) -> 'collections.OrderedDict[str, list[Any]]':
  """Parses `key=v1,v2;key2=w1,w2` into typed values.

  Keys are ExperimentConfig settings, aggregation settings (`aggregator`, `bits`, ...),
  algorithm hyperparameters (`mu`, ...), task options by their flag names (`digits_model`) or
  optimiser hyperparameters by their flag names (`client_sgdm_momentum`, `server_adam_beta_1`).

  Raises:
    ConfigError: For an unknown setting, a value of the wrong type, or an empty spec.
  """
  types = _setting_types()
  grid = collections.OrderedDict()
  for part in filter(None, (p.strip() for p in spec.split(';'))):
    key, sep, values = part.partition('=')
    key = key.strip()
    if not sep or not values.strip():
      raise config_lib.ConfigError(f'grid entry {part!r} must look like key=v1,v2')
    if key not in types:
      close = difflib.get_close_matches(key, list(types), n=1)
      hint = f' (did you mean {close[0]}?)' if close else ''
      raise config_lib.ConfigError(f'grid setting {key!r} is not an experiment setting{hint}; '
                                   f'valid keys are {_valid_keys_text(types)}')
    grid[key] = [_convert(key, v.strip(), types[key]) for v in values.split(',')]
  if not grid:
    raise config_lib.ConfigError('the grid spec is empty')
  return grid


def _convert(key: str, value: str, kind: type) -> Any:
  try:
    if kind is bool:
      if value.lower() not in ('true', 'false', '1', '0'):
        raise ValueError(value)
      return value.lower() in ('true', '1')
    return kind(value)
  except ValueError:
    raise config_lib.ConfigError(f'grid value {value!r} is not a valid {kind.__name__} for '
                                 f'{key}') from None


def expand(base: config_lib.ExperimentConfig, grid) -> list[config_lib.ExperimentConfig]:
  """One validated config per combination, each with its own experiment name."""
  configs = []
  for values in itertools.product(*grid.values()):
    combo = dict(zip(grid, values))
    name = '_'.join(f'{k}={v}' for k, v in combo.items())
    aggregation = dict(base.aggregation)
    defaults = {f.name: f.default for f in aggregation_flags.setting_fields()}
    for key in [k for k in combo if k in defaults]:
      value = combo.pop(key)
      if value == defaults[key]:
        aggregation.pop(key, None)
      else:
        aggregation[key] = value
    _apply_task_options(base, combo)
    _apply_optimizer_hparams(base, combo)
    algorithm = combo.get('algorithm', base.algorithm)
    hparams = dict(base.algorithm_hparams)
    for key in [k for k in combo if k in algorithms_registry.hparam_specs()]:
      value = combo.pop(key)
      takers = algorithms_registry.hparam_specs()[key][1]
      default = algorithms_registry.get(takers[0]).hparams[key].default
      if algorithm not in takers and value == default:
        continue  # e.g. mu=0 beside algorithm=fedavg in `algorithm=fedavg,fedprox; mu=0,1`
      hparams[key] = value
    config = dataclasses.replace(base, experiment_name=f'{base.experiment_name}__{name}',
                                 aggregation=aggregation, algorithm_hparams=hparams, **combo)
    config.validate()
    configs.append(config)
  return configs


def _apply_task_options(base, combo: dict) -> None:
  """Moves `<task>_<option>` keys of `combo` into its `task_options` (of the cell's task)."""
  keys = _task_option_keys()
  task = combo.get('task', base.task)
  options = dict(base.task_options) if task == base.task else {}
  for key in [k for k in combo if k in keys]:
    value = combo.pop(key)
    owner, option, default, _ = keys[key]
    if owner == task:
      options[option] = value
    elif value != default:
      raise config_lib.ConfigError(f'grid setting {key} is an option of task {owner}, but the '
                                   f'cell has task={task}')
  combo['task_options'] = options


def _apply_optimizer_hparams(base, combo: dict) -> None:
  """Moves `<role>_<optimizer>_<hparam>` keys into the cell's `<role>_optimizer_hparams`."""
  keys = _optimizer_hparam_keys()
  for role in ('client', 'server'):
    chosen = combo.get(f'{role}_optimizer', getattr(base, f'{role}_optimizer'))
    hparams = (dict(getattr(base, f'{role}_optimizer_hparams'))
               if chosen == getattr(base, f'{role}_optimizer') else {})
    for key in [k for k in combo if k in keys and keys[k][0] == role]:
      value = combo.pop(key)
      _, name, hparam, default = keys[key]
      if name == chosen:
        hparams[hparam] = value
      elif value != default:
        raise config_lib.ConfigError(f'grid setting {key} is a hyperparameter of {role} '
                                     f'optimizer {name}, but the cell has '
                                     f'{role}_optimizer={chosen}')
    combo[f'{role}_optimizer_hparams'] = hparams


def run_grid(base: config_lib.ExperimentConfig, spec: str, metrics: list[str],
             run_fn: Optional[Callable[[config_lib.ExperimentConfig], dict]] = None,
             seeds: int = 1) -> Table:
  """Runs every combination (validated first, all of them) and returns the table rows.

  Args:
    base: Settings shared by all runs.
    spec: The grid (see `parse_grid`).
    metrics: Final metrics to report (keys of the runs' `summary.json` final metrics); a missing
      one is reported as None.
    run_fn: Runs one config and returns its summary (default `tff_lab.training.run_experiment`,
      its progress bar named after the cell).
    seeds: Runs of each cell, with seeds `base.seed`, `base.seed + 1`, ...; above 1, a row
      reports each metric's mean over them and its standard deviation as `<metric>_std`
      (numpy's, ddof=0), over the seeds that reported it, and `seeds` their count.

  Raises:
    ConfigError: For a bad spec, `seeds` < 1, `seed` in the grid beside seeds > 1, or a cell
      whose settings do not validate.
  """
  if not isinstance(seeds, int) or seeds < 1:
    raise config_lib.ConfigError(f'seeds must be a positive integer, got {seeds!r}')
  grid = parse_grid(spec)
  if seeds > 1 and 'seed' in grid:
    raise config_lib.ConfigError('the grid sweeps seed and seeds > 1 replicates it: use one')
  cells = []  # (the cell's values, its runs, each run's label)
  for values, config in zip(itertools.product(*grid.values()),
                            expand(base, grid)):  # all validated before the first run starts
    runs = [config] if seeds == 1 else [
        dataclasses.replace(config, seed=config.seed + i,
                            experiment_name=f'{config.experiment_name}_seed={config.seed + i}')
        for i in range(seeds)]
    for run in runs:
      run.validate()
    label = ', '.join(f'{k}={v}' for k, v in zip(grid, values))
    cells.append((values, runs,
                  [label + (f', seed={run.seed}' if seeds > 1 else '') for run in runs]))
  total = sum(len(runs) for _, runs, _ in cells)
  if run_fn is None:  # run_experiment, its progress bar naming the cell
    from tff_lab.training import loop  # pylint: disable=g-import-not-at-top
    run = lambda config, desc: loop.run_experiment(config, progress_desc=desc)
  else:
    run = lambda config, desc: run_fn(config)
  position = itertools.count(1)
  rows = []
  for values, runs, labels in cells:
    finals = [run(r, f'[{next(position)}/{total}] {label}')['final_metrics']
              for r, label in zip(runs, labels)]
    row = collections.OrderedDict(zip(grid, values))
    if seeds == 1:
      row.update((m, finals[0].get(m)) for m in metrics)
    else:
      row['seeds'] = seeds
      for m in metrics:
        got = [f[m] for f in finals if f.get(m) is not None]
        row[m] = float(np.mean(got)) if got else None
        row[f'{m}_std'] = float(np.std(got)) if got else None
    rows.append(row)
  return rows


def _cell(row, key: str) -> str:
  value = row[key]
  fmt = lambda v: f'{v:.4f}' if isinstance(v, float) and v != round(v, 4) else str(v)
  std = row.get(f'{key}_std')
  if value is not None and std is not None:
    return f'{value:.4f} ± {std:.4f}'
  return fmt(value)


def format_table(rows: Table) -> str:
  """A Markdown table of the rows (`m` beside `m_std` shows as one column, `mean ± std`)."""
  if not rows:
    return ''
  keys = [k for k in rows[0] if not (k.endswith('_std') and k[:-len('_std')] in rows[0])]
  lines = ['| ' + ' | '.join(keys) + ' |', '|' + '---|' * len(keys)]
  lines += ['| ' + ' | '.join(_cell(r, k) for k in keys) + ' |' for r in rows]
  return '\n'.join(lines)


def write_table(rows: Table, directory: str, name: str) -> str:
  """Writes `<name>.md` and `<name>.json` into `directory`; returns the Markdown path."""
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, f'{name}.md')
  with open(path, 'w') as f:
    f.write(format_table(rows) + '\n')
  with open(os.path.join(directory, f'{name}.json'), 'w') as f:
    json.dump(rows, f, indent=2)
  return path
