"""Reproducing a paper: its grid of runs, its claims, and the report beside its numbers.

A paper module (`tff_lab/baselines/<paper>.py`) describes one paper as data, a `Paper`:

  * `runs(quick, seeds)`: the grid, one `tff_lab.training.ExperimentConfig` per (setting, seed),
    every hyperparameter named with its source (`Hyperparameter`);
  * `published`: the paper's numbers and statements, each with where it comes from;
  * `claims`: named checks, each with a tolerance, returning held or not held with our numbers;
  * `analyse_run`: numbers computed after a run from its outputs (cached beside them);
  * `tables` and `figures`: our results beside the paper's, and its figures redrawn.

`reproduce()` runs the grid through `tff_lab.training.run_experiment`, one experiment directory per
config and seed under `<output_dir>/runs/`. A finished run (its `summary.json` covers all rounds
and its saved config equals the one asked for) is reused without training; an unfinished one
resumes from its checkpoint, so a killed reproduction continues where it stopped. It then writes
`<output_dir>/report.md` and the figures' PNGs under `<output_dir>/figures/`.

`<output_dir>/reproduction.json` records which paper, scale and seeds the directory holds; a
directory holding another setting is refused, naming each difference, as is a run directory
whose saved config differs (the `ConfigError` of `run_experiment`).
"""

import collections
from collections.abc import Callable, Mapping, Sequence
import csv
import dataclasses
import datetime
import json
import os
import subprocess
import time
from typing import Any, Optional

import numpy as np

from tff_lab import training
from tff_lab.training import config as config_lib

ConfigError = training.ConfigError

REPORT_NAME = 'report.md'
MANIFEST_NAME = 'reproduction.json'
ANALYSIS_NAME = 'baseline_analysis.json'
FIGURES_DIR = 'figures'
RUNS_DIR = 'runs'


@dataclasses.dataclass(frozen=True)
class Hyperparameter:
  """One setting of the paper's setup and where its value comes from."""

  name: str
  value: Any
  source: str


@dataclasses.dataclass(frozen=True)
class Published:
  """A number or statement from the paper, with where it is printed."""

  name: str
  value: str
  source: str


@dataclasses.dataclass(frozen=True)
class Run:
  """One experiment of the grid.

  Attributes:
    name: The experiment directory name, unique within the paper.
    config: The experiment (its `root_output_dir` and `experiment_name` are set by `reproduce`).
    labels: What the run stands for in the paper's grid (dataset, method, seed, ...).
  """

  name: str
  config: training.ExperimentConfig
  labels: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class ClaimResult:
  """The outcome of a claim: held (True/False, or None when our grid cannot test it) and why."""

  held: Optional[bool]
  ours: str


@dataclasses.dataclass(frozen=True)
class Claim:
  """A named, checkable statement of the paper.

  Attributes:
    name: Short identifier (`--claims=<name>`).
    statement: What the paper says, in one sentence.
    source: Where the paper says it.
    tolerance: The tolerance used, as the report prints it.
    check: `(Results) -> ClaimResult`.
    at_quick_scale: The claim is expected to hold in a `--quick` reproduction (the tests check it).
    explanation: Our explanation, printed when the claim does not hold.
  """

  name: str
  statement: str
  source: str
  tolerance: str
  check: Callable[['Results'], ClaimResult]
  at_quick_scale: bool = False
  explanation: str = ''


@dataclasses.dataclass(frozen=True)
class Paper:
  """A paper's reproduction, as data (see the module docstring)."""

  name: str
  title: str
  citation: str
  runs: Callable[[bool, int], list[Run]]
  setup: Callable[[bool], Sequence[Hyperparameter]]
  published: Sequence[Published]
  claims: Sequence[Claim]
  tables: Callable[['Results'], str]
  figures: Callable[['Results', str], list[tuple[str, str]]]
  default_seeds: int
  quick_seeds: int = 1
  analyse_run: Optional[Callable[['RunResult'], dict]] = None
  notes: Sequence[str] = ()


