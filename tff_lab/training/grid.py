"""Grids of experiments: every combination of a few settings, one table of final metrics.

A grid spec names settings of `ExperimentConfig` and their values, e.g.

    aggregator=mean,median,trimmed_mean;byzantine_fraction=0,0.1,0.2

Each combination runs as its own experiment (its own directory under `root_output_dir`, named
after the combination, so an interrupted grid resumes run by run), and the table reports the
chosen final metrics of each. Used for the robustness and compression evidence in BUILD.md.
"""

import collections
import dataclasses
import itertools
import json
import os
from typing import Any, Callable, Optional

from tff_lab.algorithms import registry as algorithms_registry
from tff_lab.flags import aggregation_flags
from tff_lab.training import config as config_lib

Table = list['collections.OrderedDict[str, Any]']


def _setting_types() -> dict[str, type]:
  """Grid-able settings and their types: ExperimentConfig's scalars, the aggregation flags and
  the algorithms' hyperparameters."""
  types = {f.name: aggregation_flags.setting_type(f) for f in aggregation_flags.setting_fields()}
  types.update({name: hparam.type
                for name, (hparam, _) in algorithms_registry.hparam_specs().items()})
  defaults = config_lib.ExperimentConfig()
  for f in dataclasses.fields(config_lib.ExperimentConfig):
    value = getattr(defaults, f.name)
    if not isinstance(value, (dict, list)):
      types[f.name] = int if value is None else type(value)
  return types


def parse_grid(spec: str) -> 'collections.OrderedDict[str, list[Any]]':
  """Parses `key=v1,v2;key2=w1,w2` into typed values.

  Keys are ExperimentConfig settings, aggregation settings (`aggregator`, `bits`, ...) or
  algorithm hyperparameters (`mu`, ...).

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
      raise config_lib.ConfigError(f'grid setting {key!r} is not an experiment setting')
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


def run_grid(base: config_lib.ExperimentConfig, spec: str, metrics: list[str],
             run_fn: Optional[Callable[[config_lib.ExperimentConfig], dict]] = None) -> Table:
  """Runs every combination (validated first, all of them) and returns the table rows.

  Args:
    base: Settings shared by all runs.
    spec: The grid (see `parse_grid`).
    metrics: Final metrics to report (keys of the runs' `summary.json` final metrics); a missing
      one is reported as None.
    run_fn: Runs one config and returns its summary (default `tff_lab.training.run_experiment`).
  """
  if run_fn is None:
    from tff_lab.training import loop  # pylint: disable=g-import-not-at-top
    run_fn = loop.run_experiment
  grid = parse_grid(spec)
  rows = []
  for config in expand(base, grid):  # every config is validated before the first run starts
    final = run_fn(config)['final_metrics']
    settings = {**{f.name: f.default for f in aggregation_flags.setting_fields()},
                **config.aggregation}
    row = collections.OrderedDict(
        (k, settings[k] if k in settings else getattr(config, k)) for k in grid)
    row.update((m, final.get(m)) for m in metrics)
    rows.append(row)
  return rows


def format_table(rows: Table) -> str:
  """A Markdown table of the rows."""
  if not rows:
    return ''
  keys = list(rows[0])
  fmt = lambda v: f'{v:.4f}' if isinstance(v, float) and v != round(v, 4) else str(v)
  lines = ['| ' + ' | '.join(keys) + ' |', '|' + '---|' * len(keys)]
  lines += ['| ' + ' | '.join(fmt(r[k]) for k in keys) + ' |' for r in rows]
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
