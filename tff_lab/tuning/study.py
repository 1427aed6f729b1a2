"""Hyperparameter search over tff-lab-run experiments, on Optuna (`tff-lab-tune`).

Akiba et al., "Optuna: A Next-generation Hyperparameter Optimization Framework", KDD 2019. A
study asks a sampler for each trial's settings: TPE (Bergstra et al., NeurIPS 2011), random
search, or a grid. It prunes unpromising trials on their intermediate values, by the median rule
of Golovin et al.'s Vizier (KDD 2017) or by successive halving (Jamieson & Talwalkar, AISTATS
2016; Optuna implements the asynchronous form of Li et al., MLSys 2020). Every trial is kept in a
relational database.

**The study file.** A search is one config file, like a tff-lab-run config file (the README's
"Config files"), whose `get_config()` returns:

    import ml_collections

    def get_config():
      config = ml_collections.ConfigDict()
      config.base_file = 'experiments/configs/fedavg_digits.py'  # optional: a tff-lab-run file
      config.base = dict(server_optimizer='adam', rounds=20)       # tff-lab-run settings (flags)
      config.space = dict(                                         # searched settings (flags)
          server_learning_rate=dict(type='log_uniform', low=1e-3, high=1.0),
          client_learning_rate=dict(type='log_uniform', low=1e-3, high=1.0),
          server_optimizer=dict(type='categorical', choices=['sgd', 'adam', 'yogi']),
          client_epochs=dict(type='int', low=1, high=5),           # also: step=, log=True
          mu=dict(type='uniform', low=0.0, high=1.0),              # also: step=
      )
      config.metric = 'central_eval_accuracy'                     # a metrics.csv column
      config.direction = 'maximize'                               # or 'minimize'
      return config

`sampler='grid'` runs every combination of categorical parameters once (Reddi et al.'s log10
grids: `choices=[10**-3, 10**-2.5, ...]`); `tpe` and `random` take any parameters.

`base` (over `base_file`, if given) holds the settings every trial shares, named as tff-lab-run's
flags; `space` the searched ones, also named as flags (a task option is `<task>_<option>`, an
optimiser hyperparameter `<role>_<optimizer>_<name>`). `direction` may be left out when the metric
names a loss (minimised) or an accuracy (maximised). `--config.space.server_learning_rate.high=10`
overrides one field on the command line, as for tff-lab-run.

**Trials are ordinary experiments.** Trial N is the tff-lab-run run
`<study_dir>/trials/trial_000N` (config.json, metrics.csv, checkpoints, curves.png, ...); its
settings are also a tff-lab-run config file, `<study_dir>/trial_configs/trial_000N.py`, so
`tff-lab-run --config=<it>` repeats or resumes it. Every trial shares the base's `seed` (same data
and initial model), so trials differ only in the searched settings. The value of a trial is its
metric in the last row of metrics.csv that has it.

**Pruning** needs values during a trial: with `pruner='median'` or `'successive_halving'` a trial
runs in chunks of `report_every` rounds (default: a quarter of its rounds), each chunk resuming the
run from its checkpoint with a larger `rounds` (which resumes exactly). After each chunk every new
metrics.csv row is reported to the pruner (step = round), which may stop the trial there. A trial
whose loss turns NaN or infinite is recorded as pruned at its last good round (user attribute
`diverged`), so the sampler learns that region is bad.

**Storage** is an Optuna RDB: SQLite in `<study_dir>/study.db` by default, or any SQLAlchemy URL
(`storage=`; e.g. PostgreSQL for workers on several machines). Re-running the same command resumes
the study: `n_trials` is the study's total, so only the missing trials run, and a trial that was
interrupted (Ctrl-C, or a process that stopped heartbeating) runs again in its own directory,
resuming from its last checkpoint. The study's definition (base settings, space, metric,
direction) is kept in the database and in `<study_dir>/study.json`; a study directory made with
another definition is refused, with the difference.

**Parallel trials** (`n_jobs` > 1) each run as their own tff-lab-run process (TFF's execution
context is global to a process); with `n_jobs=1` trials run in this process. Sampling is then not
reproducible from `seed` alone (trials finish in any order).

**Outputs**, in the study directory, rewritten after each invocation:
  * `best_config.py`: the best trial's settings as a tff-lab-run config file
    (`tff-lab-run --config=<study_dir>/best_config.py` trains it anew in `runs/`);
  * `trials.csv`: one row per trial (number, state, value, parameters, rounds run, diverged,
    interrupted, the interrupted trial it resumes, duration, directory);
  * `history.png`: each trial's value and the best so far;
  * `importances.png`: the parameters' importances (Optuna's fANOVA, its random forest seeded),
    or a note when fewer than two trials completed.

Bad input is refused in one line each (`TuneError`, a ValueError) before any trial starts: an
empty range (low >= high), an unknown parameter type, sampler or pruner, a storage URL that cannot
be opened, a space or base key that is not a tff-lab-run setting, a value tff-lab-run refuses.
A value that only the task's data refuses (say clients_per_round above its client count) fails
that trial, and the study goes on; a metric that metrics.csv does not have stops the study after
the first trial's first chunk, listing the columns it has.
"""

