"""Experiment directories: their default names, config.json, summary.json and history.jsonl.

The layout follows the training loop of Google Research's federated repository, used for Reddi et
al., "Adaptive Federated Optimization" (ICLR 2021): one directory per experiment under
`root_output_dir`, holding the run's settings, a metrics CSV and checkpoints. This module keeps
the records of that directory from ever contradicting each other:

* **config.json** holds the settings the directory was made with. Re-running with other settings
  is refused, naming each difference, unless only settings that cannot change what a round
  computes differ (`RESUMABLE_KEYS`: output location, concurrency, backend, workers, progress).
  Those are recorded per invocation in history.jsonl; config.json keeps the values it was made
  with. The one field it updates is `rounds`, the run's target: a resume may set it to any
  value not below the rounds already completed (a lower one is refused in one line, before
  anything is written).
* **history.jsonl** gets one line per invocation that got past the checks: its arguments
  (`argv` from the command line, None from Python) and the settings that differ from
  config.json (`changed`), the resumable settings it used (`settings`), its start and end time
  (UTC), tff_lab's version and git commit, the rounds it ran (`rounds_from` -> `rounds_to`), its
  wall time, and how it ended (`status`: finished, diverged, interrupted, failed; `exit_code` as
  tff-lab-run exits; `error`). A line whose process was killed (SIGKILL: no chance to write) stays
  `running` until the next invocation marks it `killed`, with the rounds and time it reached.
* **summary.json** is rewritten after every round, so it always agrees with metrics.csv:
  `rounds_completed` is the CSV's last round and `final_metrics` the last value of each CSV column.
  Its `config` is config.json's; `status` is how the latest invocation ended (`running` while it
  trains); `wall_seconds` is the wall time summed over every invocation, `invocations` their count
  and `last_invocation` the latest one's history entry; `resumed_from_round` is the round the
  latest invocation started from. An invocation with no round left to train (a finished run
  re-run) keeps the run's curves.png and final_model.keras as they are.

Default directory names (`default_experiment_name`) are `<task>_<algorithm>_<server optimizer>_
<hash>`, the hash taken over every other setting that config.json compares but the plugins (at
non-default values only, so a setting added later with a default does not rename existing runs). Distinct experiments
never share a directory, and re-running the same command (with any resumable setting changed)
resumes its own.
"""

import collections
import copy
import datetime
import hashlib
import json
import math
import os
import shutil
import subprocess
import time
from typing import Any, Optional, Sequence

from tff_lab.algorithms import registry as algorithms_registry
from tff_lab.metrics import writers
from tff_lab.training import checkpoint
# config imports this module for its re-exports; its names are only used at call time.
from tff_lab.training import config as config_lib

# Settings that may differ when resuming: they do not change what is computed per round.
RESUMABLE_KEYS = ('rounds', 'root_output_dir', 'experiment_name', 'max_concurrent_clients',
                  'overwrite', 'progress', 'simulation', 'workers', 'worker_timeout',
                  'finetune_epochs', 'local_baseline_epochs')

CONFIG_FILENAME = 'config.json'
# The same settings as a tff-lab-run config file (tff_lab.flags.config_file): --config=<it>
# repeats the run.
CONFIG_FILE_FILENAME = 'config.py'
# What final_model.keras takes and predicts (input shape, dtype, preprocessing).
MODEL_CARD_FILENAME = 'final_model.json'
SUMMARY_FILENAME = 'summary.json'
HISTORY_FILENAME = 'history.jsonl'
METRICS_FILENAME = 'metrics.csv'

# How an invocation ended, as tff-lab-run's exit codes (tff_lab/cli.py).
_EXIT_CODES = {'ConfigError': 2, 'NonFiniteLossError': 3, 'WorkerError': 4, 'SecAggError': 5,
               'KeyboardInterrupt': 130}
_STATUS = {'NonFiniteLossError': 'diverged', 'KeyboardInterrupt': 'interrupted'}


def _comparable(config: dict) -> dict:
  """The settings of a config.json (or `to_dict()`) that must match to resume, normalised."""
  # A config.json from before a setting existed ran with that setting's default.
  config = dict(_normalised(config_lib.ExperimentConfig()), **config)
  hparams = dict(config['algorithm_hparams'])
  if 'mu' in config:  # before algorithm_hparams, FedProx's mu was a setting of its own
    hparams.setdefault('mu', config.pop('mu'))
  try:  # a hyperparameter given at its default computes the same as one left out
    defaults = algorithms_registry.get(config.get('algorithm')).hparams
  except ValueError:
    defaults = {}
  config['algorithm_hparams'] = {k: v for k, v in sorted(hparams.items())
                                 if not (k in defaults and v == defaults[k].default)
                                 and not (k == 'mu' and k not in defaults and v == 0)}
  # Backends compute the same rounds, and `simulation` may change on resuming, but not to or
  # from asynchronous rounds.
  config['asynchronous (--simulation=async)'] = config.get('simulation') == 'async'
  return {k: v for k, v in config.items() if k not in RESUMABLE_KEYS}