@dataclasses.dataclass
class RunResult:
  """A finished run's outputs: metrics.csv rows, summary.json, and the paper's analysis."""

  run: Run
  directory: str
  rows: list[dict[str, float]]
  summary: dict
  reused: bool
  analysis: dict = dataclasses.field(default_factory=dict)

  @property
  def labels(self) -> Mapping[str, Any]:
    return self.run.labels

  def series(self, column: str) -> tuple[np.ndarray, np.ndarray]:
    """(rounds, values) of a metrics.csv column, over the rounds that logged it."""
    points = [(r['round'], r[column]) for r in self.rows if column in r]
    if not points:
      return np.zeros(0), np.zeros(0)
    rounds, values = zip(*points)
    return np.asarray(rounds), np.asarray(values)

  def final(self, column: str) -> float:
    """The last logged value of a metrics.csv column (NaN when never logged)."""
    values = self.series(column)[1]
    return float(values[-1]) if len(values) else float('nan')


class Results:
  """The runs of one reproduction, selectable by their labels."""

  def __init__(self, runs: Sequence[RunResult], quick: bool):
    self.runs = list(runs)
    self.quick = quick

  def select(self, **labels) -> list[RunResult]:
    """Runs whose labels include all of `labels`, in grid order."""
    return [r for r in self.runs if all(r.labels.get(k) == v for k, v in labels.items())]

  def by_seed(self, **labels) -> dict[int, RunResult]:
    return {r.labels['seed']: r for r in self.select(**labels)}

  def paired(self, a: Mapping[str, Any], b: Mapping[str, Any]
             ) -> list[tuple[int, RunResult, RunResult]]:
    """(seed, run a, run b) for every seed that has both (paired: the same data and sampling)."""
    runs_a, runs_b = self.by_seed(**a), self.by_seed(**b)
    return [(s, runs_a[s], runs_b[s]) for s in sorted(set(runs_a) & set(runs_b))]


def mean_std(values: Sequence[float], digits: int = 4) -> str:
  """`mean ± std (n=...)` (std with ddof=1; only the mean for one value)."""
  values = np.asarray(values, dtype=float)
  if len(values) == 0:
    return 'n/a'
  if len(values) == 1:
    return f'{values[0]:.{digits}f} (n=1)'
  return f'{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f} (n={len(values)})'


def read_metrics(path: str) -> list[dict[str, float]]:
  """metrics.csv as one dict per round, numeric cells only."""
  rows = []
  with open(path, newline='') as f:
    for row in csv.DictReader(f):
      parsed = {}
      for k, v in row.items():
        if v not in ('', None):
          try:
            parsed[k] = float(v)
          except ValueError:
            pass
      parsed['round'] = int(parsed['round'])
      rows.append(parsed)
  return rows


@dataclasses.dataclass
class Report:
  """What `reproduce` produced."""

  path: str
  results: Results
  claims: list[tuple[Claim, ClaimResult]]
  trained: list[str]
  reused: list[str]
  wall_seconds: float


def _manifest(paper: Paper, quick: bool, seeds: int) -> dict:
  return collections.OrderedDict(paper=paper.name, quick=quick, seeds=seeds)


def check_output_dir(output_dir: str, manifest: dict) -> None:
  """Refuses an output dir holding another reproduction setting, naming each difference."""
  path = os.path.join(output_dir, MANIFEST_NAME)
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    diffs = [f'{k}: saved {saved.get(k)!r}, given {manifest.get(k)!r}'
             for k in manifest if saved.get(k) != manifest.get(k)]
    if diffs:
      raise ConfigError(f'output directory {output_dir!r} holds runs from other settings '
                        f'({"; ".join(diffs)}); re-run with those settings to resume, or choose '
                        'another --output_dir')
  else:
    os.makedirs(output_dir, exist_ok=True)
    with open(path, 'w') as f:
      json.dump(manifest, f, indent=2)


def _is_finished(config: training.ExperimentConfig) -> bool:
  path = os.path.join(config.experiment_dir, 'summary.json')
  if not os.path.exists(path):
    return False
  with open(path) as f:
    summary = json.load(f)
  # summary.json is rewritten every round: its status says whether the run ended.
  if (summary.get('rounds_completed') != config.rounds
      or summary.get('status', 'finished') != 'finished'):
    return False
  config_lib.prepare_experiment_dir(config)  # raises ConfigError for a changed config
  return True