import collections
import csv
import dataclasses
import difflib
import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import warnings
from typing import Any, Mapping, Optional

import numpy as np

SAMPLERS = ('tpe', 'random', 'grid')
PRUNERS = ('none', 'median', 'successive_halving')
PARAM_TYPES = ('log_uniform', 'uniform', 'int', 'categorical')
_PARAM_KEYS = {'log_uniform': ('low', 'high'), 'uniform': ('low', 'high', 'step'),
               'int': ('low', 'high', 'step', 'log'), 'categorical': ('choices',)}
# Settings the study decides for each trial; a study file may not set them.
_RESERVED = ('root_output_dir', 'experiment_name', 'overwrite', 'config', 'plugin')
DEFINITION_ATTR = 'tff_lab_definition'
_HEARTBEAT_SECONDS, _GRACE_SECONDS = 60, 180


class TuneError(ValueError):
  """Bad study input: one line, raised before any trial starts."""


# ---------------------------------------------------------------------------------------------
# The search space.


@dataclasses.dataclass(frozen=True)
class Param:
  """One searched setting: its tff-lab-run flag name and distribution."""
  name: str
  type: str
  low: Any = None
  high: Any = None
  step: Any = None
  log: bool = False
  choices: tuple = ()

  @classmethod
  def parse(cls, name: str, spec: Any) -> 'Param':
    """Parses `{'type': ..., ...}`; raises TuneError for a malformed one."""
    where = f'space.{name}'
    if hasattr(spec, 'to_dict'):
      spec = spec.to_dict()
    if not isinstance(spec, Mapping) or 'type' not in spec:
      raise TuneError(f"{where} must be a dict with a 'type' (one of {', '.join(PARAM_TYPES)}), "
                      f'got {spec!r}')
    kind = spec['type']
    if kind not in PARAM_TYPES:
      raise TuneError(f'{where}: unknown type {kind!r}; the types are {", ".join(PARAM_TYPES)}')
    unknown = sorted(set(spec) - {'type', *_PARAM_KEYS[kind]})
    if unknown:
      raise TuneError(f'{where}: {kind} takes {", ".join(_PARAM_KEYS[kind])}, not '
                      f'{", ".join(unknown)}')
    if kind == 'categorical':
      choices = spec.get('choices')
      if isinstance(choices, (str, bytes)) or not isinstance(choices, (list, tuple)) or not choices:
        raise TuneError(f'{where}: categorical needs a non-empty list of choices, got {choices!r}')
      bad = [c for c in choices if not isinstance(c, (bool, int, float, str, type(None)))]
      if bad:
        raise TuneError(f'{where}: choices must be numbers, strings, booleans or None, got {bad}')
      if len(set(map(repr, choices))) != len(choices):
        raise TuneError(f'{where}: choices repeat a value: {list(choices)}')
      return cls(name, kind, choices=tuple(choices))
    for key in ('low', 'high'):
      if key not in spec:
        raise TuneError(f'{where}: {kind} needs low and high')
      value = spec[key]
      if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TuneError(f'{where}: {key} must be a finite number, got {value!r}')
      if kind == 'int' and value != int(value):
        raise TuneError(f'{where}: int needs integer bounds, got {key}={value!r}')
    low, high = spec['low'], spec['high']
    if low >= high:
      raise TuneError(f'{where}: empty range: low={low!r} >= high={high!r}')
    log = kind == 'log_uniform' or bool(spec.get('log', False))
    if log and low <= 0:
      raise TuneError(f'{where}: a log scale needs low > 0, got low={low!r}')
    step = spec.get('step')
    if step is not None and (isinstance(step, bool) or not isinstance(step, (int, float))
                             or step <= 0):
      raise TuneError(f'{where}: step must be a positive number, got {step!r}')
    if kind == 'int':
      if log and step not in (None, 1):
        raise TuneError(f'{where}: int with log=True takes no step (Optuna: step 1)')
      return cls(name, kind, int(low), int(high), int(step or 1), log)
    return cls(name, kind, float(low), float(high), None if step is None else float(step), log)

  def suggest(self, trial) -> Any:
    """The trial's value (Optuna's `suggest_*`)."""
    if self.type == 'categorical':
      return trial.suggest_categorical(self.name, list(self.choices))
    if self.type == 'int':
      return trial.suggest_int(self.name, self.low, self.high, step=self.step, log=self.log)
    return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

  def probes(self) -> list:
    """Values that must all be valid settings: the ends of a range, every choice."""
    return list(self.choices) if self.type == 'categorical' else [self.low, self.high]

  def describe(self) -> dict:
    """The JSON form kept as the study's definition."""
    if self.type == 'categorical':
      return {'type': self.type, 'choices': list(self.choices)}
    out = {'type': self.type, 'low': self.low, 'high': self.high}
    if self.step is not None and not (self.type == 'int' and self.step == 1):
      out['step'] = self.step
    if self.type == 'int' and self.log:
      out['log'] = True
    return out