def _normalised(config: 'config_lib.ExperimentConfig') -> dict:
  """`config.to_dict()` as it reads back from JSON (tuples -> lists etc.)."""
  return json.loads(json.dumps(config.to_dict()))


def _read_json(path: str) -> Optional[Any]:
  """The JSON value in `path`, or None if it is missing or unreadable."""
  try:
    with open(path, encoding='utf-8') as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _write_json(path: str, value: Any) -> None:
  """Writes `value` to `path` atomically (temp file, rename)."""
  tmp = path + '.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    json.dump(value, f, indent=2)
  os.replace(tmp, path)


def _write_config(exp_dir: str, settings: dict) -> None:
  """Writes config.json and config.py (atomically, each) from the run's settings."""
  from tff_lab.flags import config_file  # pylint: disable=g-import-not-at-top  (absl, ml_collections)
  _write_json(os.path.join(exp_dir, CONFIG_FILENAME), settings)
  path = os.path.join(exp_dir, CONFIG_FILE_FILENAME)
  text = config_file.config_file_text(
      config_file.flag_settings(settings),
      f'The settings of the run in this directory (its config.json), as a tff-lab-run config\n'
      f'file: `tff-lab-run --config={path}` repeats it (add --experiment_name=... for a new\n'
      f'directory, or --seed=... for another seed).\n')
  with open(path + '.tmp', 'w', encoding='utf-8') as f:
    f.write(text)
  os.replace(path + '.tmp', path)