def _load(run: Run, reused: bool, analyse: Optional[Callable[[RunResult], dict]]) -> RunResult:
  directory = run.config.experiment_dir
  with open(os.path.join(directory, 'summary.json')) as f:
    summary = json.load(f)
  result = RunResult(run=run, directory=directory,
                     rows=read_metrics(os.path.join(directory, 'metrics.csv')),
                     summary=summary, reused=reused)
  if analyse is not None:
    path = os.path.join(directory, ANALYSIS_NAME)
    if reused and os.path.exists(path):
      with open(path) as f:
        result.analysis = json.load(f)
    else:
      result.analysis = analyse(result)
      with open(path, 'w') as f:
        json.dump(result.analysis, f, indent=1)
  return result


def select_claims(paper: Paper, names: Optional[Sequence[str]]) -> list[Claim]:
  """The claims named (all when `names` is empty). Raises ConfigError for an unknown name."""
  known = [c.name for c in paper.claims]
  unknown = [n for n in names or () if n not in known]
  if unknown:
    raise ConfigError(f'unknown claim(s) {unknown} for paper {paper.name!r}; known claims: '
                      f'{", ".join(known)}')
  return [c for c in paper.claims if not names or c.name in names]


def plan(paper: Paper, output_dir: str, quick: bool = False, seeds: Optional[int] = None,
         progress: bool = False) -> list[Run]:
  """The grid with its output locations set, every config validated (no TFF tracing)."""
  seeds = seeds if seeds is not None else (paper.quick_seeds if quick else paper.default_seeds)
  if seeds < 1:
    raise ConfigError(f'--seeds must be >= 1, got {seeds}')
  runs = []
  for run in paper.runs(quick, seeds):
    config = dataclasses.replace(run.config, root_output_dir=os.path.join(output_dir, RUNS_DIR),
                                 experiment_name=run.name, progress=progress)
    config.validate()
    runs.append(dataclasses.replace(run, config=config))
  names = [r.name for r in runs]
  if len(set(names)) != len(names):
    raise ValueError(f'paper {paper.name!r} names two runs alike')
  return runs


def reproduce(paper: Paper, output_dir: str, quick: bool = False, seeds: Optional[int] = None,
              claims: Optional[Sequence[str]] = None, command: str = '',
              progress: bool = False) -> Report:
  """Runs (or reuses) the paper's grid, checks its claims, writes report.md and the figures.

  Args:
    paper: The paper.
    output_dir: Holds `runs/`, `figures/`, `report.md` and `reproduction.json`.
    quick: The paper's shrunken grid (few rounds and seeds), for CI.
    seeds: Number of seeds (default: the paper's, or its quick count).
    claims: Names of the claims to check (default: all).
    command: The command line, printed in the report.
    progress: Show each run's progress bar.

  Raises:
    ConfigError: An unknown claim, an invalid config, or an output dir holding other settings;
      before any TFF tracing.
  """
  started = time.time()
  chosen = select_claims(paper, claims)
  runs = plan(paper, output_dir, quick, seeds, progress)
  seeds = len({r.labels.get('seed') for r in runs})
  check_output_dir(output_dir, _manifest(paper, quick, seeds))
  trained, reused, results = [], [], []
  for run in runs:
    if _is_finished(run.config):
      reused.append(run.name)
      results.append(_load(run, True, paper.analyse_run))
    else:
      training.run_experiment(run.config)
      trained.append(run.name)
      results.append(_load(run, False, paper.analyse_run))
  all_results = Results(results, quick)
  outcomes = [(claim, claim.check(all_results)) for claim in chosen]
  figures_dir = os.path.join(output_dir, FIGURES_DIR)
  os.makedirs(figures_dir, exist_ok=True)
  figures = paper.figures(all_results, figures_dir)
  wall = time.time() - started
  path = os.path.join(output_dir, REPORT_NAME)
  text = render_report(paper, all_results, outcomes, figures, quick=quick, seeds=seeds,
                       command=command, wall_seconds=wall, trained=trained, reused=reused,
                       all_claims=len(chosen) == len(paper.claims))
  with open(path, 'w') as f:
    f.write(text)
  return Report(path=path, results=all_results, claims=outcomes, trained=trained, reused=reused,
                wall_seconds=wall)