@dataclasses.dataclass
class StudySpec:
  """What a study searches: shared settings, the space, and the objective."""
  base: 'collections.OrderedDict[str, Any]'
  space: 'collections.OrderedDict[str, Param]'
  metric: str
  direction: str

  def definition(self) -> dict:
    """JSON-able; a resumed study must have the same one."""
    return {'base': _jsonable(dict(self.base)),
            'space': {name: p.describe() for name, p in self.space.items()},
            'metric': self.metric, 'direction': self.direction}


def _jsonable(value):
  return json.loads(json.dumps(value, default=list))


def load_config_file(path: str) -> Any:
  """`get_config()` (or `get_config(arg)` for `path:arg`) of a config file."""
  arg = None
  if ':' in os.path.basename(path):
    path, arg = path.rsplit(':', 1)
  if not os.path.isfile(path):
    raise TuneError(f'config file {path} does not exist')
  spec = importlib.util.spec_from_file_location(f'_tff_lab_tune_{abs(hash(path))}', path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except Exception as e:  # pylint: disable=broad-except  (the user's file: one line)
    raise TuneError(f'config file {path} does not load: {type(e).__name__}: {e}') from None
  if not hasattr(module, 'get_config'):
    raise TuneError(f'config file {path} has no get_config()')
  return module.get_config() if arg is None else module.get_config(arg)


def _as_dict(value, what: str) -> dict:
  if value is None:
    return {}
  if hasattr(value, 'to_dict'):
    value = value.to_dict()
  if not isinstance(value, Mapping):
    raise TuneError(f'{what} must be a dict of tff-lab-run settings, got {value!r}')
  return dict(value)


def _infer_direction(metric: str) -> str:
  if 'loss' in metric or 'error' in metric:
    return 'minimize'
  if 'accuracy' in metric:
    return 'maximize'
  raise TuneError(f"the study file must set direction ('minimize' or 'maximize') for metric "
                  f'{metric!r}')


def parse_spec(config: Any, base_file: Optional[str] = None) -> StudySpec:
  """The study file's `get_config()` (a ConfigDict or dict) as a StudySpec (shapes only: the
  settings are checked against tff-lab-run by `validate_spec`).

  Args:
    config: `base_file`, `base`, `space`, `metric`, `direction` (see the module docstring).
    base_file: A tff-lab-run config file replacing the study file's `base_file`.
  """
  config = _as_dict(config, 'the study config')
  unknown = sorted(set(config) - {'base', 'base_file', 'space', 'metric', 'direction'})
  if unknown:
    raise TuneError(f'the study config has unknown key(s) {unknown}; its keys are base_file, '
                    'base, space, metric, direction')
  base = collections.OrderedDict()
  base_file = base_file or config.get('base_file')
  if base_file:  # a saved run's config.py names its directory: the study names the trials'
    from_file = _as_dict(load_config_file(base_file), f'base_file {base_file}')
    base.update((k, v) for k, v in from_file.items() if k not in _RESERVED)
  base.update(_as_dict(config.get('base'), 'base'))
  space_config = _as_dict(config.get('space'), 'space')
  if not space_config:
    raise TuneError('the study config needs a space: {setting: {"type": ..., ...}}')
  space = collections.OrderedDict((name, Param.parse(name, spec))
                                  for name, spec in space_config.items())
  metric = config.get('metric') or 'train_loss'
  if not isinstance(metric, str):
    raise TuneError(f'metric must be a metrics.csv column name, got {metric!r}')
  direction = config.get('direction') or _infer_direction(metric)
  if direction not in ('minimize', 'maximize'):
    raise TuneError(f"direction must be 'minimize' or 'maximize', got {direction!r}")
  return StudySpec(base, space, metric, direction)


# ---------------------------------------------------------------------------------------------
# Settings -> tff-lab-run experiments, through tff-lab-run's own flags.

_FLAGS_LOCK = threading.Lock()


def run_setting_names() -> list[str]:
  """Every setting a tff-lab-run config file may name (its flags)."""
  from tff_lab import cli as run_cli  # pylint: disable=g-import-not-at-top,unused-import
  from tff_lab.flags import section_flags  # pylint: disable=g-import-not-at-top
  return [n for title, names in section_flags.GROUPS.items() if title != 'config file'
          for n in names]


def experiment_config(settings: Mapping[str, Any], path: str, docstring: str = ''):
  """Writes `settings` as a tff-lab-run config file at `path` and reads it back as tff-lab-run
  does (`--config=<path>`): the trial's `ExperimentConfig`, validated.

  Raises:
    TuneError: One line, for a setting tff-lab-run refuses.
  """
  from absl import flags  # pylint: disable=g-import-not-at-top
  from tff_lab import cli as run_cli  # pylint: disable=g-import-not-at-top
  from tff_lab.flags import config_file  # pylint: disable=g-import-not-at-top
  from tff_lab.training import config as config_lib  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'w') as f:
    f.write(config_file.config_file_text(settings, docstring or 'A tff-lab-tune trial.'))
  with _FLAGS_LOCK:  # tff-lab-run's flags are the process's (absl's global FlagValues)
    flag_values = flags.FLAGS
    flag_values.unparse_flags()
    argv, saved_argv = ['tff-lab-run', f'--config={path}'], sys.argv
    # config_flags reads `--config.<field>` overrides from sys.argv: tff-lab-tune's are not these.
    sys.argv = argv
    try:
      flag_values(argv)
      config = run_cli.config_from_flags()
      config.validate()
    except (flags.Error, config_lib.ConfigError, ValueError, AttributeError, TypeError,
            KeyError) as e:
      raise TuneError(' '.join(str(e).split())) from None
    finally:
      sys.argv = saved_argv
      flag_values.unparse_flags()
  return config