def write_model_card(exp_dir: str, task) -> str:
  """Writes final_model.json beside final_model.keras: what the model takes (its input shape and
  dtype, and how raw inputs become them, `Task.input_preprocessing`) and what it predicts."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (this module is I/O only)
  spec = task.element_spec
  spec = spec['x'] if isinstance(spec, dict) and 'x' in spec else tf.nest.flatten(spec)[0]
  card = collections.OrderedDict(
      task=task.name, description=task.description,
      input_shape=[None if d is None else int(d) for d in spec.shape], input_dtype=spec.dtype.name,
      input_preprocessing=dict(task.input_preprocessing or {
          'description': 'the features exactly as the task\'s client datasets hold them'}),
      prediction_kind=task.prediction_kind)
  if task.label_names:
    card['label_names'] = {str(k): v for k, v in task.label_names.items()}
  path = os.path.join(exp_dir, MODEL_CARD_FILENAME)
  _write_json(path, card)
  return path


def default_experiment_name(config: 'config_lib.ExperimentConfig') -> str:
  """`<task>_<algorithm>_<server_optimizer>_<8 hex digits>`: the directory name of `config`.

  The hash is SHA-256 over the comparable settings (`_comparable`, so never a resumable one) other
  than those three and the plugins, at values that differ from their defaults (the
  `ExperimentConfig` field's, the task builder's option, the optimiser's hyperparameter), in
  canonical JSON.
  """
  settings = _comparable(_normalised(config))
  defaults = _comparable(_normalised(config_lib.ExperimentConfig()))
  for key in ('task', 'algorithm', 'server_optimizer', 'plugins'):
    settings.pop(key, None)
  try:
    from tff_lab.tasks import registry as tasks_registry  # pylint: disable=g-import-not-at-top
    option_defaults = json.loads(json.dumps(tasks_registry.task_options(config.task)))
  except (ValueError, TypeError):  # an unknown task: validate() reports it
    option_defaults = {}
  settings['task_options'] = {k: v for k, v in settings['task_options'].items()
                              if k not in option_defaults or option_defaults[k] != v}
  from tff_lab.algorithms import optimizers  # pylint: disable=g-import-not-at-top
  for role in ('client', 'server'):
    key = f'{role}_optimizer_hparams'
    try:
      hparam_defaults = optimizers.optimizer_hparams(getattr(config, f'{role}_optimizer'))
    except ValueError:
      hparam_defaults = {}
    settings[key] = {k: v for k, v in settings[key].items()
                     if k not in hparam_defaults or hparam_defaults[k] != v}
  identity = {k: v for k, v in settings.items() if k not in defaults or defaults[k] != v}
  digest = hashlib.sha256(json.dumps(identity, sort_keys=True, separators=(',', ':'))
                          .encode()).hexdigest()
  return f'{config.task}_{config.algorithm}_{config.server_optimizer}_{digest[:8]}'


def completed_rounds(exp_dir: str) -> int:
  """The rounds a run directory holds: its newest checkpoint's round or metrics.csv's last row."""
  done = checkpoint.latest_checkpoint(os.path.join(exp_dir, 'checkpoints')) or 0
  path = os.path.join(exp_dir, METRICS_FILENAME)
  if os.path.exists(path):
    rounds = [int(r['round']) for r in writers.CSVMetricsWriter(path).rows()]
    done = max([done] + rounds)
  return done


def check_saved_plugins(config: 'config_lib.ExperimentConfig') -> None:
  """Refuses, in one line, to resume a run made with other `--plugin` modules (read-only).

  Checked before anything the plugins register is looked up, so that re-running without a
  plugin names the plugin rather than its unknown task or aggregator. Without a (readable)
  config.json, or with `overwrite`, there is nothing to check here.
  """
  if config.overwrite:
    return
  saved = _read_json(os.path.join(config.experiment_dir, CONFIG_FILENAME))
  if not isinstance(saved, dict):  # no run yet; a damaged file is prepare_experiment_dir's
    return
  old, new = list(saved.get('plugins') or []), list(config.plugins)
  if old != new:
    hint = ' '.join(f'--plugin={p}' for p in old) or 'no --plugin'
    raise config_lib.ConfigError(
        f'experiment directory {config.experiment_dir!r} holds a run with other plugins '
        f'(plugins: saved {old!r}, given {new!r}). To resume it, re-run with {hint}; to start '
        'over pass --overwrite; or choose another --experiment_name.')


def _read_saved_config(config_path: str, exp_dir: str) -> dict:
  try:
    with open(config_path, encoding='utf-8') as f:
      saved = json.load(f)
    if not isinstance(saved, dict):
      raise ValueError(f'it holds a JSON {type(saved).__name__}, not an object')
  except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
    raise config_lib.ConfigError(
        f'{config_path} cannot be read ({e}), so the run in {exp_dir!r} cannot be checked for '
        'resuming: restore the file to resume, pass --overwrite to start over, or choose another '
        '--experiment_name') from None
  return saved


def prepare_experiment_dir(config: 'config_lib.ExperimentConfig') -> str:
  """Creates (or checks, to resume) the experiment directory and its config.json.

  A new directory gets config.json from `config`. An existing one keeps its config.json, whose
  `rounds` alone is set to `config.rounds` (when it differs).

  Returns:
    The experiment directory.

  Raises:
    ConfigError: If the directory cannot be written, its config.json cannot be read (damaged),
      it holds a run with other settings, or `config.rounds` is below the rounds it has already
      completed. Nothing in the directory is changed then.
  """
  exp_dir = config.experiment_dir
  config_path = os.path.join(exp_dir, CONFIG_FILENAME)
  if config.overwrite and os.path.isdir(exp_dir):
    shutil.rmtree(exp_dir)
  try:
    os.makedirs(exp_dir, exist_ok=True)
    probe = os.path.join(exp_dir, '.write_probe')
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise config_lib.ConfigError(f'output directory {exp_dir!r} is not writable: '
                                 f'{e.strerror or e}') from None
  current = _normalised(config)
  if not os.path.exists(config_path):
    _write_config(exp_dir, current)
    return exp_dir
  saved = _read_saved_config(config_path, exp_dir)
  old, new = _comparable(saved), _comparable(current)
  diffs = [f'{k}: saved {old.get(k)!r}, given {new.get(k)!r}'
           for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
  if diffs:
    raise config_lib.ConfigError(
        f'experiment directory {exp_dir!r} holds a run with other settings '
        f'({"; ".join(diffs)}). To resume it, re-run with its saved settings (config.json); '
        'to start over pass --overwrite; or choose another --experiment_name.')
  done = completed_rounds(exp_dir)
  if config.rounds < done:
    raise config_lib.ConfigError(
        f'--rounds={config.rounds} is below the {done} rounds the run in {exp_dir!r} has '
        f'completed, and a run cannot be shortened: pass --rounds={done} or more to resume or '
        'extend it, --overwrite to start over, or choose another --experiment_name')
  if saved.get('rounds') != config.rounds:
    _write_config(exp_dir, dict(saved, rounds=config.rounds))
  return exp_dir


def _utc_now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')


def _source_version() -> 'collections.OrderedDict[str, Any]':
  """tff_lab's version and, when it runs from a git checkout, the commit (and local changes)."""
  import tff_lab  # pylint: disable=g-import-not-at-top
  out = collections.OrderedDict(tff_lab_version=getattr(tff_lab, '__version__', None),
                                git_commit=None, git_dirty=None)
  root = os.path.dirname(os.path.dirname(os.path.abspath(tff_lab.__file__)))
  if not os.path.exists(os.path.join(root, '.git')):
    return out
  try:
    commit = subprocess.run(['git', '-C', root, 'rev-parse', 'HEAD'], capture_output=True,
                            text=True, timeout=10, check=True).stdout.strip()
    status = subprocess.run(['git', '-C', root, 'status', '--porcelain', '--untracked-files=no'],
                            capture_output=True, text=True, timeout=10, check=True).stdout
  except (OSError, subprocess.SubprocessError):
    return out
  out['git_commit'], out['git_dirty'] = commit or None, bool(status.strip())
  return out


def _read_history(path: str) -> list[dict]:
  """The entries of history.jsonl (a line cut short by a kill is dropped)."""
  if not os.path.exists(path):
    return []
  entries = []
  with open(path, encoding='utf-8') as f:
    for line in f:
      try:
        entry = json.loads(line)
      except ValueError:
        continue
      if isinstance(entry, dict):
        entries.append(entry)
  return entries


def _write_history(path: str, entries: Sequence[dict]) -> None:
  tmp = path + '.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    for entry in entries:
      f.write(json.dumps(entry) + '\n')
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def _csv_value(text: str) -> Optional[Any]:
  """A metrics.csv cell as the number it was written from (None: empty or not a number)."""
  for kind in (int, float):
    try:
      value = kind(text)
    except (TypeError, ValueError):
      continue
    return value if math.isfinite(value) else None
  return None


def _is_number(value: Any) -> bool:
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value))


