"""Several runs side by side: their learning curves in one PNG, final metrics, config differences.

    from tff_lab.metrics import compare
    comparison = compare.compare_runs(['runs/a', 'runs/b'])
    print(compare.format_table(comparison.table))
    comparison.config_differences  # {'client_learning_rate': {'a': 0.1, 'b': 0.05}, ...}
    comparison.plot('comparison.png')

Each directory is an experiment directory (`tff_lab.training.experiment_dir`): its metrics.csv
gives the curves and final metrics (the last value of each column, as summary.json's), its
config.json the settings. `tff-lab-compare` (`tff_lab/compare_cli.py`) is the shell's way in.
"""

import collections
import csv
import dataclasses
import json
import os
from typing import Any, Optional, Sequence

from matplotlib import figure

METRICS_FILENAME = 'metrics.csv'
CONFIG_FILENAME = 'config.json'

# The quantities compared: (column, subplot title, cumulative). Bytes are summed over rounds.
QUANTITIES = (
    ('train_loss', 'train loss', False),
    ('train_accuracy', 'train accuracy', False),
    ('fed_eval_loss', 'federated eval loss', False),
    ('fed_eval_accuracy', 'federated eval accuracy', False),
    ('central_eval_loss', 'centralised eval loss', False),
    ('central_eval_accuracy', 'centralised eval accuracy', False),
    ('upload_bytes_per_client', 'upload bytes per client (cumulative)', True),
    ('download_bytes_per_client', 'download bytes per client (cumulative)', True),
    ('dp_epsilon', 'ε', False),
)


class RunDirectoryError(ValueError):
  """A directory that is not an experiment directory (no metrics.csv or config.json)."""


def _number(text: Optional[str]) -> Optional[float]:
  try:
    return float(text)
  except (TypeError, ValueError):
    return None


@dataclasses.dataclass
class Run:
  """One experiment directory, read."""
  label: str
  directory: str
  config: dict
  rows: list

  def curve(self, column: str, cumulative: bool = False) -> tuple[list[int], list[float]]:
    """(rounds, values) of the rows where `column` has a value (summed so far if cumulative)."""
    xs, ys, total = [], [], 0.0
    for row in self.rows:
      value = _number(row.get(column))
      if value is None:
        continue
      total = total + value if cumulative else value
      xs.append(int(row['round']))
      ys.append(total)
    return xs, ys


def read_run(directory: str, label: Optional[str] = None) -> Run:
  """Reads `directory`'s metrics.csv and config.json.

  Raises:
    RunDirectoryError: One line naming the directory and the file it lacks.
  """
  for name in (METRICS_FILENAME, CONFIG_FILENAME):
    if not os.path.isfile(os.path.join(directory, name)):
      raise RunDirectoryError(f'{directory}: no {name} (not an experiment directory)')
  try:
    with open(os.path.join(directory, CONFIG_FILENAME), encoding='utf-8') as f:
      config = json.load(f)
  except ValueError as e:
    raise RunDirectoryError(f'{directory}: {CONFIG_FILENAME} is not JSON ({e})') from None
  with open(os.path.join(directory, METRICS_FILENAME), newline='', encoding='utf-8') as f:
    lines = f.read().splitlines(keepends=True)
  if lines and not lines[-1].endswith('\n'):
    lines = lines[:-1]  # a row cut short by a kill
  rows = [r for r in csv.DictReader(lines) if (r.get('round') or '').isdigit()]
  return Run(label or os.path.basename(os.path.normpath(directory)), directory, config, rows)


def _labels(directories: Sequence[str]) -> list[str]:
  """Base names, or the paths as given where two base names coincide."""
  names = [os.path.basename(os.path.normpath(d)) for d in directories]
  return names if len(set(names)) == len(names) else [os.path.normpath(d) for d in directories]


def config_differences(configs: 'collections.OrderedDict[str, dict]'
                       ) -> 'collections.OrderedDict[str, collections.OrderedDict]':
  """The keys whose values differ between the configs: key -> {label: value} (missing: None).

  Nested dicts (task_options, aggregation, ...) are compared key by key, as `section.key`.
  """
  flat = collections.OrderedDict((label, _flatten(c)) for label, c in configs.items())
  keys = list(dict.fromkeys(k for c in flat.values() for k in c))
  out = collections.OrderedDict()
  for key in keys:
    values = [c.get(key) for c in flat.values()]
    if any(v != values[0] for v in values):
      out[key] = collections.OrderedDict(zip(flat, values))
  return out