def validate_spec(spec: StudySpec) -> None:
  """Every base and space key is a tff-lab-run setting, and the base with each end of each range
  and each choice is a valid experiment (no data needed). Raises TuneError."""
  names = run_setting_names()
  for where, keys in (('base', list(spec.base)), ('space', list(spec.space))):
    for key in keys:
      if key in _RESERVED:
        raise TuneError(f'{where}.{key}: the study sets {key} for each trial; leave it out')
      if key not in names:
        close = difflib.get_close_matches(key, names, n=1)
        hint = f' (did you mean {close[0]}?)' if close else ''
        raise TuneError(f'{where}.{key} is not a tff-lab-run setting{hint}; the keys are '
                        'tff-lab-run flags (tff-lab-run --help lists them)')
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, 'probe.py')
    try:
      experiment_config(_trial_settings(spec.base, {}, tmp, 'probe'), path)
    except TuneError as e:
      raise TuneError(f'base: {e}') from None
    for param in spec.space.values():
      for value in param.probes():
        try:
          experiment_config(_trial_settings(spec.base, {param.name: value}, tmp, 'probe'), path)
        except TuneError as e:
          raise TuneError(f'space.{param.name}={value!r}: {e}') from None


def _trial_settings(base, params, root: str, name: str) -> 'collections.OrderedDict[str, Any]':
  settings = collections.OrderedDict(base)
  settings.update(params)
  settings['root_output_dir'] = root
  settings['experiment_name'] = name
  return settings


# ---------------------------------------------------------------------------------------------
# The study.


def make_sampler(name: str, seed: int, n_startup_trials: int,
                 spec: Optional[StudySpec] = None):
  """TPE, random search, or (every parameter categorical) the full grid in random order."""
  import optuna  # pylint: disable=g-import-not-at-top
  if name not in SAMPLERS:
    raise TuneError(f'unknown sampler {name!r}; the samplers are {", ".join(SAMPLERS)}')
  if name == 'grid':
    if spec is None:
      return None
    ranges = [p.name for p in spec.space.values() if p.type != 'categorical']
    if ranges:
      raise TuneError(f'the grid sampler needs categorical parameters (the grid\'s values); '
                      f'{", ".join(ranges)} are ranges')
    return optuna.samplers.GridSampler({p.name: list(p.choices) for p in spec.space.values()},
                                       seed=seed)
  if name == 'random':
    return optuna.samplers.RandomSampler(seed=seed)
  return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials)


def make_pruner(name: str, n_startup_trials: int):
  import optuna  # pylint: disable=g-import-not-at-top
  if name not in PRUNERS:
    raise TuneError(f'unknown pruner {name!r}; the pruners are {", ".join(PRUNERS)}')
  if name == 'median':
    return optuna.pruners.MedianPruner(n_startup_trials=n_startup_trials)
  if name == 'successive_halving':
    return optuna.pruners.SuccessiveHalvingPruner()
  return optuna.pruners.NopPruner()


def _masked(url: str) -> str:
  try:
    import sqlalchemy  # pylint: disable=g-import-not-at-top
    return repr(sqlalchemy.engine.make_url(url))  # hides a password
  except Exception:  # pylint: disable=broad-except
    return url