def _git_commit() -> str:
  try:
    here = os.path.dirname(os.path.abspath(__file__))
    head = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True,
                          cwd=here, timeout=10, check=False).stdout.strip()
    dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'],
                           capture_output=True, text=True, cwd=here, timeout=10,
                           check=False).stdout.strip()
    return f'{head} (with uncommitted changes)' if head and dirty else head or 'unknown'
  except OSError:
    return 'unknown'


def _mark(held: Optional[bool]) -> str:
  return {True: '✓', False: '✗', None: '–'}[held]


def _cell(text: Any) -> str:
  return str(text).replace('|', '\\|').replace('\n', ' ')


def render_report(paper: Paper, results: Results, outcomes: list[tuple[Claim, ClaimResult]],
                  figures: list[tuple[str, str]], *, quick: bool, seeds: int, command: str,
                  wall_seconds: float, trained: list[str], reused: list[str],
                  all_claims: bool = True) -> str:
  """The report's markdown."""
  scale = ('QUICK (shrunken grid for CI; not the paper\'s setup, numbers are not comparable)'
           if quick else 'full (the paper\'s setup)')
  lines = [
      f'# Reproduction: {paper.title}', '',
      f'{paper.citation}', '',
      '| | |', '|---|---|',
      f'| command | `{_cell(command)}` |' if command else '| command | (library call) |',
      f'| date | {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC |',
      f'| wall time | {wall_seconds:.0f} s ({len(trained)} runs trained, {len(reused)} reused) |',
      f'| scale | {scale} |',
      f'| seeds | {seeds} |',
      f'| tff_lab commit | {_git_commit()} |', '',
      '## Claims', '',
      '| claim | the paper says | source | tolerance | ours | held |',
      '|---|---|---|---|---|---|',
  ]
  for claim, outcome in outcomes:
    lines.append(f'| `{claim.name}` | {_cell(claim.statement)} | {_cell(claim.source)} | '
                 f'{_cell(claim.tolerance)} | {_cell(outcome.ours)} | {_mark(outcome.held)} |')
  if not all_claims:
    lines += ['', f'Only the claims asked for were checked ({len(outcomes)} of '
              f'{len(paper.claims)}).']
  unheld = [(c, o) for c, o in outcomes if not o.held]
  if unheld:
    lines += ['', 'Claims that did not hold (✗) or could not be tested here (–), and why:', '']
    for claim, outcome in unheld:
      why = claim.explanation or 'see the numbers above'
      if quick and not claim.at_quick_scale:
        why = (f'not expected to hold at --quick scale (rounds, local epochs and seeds shrunk); '
               f'{why}')
      if outcome.held is None:
        why = outcome.ours
      lines.append(f'- `{claim.name}`: {why}')
  lines += ['', '## Our numbers beside the paper\'s', '', paper.tables(results).rstrip(), '']
  lines += ['## Published numbers and statements', '', '| what | paper | source |',
            '|---|---|---|']
  lines += [f'| {_cell(p.name)} | {_cell(p.value)} | {_cell(p.source)} |' for p in paper.published]
  lines += ['', '## Figures (redrawn from our runs)', '']
  for filename, caption in figures:
    lines += [f'![{caption}]({FIGURES_DIR}/{filename})', '', f'*{caption}*', '']
  lines += ['## Setup', '', '| hyperparameter | value | source |', '|---|---|---|']
  lines += [f'| {_cell(h.name)} | {_cell(h.value)} | {_cell(h.source)} |'
            for h in paper.setup(quick)]
  if paper.notes:
    lines += ['', '## Deviations, gaps and notes', '']
    lines += [f'- {note}' for note in paper.notes]
  lines += ['', '## Runs', '', f'{len(results.runs)} experiment directories under `{RUNS_DIR}/` '
            '(each with config.json, metrics.csv, checkpoints/, summary.json):', '']
  lines += [f'- `{r.run.name}`' + (' (reused)' if r.reused else '') for r in results.runs]
  return '\n'.join(lines) + '\n'