def _flatten(config: dict, prefix: str = '') -> dict:
  out = {}
  for key, value in config.items():
    if isinstance(value, dict) and value:
      out.update(_flatten(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value
  return out


@dataclasses.dataclass
class Comparison:
  """Runs compared.

  Attributes:
    runs: The runs read, in the order given.
    table: One row per run: `run`, `rounds` (metrics.csv's last round) and the final value of
      each compared quantity any run has (the last value of its column; the total for bytes).
    config_differences: Config keys whose values differ, key -> {run label: value}.
  """
  runs: list
  table: list
  config_differences: 'collections.OrderedDict[str, Any]'

  def quantities(self) -> list[tuple[str, str, bool]]:
    """The quantities of `QUANTITIES` at least one run has a value of."""
    return [q for q in QUANTITIES if any(run.curve(q[0])[0] for run in self.runs)]

  def plot(self, path: str) -> str:
    """Writes one PNG: a subplot per quantity, a labelled line per run. Returns `path`."""
    quantities = self.quantities()
    cols = min(3, max(1, len(quantities)))
    nrows = max(1, -(-len(quantities) // cols))
    fig = figure.Figure(figsize=(4.2 * cols, 3.2 * nrows))
    axes = fig.subplots(nrows, cols, squeeze=False).ravel()
    for ax, (column, title, cumulative) in zip(axes, quantities):
      for run in self.runs:
        xs, ys = run.curve(column, cumulative)
        if xs:
          ax.plot(xs, ys, marker='.' if len(xs) < 30 else None, label=run.label)
      ax.set_title(title, fontsize=9)
      ax.set_xlabel('round')
      ax.grid(alpha=0.3)
      ax.legend(fontsize=7)
    for ax in axes[len(quantities):]:
      ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def compare_runs(directories: Sequence[str], labels: Optional[Sequence[str]] = None
                 ) -> Comparison:
  """Reads the experiment directories and compares them.

  Args:
    directories: Experiment directories (each with metrics.csv and config.json).
    labels: Names of the runs in the plot and table (default: the directories' base names).

  Raises:
    RunDirectoryError: One line for the first directory that is not an experiment directory, or
      for no directories.
  """
  if not directories:
    raise RunDirectoryError('no experiment directories to compare')
  labels = list(labels) if labels else _labels(directories)
  runs = [read_run(d, label) for d, label in zip(directories, labels)]
  present = [q for q in QUANTITIES if any(run.curve(q[0])[0] for run in runs)]
  table = []
  for run in runs:
    row = collections.OrderedDict(run=run.label,
                                  rounds=int(run.rows[-1]['round']) if run.rows else 0)
    for column, _, cumulative in present:
      ys = run.curve(column, cumulative)[1]
      row[column] = ys[-1] if ys else None
    table.append(row)
  differences = config_differences(collections.OrderedDict(
      (run.label, {k: v for k, v in run.config.items() if k != 'experiment_name'})
      for run in runs))
  return Comparison(runs, table, differences)


def format_table(rows: list) -> str:
  """A Markdown table of rows (floats to 4 significant places where longer)."""
  if not rows:
    return ''
  keys = list(dict.fromkeys(k for r in rows for k in r))
  fmt = lambda v: f'{v:.4g}' if isinstance(v, float) else '' if v is None else str(v)
  lines = ['| ' + ' | '.join(keys) + ' |', '|' + '---|' * len(keys)]
  lines += ['| ' + ' | '.join(fmt(r.get(k)) for k in keys) + ' |' for r in rows]
  return '\n'.join(lines)


def format_differences(differences) -> str:
  """One line per differing key: `key: a=v1, b=v2`."""
  if not differences:
    return 'no config differences'
  return '\n'.join(f'{key}: ' + ', '.join(f'{label}={value!r}' for label, value in values.items())
                   for key, values in differences.items())