def open_storage(url: str):
  """An Optuna RDB storage with heartbeats (a trial whose process died is retried).

  Raises:
    TuneError: One line, for a URL SQLAlchemy cannot open.
  """
  import optuna  # pylint: disable=g-import-not-at-top
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', optuna.exceptions.ExperimentalWarning)
    try:
      return optuna.storages.RDBStorage(
          url, heartbeat_interval=_HEARTBEAT_SECONDS, grace_period=_GRACE_SECONDS,
          failed_trial_callback=_retry_in_own_directory)
    except Exception as e:  # pylint: disable=broad-except  (any driver's error: one line)
      reason = ' '.join(str(e).split('\n')[0].split())
      raise TuneError(f'storage {_masked(url)} cannot be opened: {type(e).__name__}: '
                      f'{reason[:300]}') from None


def _retry_in_own_directory(study, trial) -> None:
  """Enqueues a failed (interrupted or stale) trial again, with its parameters and directory."""
  import optuna  # pylint: disable=g-import-not-at-top
  taken = {t.user_attrs.get('resumes_trial') for t in study.get_trials(deepcopy=False)}
  if trial.number in taken or 'experiment_name' not in trial.user_attrs:
    return
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', optuna.exceptions.ExperimentalWarning)
    study.enqueue_trial(trial.params, user_attrs={
        'experiment_name': trial.user_attrs['experiment_name'], 'resumes_trial': trial.number})


def definition_difference(saved: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
  """`key: saved -> wanted` for each leaf that differs."""
  out = []
  def walk(a, b, where):
    if isinstance(a, Mapping) and isinstance(b, Mapping):
      for key in list(a) + [k for k in b if k not in a]:
        walk(a.get(key, '<absent>'), b.get(key, '<absent>'), f'{where}.{key}' if where else key)
    elif a != b:
      out.append(f'{where}: {a!r} -> {b!r}')
  walk(saved, wanted, '')
  return out


@dataclasses.dataclass
class StudyResult:
  """What a study produced."""
  study: Any  # the optuna.Study
  study_dir: str
  best_value: Optional[float]
  best_params: dict
  best_trial: Optional[int]
  files: dict  # output name -> path


def run_study(config: Any, study_dir: str, n_trials: int = 20, sampler: str = 'tpe',
              seed: int = 0, pruner: str = 'none', n_startup_trials: int = 5,
              report_every: int = 0, storage: Optional[str] = None,
              study_name: Optional[str] = None, n_jobs: int = 1,
              base_file: Optional[str] = None) -> StudyResult:
  """Runs (or resumes) a study; every input is checked before the first trial.

  Args:
    config: The study file's config (`base_file`, `base`, `space`, `metric`, `direction`), or a
      StudySpec.
    study_dir: Where the trials' directories, the database (default) and the outputs go.
    n_trials: The study's total number of trials (complete, pruned or failed): re-running runs
      only the missing ones.
    sampler: `tpe`, `random`, or `grid` (every combination of categorical parameters once, in
      random order; `n_trials` beyond their number runs nothing more).
    seed: The sampler's seed (offset by the trials already in the study, so a resumed study does
      not repeat its first suggestions).
    pruner: `none`, `median` or `successive_halving`.
    n_startup_trials: Trials TPE samples at random before modelling, and trials the median pruner
      completes before it prunes.
    report_every: Rounds between reports to the pruner (0: a quarter of the rounds); ignored
      without a pruner (one chunk).
    storage: An SQLAlchemy URL (default `sqlite:///<study_dir>/study.db`).
    study_name: The study's name in the storage (default: the study directory's name).
    n_jobs: Trials run at once, each in its own tff-lab-run process when > 1.
    base_file: A tff-lab-run config file replacing the study file's `base_file`.

  Raises:
    TuneError: For bad input, in one line, before any trial starts.
  """
  import optuna  # pylint: disable=g-import-not-at-top
  make_sampler(sampler, seed, n_startup_trials)  # unknown names: before anything else
  make_pruner(pruner, n_startup_trials)
  for name, value, least in (('n_trials', n_trials, 1), ('n_jobs', n_jobs, 1),
                             ('n_startup_trials', n_startup_trials, 0),
                             ('report_every', report_every, 0)):
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
      raise TuneError(f'{name} must be an integer >= {least}, got {value!r}')
  spec = config if isinstance(config, StudySpec) else parse_spec(config, base_file)
  make_sampler(sampler, seed, n_startup_trials, spec)
  validate_spec(spec)
  study_dir = os.path.abspath(study_dir)
  definition = spec.definition()
  definition_path = os.path.join(study_dir, 'study.json')
  if os.path.exists(definition_path):
    with open(definition_path) as f:
      _refuse_other_definition(json.load(f), definition, study_dir)
  os.makedirs(study_dir, exist_ok=True)
  url = storage or f'sqlite:///{os.path.join(study_dir, "study.db")}'
  rdb = open_storage(url)
  study_name = study_name or os.path.basename(study_dir)
  existing = [s for s in optuna.get_all_study_summaries(rdb) if s.study_name == study_name]
  if existing and DEFINITION_ATTR in existing[0].user_attrs:
    _refuse_other_definition(existing[0].user_attrs[DEFINITION_ATTR], definition, study_dir)
  study = optuna.create_study(storage=rdb, study_name=study_name, direction=spec.direction,
                              load_if_exists=True, sampler=None, pruner=None)
  if study.direction.name.lower() != spec.direction:
    raise TuneError(f'study {study_name!r} in {_masked(url)} is to {study.direction.name.lower()}'
                    f', not {spec.direction}')
  study.set_user_attr(DEFINITION_ATTR, definition)
  with open(definition_path, 'w') as f:
    json.dump(definition, f, indent=2)
  study.sampler = make_sampler(sampler, seed + len(study.trials), n_startup_trials, spec)
  study.pruner = make_pruner(pruner, n_startup_trials)
  for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)):
    if trial.user_attrs.get('interrupted'):
      _retry_in_own_directory(study, trial)
  states = optuna.trial.TrialState
  done = len(study.get_trials(deepcopy=False, states=(states.COMPLETE, states.PRUNED)))
  done += sum(1 for t in study.get_trials(deepcopy=False, states=(states.FAIL,))
              if not t.user_attrs.get('interrupted'))
  objective = _Objective(spec, study_dir, pruner != 'none', report_every, n_jobs > 1)
  remaining = n_trials - done
  if remaining > 0:
    try:
      warnings.filterwarnings('ignore', category=optuna.exceptions.ExperimentalWarning)
      study.optimize(objective, n_trials=remaining, n_jobs=n_jobs, catch=(TrialFailed,),
                     gc_after_trial=True)
    finally:
      files = write_outputs(study, spec, study_dir)
  else:
    files = write_outputs(study, spec, study_dir)
  complete = study.get_trials(deepcopy=False, states=(states.COMPLETE,))
  best = study.best_trial if complete else None
  return StudyResult(study, study_dir, best.value if best else None,
                     dict(best.params) if best else {}, best.number if best else None, files)