class RunRecord:
  """The records of one invocation on an experiment directory: history.jsonl and summary.json.

  Making one appends the invocation to history.jsonl (closing the entries of killed ones).
  `restored` (metrics.csv truncated to the checkpoint resumed from), `round_done` (a round's row
  written) and `checkpointed` rewrite summary.json; `finish` records how the invocation ended, in
  both files. summary.json's `rounds_completed` and `final_metrics` are read from metrics.csv
  when the record is made and on `restored`, and follow its rows after that.

  Args:
    config: This invocation's settings (prepare_experiment_dir has accepted them).
    argv: The command line, if the invocation came from one.
  """

  def __init__(self, config: 'config_lib.ExperimentConfig',
               argv: Optional[Sequence[str]] = None):
    self.exp_dir = config.experiment_dir
    self._summary_path = os.path.join(self.exp_dir, SUMMARY_FILENAME)
    self._history_path = os.path.join(self.exp_dir, HISTORY_FILENAME)
    self._started = time.time()
    self.saved_config = _read_json(os.path.join(self.exp_dir, CONFIG_FILENAME)) or {}
    previous = _read_json(self._summary_path)
    self.previous_summary = previous if isinstance(previous, dict) else {}
    self._history = self._close_killed(_read_history(self._history_path))
    current = _normalised(config)
    self.entry = collections.OrderedDict(
        invocation=len(self._history) + 1, status='running', started=_utc_now(), ended=None,
        argv=list(argv) if argv is not None else None,
        changed={k: v for k, v in current.items() if self.saved_config.get(k) != v},
        settings={k: current[k] for k in RESUMABLE_KEYS
                  if k in current and k not in ('root_output_dir', 'experiment_name')},
        **_source_version(), rounds_from=None, rounds_to=None, wall_seconds=0.0, exit_code=None,
        error=None)
    self._history.append(self.entry)
    _write_history(self._history_path, self._history)
    self.task: Optional[dict] = None
    self.privacy: Optional[dict] = None
    self.files: list[str] = []
    self.checkpoint_round = checkpoint.latest_checkpoint(os.path.join(self.exp_dir, 'checkpoints'))
    self._read_metrics()

  @property
  def previously_finished(self) -> bool:
    """Whether summary.json said the run was finished before this invocation."""
    # A summary.json from before `status` was only written when the run finished.
    return bool(self.previous_summary) and self.previous_summary.get('status',
                                                                     'finished') == 'finished'

  def _close_killed(self, history: list[dict]) -> list[dict]:
    """Marks entries left `running` by a process that was killed, from summary.json's copy."""
    last = self.previous_summary.get('last_invocation')
    for i, entry in enumerate(history):
      if entry.get('status') != 'running':
        continue
      if isinstance(last, dict) and last.get('invocation') == entry.get('invocation'):
        entry = dict(entry, **{k: last[k] for k in ('rounds_from', 'rounds_to', 'wall_seconds')
                               if k in last})
        entry['ended'] = last.get('updated')
      history[i] = dict(entry, status='killed')
    return history

  def _read_metrics(self) -> None:
    """`rounds_completed` and `final_metrics` from metrics.csv: its last round, and the last
    value of each of its columns."""
    self.final_metrics: 'collections.OrderedDict[str, Any]' = collections.OrderedDict()
    self.rounds_completed = 0
    path = os.path.join(self.exp_dir, METRICS_FILENAME)
    for row in writers.CSVMetricsWriter(path).rows() if os.path.exists(path) else []:
      self.rounds_completed = int(row['round'])
      for key, text in row.items():
        value = _csv_value(text)
        if key != 'round' and value is not None:
          self.final_metrics[key] = value

  def restored(self, start_round: int, task_summary: dict) -> None:
    """The run resumes after `start_round` (its checkpoint), metrics.csv truncated to it."""
    self.task = task_summary
    self.entry['rounds_from'] = self.entry['rounds_to'] = start_round
    self.checkpoint_round = start_round
    self._read_metrics()
    self.write_summary()

  def round_done(self, round_num: int, metrics: dict) -> None:
    """Round `round_num`'s row (`metrics`) is in metrics.csv."""
    self.rounds_completed = self.entry['rounds_to'] = round_num
    self.final_metrics.update((k, v) for k, v in metrics.items() if _is_number(v))
    self.write_summary()

  def checkpointed(self, round_num: int) -> None:
    """Round `round_num`'s checkpoint is written."""
    self.checkpoint_round = round_num
    self.write_summary()

  def finish(self, status: str = 'finished', error: Optional[BaseException] = None) -> dict:
    """Records how the invocation ended (history.jsonl and summary.json); returns the summary."""
    self.entry['status'] = status
    self.entry['ended'] = _utc_now()
    if error is None:
      self.entry['exit_code'] = 0
    else:
      name = type(error).__name__
      code = error.code if isinstance(error, SystemExit) else _by_class(error, _EXIT_CODES, 1)
      self.entry['exit_code'] = code
      message = ' '.join(str(error).split())
      self.entry['error'] = f'{name}: {message}' if message else name
    summary = self.write_summary()
    _write_history(self._history_path, self._history)
    return summary

  def write_summary(self) -> 'collections.OrderedDict[str, Any]':
    """Writes summary.json from this record (atomically); returns it."""
    self.entry['wall_seconds'] = time.time() - self._started
    self.entry['updated'] = _utc_now()
    previous_wall = sum(e.get('wall_seconds') or 0.0 for e in self._history[:-1])
    summary = collections.OrderedDict(
        status=self.entry['status'],
        config=self.saved_config,
        task=self.task if self.task is not None else self.previous_summary.get('task'),
        rounds_completed=self.rounds_completed, last_checkpoint_round=self.checkpoint_round,
        resumed_from_round=self.entry['rounds_from'],
        wall_seconds=previous_wall + self.entry['wall_seconds'],
        invocations=len(self._history), last_invocation=copy.deepcopy(self.entry),
        final_metrics=collections.OrderedDict(self.final_metrics))
    if self.privacy is not None:
      summary['privacy'] = self.privacy
    summary['files'] = [METRICS_FILENAME, 'metrics.jsonl', 'tensorboard/', 'curves.png',
                        SUMMARY_FILENAME, HISTORY_FILENAME, 'final_model.keras', MODEL_CARD_FILENAME,
                        'checkpoints/', CONFIG_FILENAME, CONFIG_FILE_FILENAME,
                        *self.files]
    _write_json(self._summary_path, summary)
    return summary


def _by_class(error: BaseException, table: dict, default: Any) -> Any:
  """`table`'s value for the nearest class of `error` it names (by name), else `default`."""
  for cls in type(error).__mro__:
    if cls.__name__ in table:
      return table[cls.__name__]
  return default


def status_of(error: BaseException) -> str:
  """The history status of an invocation that stopped with `error`."""
  return _by_class(error, _STATUS, 'failed')