def _refuse_other_definition(saved, wanted, study_dir: str) -> None:
  diff = definition_difference(saved, wanted)
  if diff:
    raise TuneError(f'study directory {study_dir} was made with another study definition '
                    f'({"; ".join(diff)}); use another --study_dir, or its own definition '
                    f'({os.path.join(study_dir, "study.json")})')


class TrialFailed(RuntimeError):
  """A trial's run failed, e.g. a setting the task refuses (recorded as a failed trial; the
  study goes on)."""


def report_schedule(rounds: int, report_every: int, pruning: bool, done: int = 0) -> list[int]:
  """The `rounds` each chunk of a trial runs to (the last is `rounds`), past the `done` ones."""
  if not pruning:
    stops = [rounds]
  else:
    every = report_every or max(1, rounds // 4)
    stops = list(range(every, rounds, every)) + [rounds]
  return [r for r in stops if r > done] or [rounds]


class _Objective:
  """Runs one trial as a tff-lab-run experiment, in chunks when pruning."""

  def __init__(self, spec: StudySpec, study_dir: str, pruning: bool, report_every: int,
               subprocesses: bool):
    self.spec, self.study_dir = spec, study_dir
    self.pruning, self.report_every, self.subprocesses = pruning, report_every, subprocesses

  def __call__(self, trial) -> float:
    try:
      return self._run(trial)
    except KeyboardInterrupt:  # a re-run resumes this trial in its own directory
      trial.set_user_attr('interrupted', True)
      raise

  def _run(self, trial) -> float:
    import optuna  # pylint: disable=g-import-not-at-top
    from tff_lab.training import experiment_dir  # pylint: disable=g-import-not-at-top
    params = collections.OrderedDict((p.name, p.suggest(trial)) for p in self.spec.space.values())
    name = trial.user_attrs.get('experiment_name') or f'trial_{trial.number:04d}'
    trial.set_user_attr('experiment_name', name)
    path = os.path.join(self.study_dir, 'trial_configs', f'{name}.py')
    settings = _trial_settings(self.spec.base, params, os.path.join(self.study_dir, 'trials'), name)
    doc = (f'Trial {trial.number} of the tff-lab-tune study in {self.study_dir}: '
           f'{", ".join(f"{k}={v!r}" for k, v in params.items())}.\n\n'
           f'  tff-lab-run --config={path}\n\nrepeats (or resumes) it.\n')
    config = experiment_config(settings, path, doc)
    exp_dir = config.experiment_dir
    trial.set_user_attr('experiment_dir', exp_dir)
    done = experiment_dir.completed_rounds(exp_dir) if os.path.isdir(exp_dir) else 0
    reported, value = set(), None
    for rounds in report_schedule(config.rounds, self.report_every, self.pruning, done):
      diverged = self._run_chunk(config, path, rounds, trial.number)
      for round_num, metric in self._metric_rows(exp_dir):
        if round_num not in reported:
          trial.report(metric, round_num)
          reported.add(round_num)
        value = metric
      trial.set_user_attr('rounds_run', experiment_dir.completed_rounds(exp_dir))
      if diverged:
        trial.set_user_attr('diverged', True)
        raise optuna.TrialPruned(f'diverged (non-finite loss) after round '
                                 f'{experiment_dir.completed_rounds(exp_dir)}')
      if value is None:  # every trial would miss it: the study stops
        raise TuneError(self._missing_metric(exp_dir))
      if rounds < config.rounds and trial.should_prune():
        raise optuna.TrialPruned(f'pruned at round {rounds}')
    return value

  def _run_chunk(self, config, path: str, rounds: int, number: int) -> bool:
    """Runs (resumes) the trial's experiment up to `rounds`; True if it diverged."""
    if not self.subprocesses:
      from tff_lab.training import config as config_lib  # pylint: disable=g-import-not-at-top
      from tff_lab.training import loop  # pylint: disable=g-import-not-at-top
      try:
        loop.run_experiment(dataclasses.replace(config, rounds=rounds),
                            progress_desc=f'trial {number}')
      except loop.NonFiniteLossError:
        return True
      except config_lib.ConfigError as e:  # e.g. more clients per round than the task has
        raise TrialFailed(f'trial {number}: {e}') from None
      return False
    log_dir = os.path.join(self.study_dir, 'logs')
    os.makedirs(log_dir, exist_ok=True)
    log_path = os.path.join(log_dir, f'{config.experiment_name}.log')
    command = [sys.executable, '-c', 'from tff_lab import cli; cli.run_experiment_app()',
               f'--config={path}', f'--rounds={rounds}', '--noprogress']
    with open(log_path, 'a') as log:
      code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT)
    if code == 130:
      raise KeyboardInterrupt
    if code == 3:  # tff-lab-run's exit code for a non-finite loss
      return True
    if code:
      with open(log_path) as f:
        lines = [line.strip() for line in f if line.strip()]
      raise TrialFailed(f'trial {number}: tff-lab-run exited with code {code}: '
                        f'{lines[-1] if lines else ""} (log: {log_path})')
    return False

  def _metric_rows(self, exp_dir: str) -> list[tuple[int, float]]:
    out = []
    for row in _csv_rows(os.path.join(exp_dir, 'metrics.csv')):
      text = row.get(self.spec.metric)
      if text not in (None, ''):
        value = float(text)
        if math.isfinite(value):
          out.append((int(row['round']), value))
    return out

  def _missing_metric(self, exp_dir: str) -> str:
    path = os.path.join(exp_dir, 'metrics.csv')
    columns = []
    if os.path.exists(path):
      with open(path, newline='') as f:
        columns = next(csv.reader(f), [])
    hint = ' (evaluation metrics need eval_every > 0)' if 'eval' in self.spec.metric else ''
    return (f'metric {self.spec.metric!r} is not in {path}{hint}; its columns: '
            f'{", ".join(c for c in columns if c != "round")}')


def _csv_rows(path: str) -> list[dict]:
  if not os.path.exists(path):
    return []
  with open(path, newline='') as f:
    return [r for r in csv.DictReader(f) if (r.get('round') or '').isdigit()]


# ---------------------------------------------------------------------------------------------
# Outputs.


def trial_rows(study, spec: StudySpec) -> list['collections.OrderedDict[str, Any]']:
  """One row per trial, as trials.csv holds them."""
  rows = []
  for t in study.get_trials(deepcopy=False):
    row = collections.OrderedDict(number=t.number, state=t.state.name, value=t.value)
    row['last_reported'] = (t.intermediate_values[max(t.intermediate_values)]
                            if t.intermediate_values else None)
    for name in spec.space:
      row[name] = t.params.get(name)
    row['rounds_run'] = t.user_attrs.get('rounds_run')
    row['diverged'] = bool(t.user_attrs.get('diverged', False))
    row['interrupted'] = bool(t.user_attrs.get('interrupted', False))
    row['resumes_trial'] = t.user_attrs.get('resumes_trial')  # an interrupted one, in its dir
    row['duration_s'] = (round(t.duration.total_seconds(), 2) if t.duration else None)
    row['experiment_dir'] = t.user_attrs.get('experiment_dir')
    rows.append(row)
  return rows


def write_outputs(study, spec: StudySpec, study_dir: str) -> dict:
  """Writes trials.csv, history.png, importances.png and (with a complete trial) best_config.py."""
  import optuna  # pylint: disable=g-import-not-at-top
  files = {}
  rows = trial_rows(study, spec)
  files['trials'] = os.path.join(study_dir, 'trials.csv')
  with open(files['trials'], 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ['number'])
    writer.writeheader()
    writer.writerows(rows)
  complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
  if complete:
    files['best_config'] = write_best_config(study.best_trial, spec, study_dir)
  files['history'] = plot_history(study, spec, os.path.join(study_dir, 'history.png'))
  files['importances'] = plot_importances(study, spec, os.path.join(study_dir, 'importances.png'))
  return files


def write_best_config(trial, spec: StudySpec, study_dir: str) -> str:
  """The best trial's settings (its saved config.json) as a tff-lab-run config file."""
  from tff_lab.flags import config_file  # pylint: disable=g-import-not-at-top
  with open(os.path.join(trial.user_attrs['experiment_dir'], 'config.json')) as f:
    saved = json.load(f)
  settings = config_file.flag_settings(saved)
  for key in ('root_output_dir', 'experiment_name'):
    settings.pop(key, None)
  params = ', '.join(f'{k}={v!r}' for k, v in trial.params.items())
  path = os.path.join(study_dir, 'best_config.py')
  doc = (f'The best trial (number {trial.number}) of the tff-lab-tune study in {study_dir}:\n'
         f'{spec.metric} = {trial.value!r} ({spec.direction}d) with {params}.\n\n'
         f'  tff-lab-run --config={path}\n\ntrains it anew (in runs/, named after its settings); '
         f'the trial itself is {trial.user_attrs["experiment_dir"]}.\n')
  with open(path, 'w') as f:
    f.write(config_file.config_file_text(settings, doc))
  return path


def _figure():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def plot_history(study, spec: StudySpec, path: str) -> str:
  """Each trial's value (pruned ones at their last reported value) and the best so far."""
  import optuna  # pylint: disable=g-import-not-at-top
  plt = _figure()
  fig, ax = plt.subplots(figsize=(7, 4))
  states = optuna.trial.TrialState
  complete = [t for t in study.get_trials(deepcopy=False) if t.state == states.COMPLETE]
  pruned = [t for t in study.get_trials(deepcopy=False)
            if t.state == states.PRUNED and t.intermediate_values]
  if complete:
    numbers = [t.number for t in complete]
    values = [t.value for t in complete]
    pick = np.minimum.accumulate if spec.direction == 'minimize' else np.maximum.accumulate
    ax.plot(numbers, values, 'o', color='tab:blue', label='complete trial')
    ax.step(numbers, pick(np.array(values)), where='post', color='tab:red', label='best so far')
  if pruned:
    ax.plot([t.number for t in pruned],
            [t.intermediate_values[max(t.intermediate_values)] for t in pruned], 'x',
            color='0.5', label='pruned (last reported)')
  if not complete and not pruned:
    ax.text(0.5, 0.5, 'no trial has a value yet', ha='center', va='center',
            transform=ax.transAxes)
  values = [t.value for t in complete] + [t.intermediate_values[max(t.intermediate_values)]
                                          for t in pruned]
  if values and min(values) > 0 and max(values) / min(values) > 100:
    ax.set_yscale('log')  # a diverging trial would flatten the others
  ax.xaxis.get_major_locator().set_params(integer=True)
  ax.set_xlabel('trial')
  ax.set_ylabel(spec.metric)
  ax.set_title(f'{study.study_name}: optimisation history ({spec.direction})')
  if complete or pruned:
    ax.legend(loc='best', fontsize='small')
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def param_importances(study) -> Optional['collections.OrderedDict[str, float]']:
  """Optuna's parameter importances, or None when they cannot be computed (fewer than two
  complete trials, or no parameter that varies)."""
  import optuna  # pylint: disable=g-import-not-at-top
  complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
  if len(complete) < 2:
    return None
  try:
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)  # its forest: reproducible
    return collections.OrderedDict(optuna.importance.get_param_importances(study,
                                                                           evaluator=evaluator))
  except (RuntimeError, ValueError):
    return None


def plot_importances(study, spec: StudySpec, path: str) -> str:
  """A bar per parameter (importance), or a note saying why there is none yet."""
  plt = _figure()
  importances = param_importances(study)
  fig, ax = plt.subplots(figsize=(7, 1.8 + 0.5 * max(1, len(spec.space))))
  if importances:
    names = list(importances)[::-1]
    ax.barh(names, [importances[n] for n in names], color='tab:blue')
    ax.set_xlabel(f'importance for {spec.metric} (fANOVA)')
    ax.set_xlim(0, 1)
  else:
    ax.text(0.5, 0.5, 'importances need at least two complete trials', ha='center', va='center',
            transform=ax.transAxes)
    ax.set_axis_off()
  ax.set_title(f'{study.study_name}: parameter importances')
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path
