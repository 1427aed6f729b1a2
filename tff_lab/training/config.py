"""An experiment's settings, their validation, and its output directory.

`ExperimentConfig` is what the experiment binary builds from flags and what a notebook builds by
hand. `validate()` catches every bad value that needs no data, and `validate_against_task()` the
ones that need the task's client count; both run before any TFF tracing, and each problem is one
`ConfigError` line naming the setting.

The experiment directory's I/O (config.json and what may change on resuming, summary.json,
history.jsonl, default directory names) is `tff_lab.training.experiment_dir`; its
`prepare_experiment_dir`, `check_saved_plugins` and `RESUMABLE_KEYS` are re-exported here.
"""

import collections
import dataclasses
import os
from typing import Any, Optional

from tff_lab import aggregators
from tff_lab.aggregators import registry as aggregators_registry
# Before faults: faults.simulation -> algorithms -> scaffold -> simulation.plan -> faults is a
# cycle that only resolves when the algorithms are imported first.
from tff_lab.algorithms import optimizers as optimizers_lib
from tff_lab.algorithms import registry as algorithms_registry
from tff_lab.algorithms import schedules
from tff_lab import faults as faults_lib
from tff_lab import plugins as plugins_lib
from tff_lab import runtime
from tff_lab.privacy import release as release_lib
from tff_lab.simulation import asynchronous
from tff_lab.simulation import backends
from tff_lab.simulation import sampling as sampling_lib
from tff_lab.tasks import registry as tasks_registry


class ConfigError(ValueError):
  """A setting is invalid; the message names it."""


# After ConfigError: experiment_dir imports this module for it. Re-exported for their callers.
# pylint: disable=g-import-not-at-top,wrong-import-position,unused-import
from tff_lab.training.experiment_dir import RESUMABLE_KEYS
from tff_lab.training.experiment_dir import _comparable
from tff_lab.training.experiment_dir import check_saved_plugins
from tff_lab.training.experiment_dir import prepare_experiment_dir
# pylint: enable=g-import-not-at-top,wrong-import-position,unused-import


@dataclasses.dataclass
class ExperimentConfig:
  """Settings of one federated training run.

  Attributes:
    task: Registered task name.
    task_options: Options of the task builder (see `tff_lab.tasks.task_options`).
    algorithm: One of `tff_lab.algorithms.ALGORITHMS`.
    client_optimizer / client_learning_rate / client_optimizer_hparams: Local optimiser.
    server_optimizer / server_learning_rate / server_optimizer_hparams: Server optimiser.
    client_lr_schedule / server_lr_schedule: Per-round learning-rate schedules: the settings
      of `tff_lab.algorithms.schedules.LearningRateSchedule` that differ from its defaults
      (`{'schedule': 'step', 'decay_rate': 0.1, 'decay_rounds': 50}`; empty: constant).
    algorithm_hparams: The algorithm's hyperparameters that differ from its defaults, by name
      (its spec's `hparams`, e.g. `{'mu': 1.0}` for FedProx; `--<name>` flags).
    rounds: Total number of rounds.
    clients_per_round: Clients sampled (uniformly, without replacement) each round.
    client_epochs / client_batch_size / client_max_elements / client_shuffle_buffer: The client
      preprocessing (TFF's ClientSpec).
    eval_every: Evaluate every k rounds (and after the last round); 0 disables evaluation.
    finetune_epochs / local_baseline_epochs: The per-client report
      (`tff_lab.evaluation.personalization`) also evaluates the global model fine-tuned this many
      local epochs on each test client, and compares every model with each client's model
      trained alone this many epochs from the initial model; 0: off. Evaluation only (they may
      change when resuming).
    checkpoint_every: Checkpoint every k rounds (and after the last round).
    seed: Seeds model initialisation, client sampling and client shuffling.
    root_output_dir / experiment_name: Output goes to `<root_output_dir>/<experiment_name>/`.
    byzantine_fraction / attack / attack_scale / dropout_fraction / straggler_fraction: Simulated
      attacks and faults (`tff_lab.faults`).
    aggregation: Aggregation settings that differ from `tff_lab.aggregators.AggregationSettings`'s
      defaults (aggregator, trim_fraction, clip_norm, compression, bits, dp, noise_multiplier,
      secure_aggregation, ...).
    dp_delta: δ of the ε reported each round with DP (default: population^-1.1).
    dp_metrics: Under DP, `withheld` (default) keeps the metrics the noise does not cover
      (training loss, accuracy, example counts, federated evaluation) in the process; `public`
      releases them, not covered by ε (`tff_lab.training.release`).
    client_sampling: `fixed` (clients_per_round of the clients, uniformly without replacement)
      or `poisson` (each client independently with probability clients_per_round / N; the
      sample size varies). ε is accounted for the scheme used.
    simulation: `auto` (default) picks the fastest backend that runs the configuration
      (`tff_lab.simulation.backends.resolve`: `fused` where it can, else `tff`) and logs which
      and why; `tff` runs each round through TFF's runtime; `fused` trains all sampled clients
      in one TF program, one after another (`tff_lab.algorithms.vectorized`; same results, the
      fastest on CPU); `vectorized` does too, batched over clients with `tf.vectorized_map`;
      `async` runs FedBuff's asynchronous aggregation on a simulated clock
      (`tff_lab.simulation.asynchronous`). Only `async` changes results.
    asynchrony: Asynchronous-simulation settings that differ from
      `tff_lab.simulation.asynchronous.AsyncSettings`'s defaults (concurrency, buffer_size,
      staleness, latency_*); the latency model also gives synchronous runs `simulated_time`.
    workers: `host:port` of TFF workers started with `tff-lab-worker`; empty: one managed local
      worker. Results equal a local run (to float32 round-off with 3+ workers).
    worker_timeout: Seconds to wait for a dead worker to come back before failing the round.
    max_concurrent_clients: Client computations run in parallel by the runtime (-1: no limit).
    overwrite: Delete an existing experiment directory instead of resuming from it.
    progress: Show a tqdm progress bar.
    model_aggregator: Set by `run_experiment` to the class (`module.QualName`) of a
      `model_aggregator` passed to it, so that config.json records it and resuming without it,
      or with another, is refused; empty otherwise. Not set by hand.
    plugins: Modules imported before anything else (`--plugin`, `tff_lab.plugins`), whose
      registrations (tasks, algorithms, aggregators) the run may use. Recorded in config.json;
      resuming with other plugins is refused.
  """

  task: str = 'digits'
  task_options: dict = dataclasses.field(default_factory=dict)
  algorithm: str = 'fedavg'
  client_optimizer: str = 'sgd'
  client_learning_rate: float = 0.1
  client_optimizer_hparams: dict = dataclasses.field(default_factory=dict)
  server_optimizer: str = 'sgd'
  server_learning_rate: float = 1.0
  server_optimizer_hparams: dict = dataclasses.field(default_factory=dict)
  client_lr_schedule: dict = dataclasses.field(default_factory=dict)
  server_lr_schedule: dict = dataclasses.field(default_factory=dict)
  algorithm_hparams: dict = dataclasses.field(default_factory=dict)
  rounds: int = 60
  clients_per_round: int = 10
  client_epochs: int = 1
  client_batch_size: int = 20
  client_max_elements: Optional[int] = None
  client_shuffle_buffer: int = 1000
  eval_every: int = 5
  finetune_epochs: int = 0
  local_baseline_epochs: int = 0
  checkpoint_every: int = 5
  seed: int = 0
  byzantine_fraction: float = 0.0
  attack: str = 'sign_flip'
  attack_scale: float = 1.0
  dropout_fraction: float = 0.0
  straggler_fraction: float = 0.0
  aggregation: dict = dataclasses.field(default_factory=dict)
  dp_delta: Optional[float] = None
  dp_metrics: str = 'withheld'
  client_sampling: str = 'fixed'
  simulation: str = 'auto'
  asynchrony: dict = dataclasses.field(default_factory=dict)
  root_output_dir: str = 'runs'
  experiment_name: str = 'experiment'
  workers: tuple = ()
  worker_timeout: float = 30.0
  max_concurrent_clients: int = -1
  overwrite: bool = False
  progress: bool = True
  plugins: tuple = ()
  model_aggregator: str = ''

  @property
  def faults(self) -> faults_lib.FaultConfig:
    return faults_lib.FaultConfig(
        byzantine_fraction=self.byzantine_fraction, attack=self.attack,
        attack_scale=self.attack_scale, dropout_fraction=self.dropout_fraction,
        straggler_fraction=self.straggler_fraction)

  def aggregation_settings(self) -> dict:
    """Keyword arguments of `tff_lab.aggregators.create_aggregator` for this experiment."""
    return dict(self.aggregation, clients_per_round=self.clients_per_round,
                num_dropped=self.faults.counts(self.clients_per_round)[1])

  @property
  def experiment_dir(self) -> str:
    return os.path.join(self.root_output_dir, self.experiment_name)

  def to_dict(self) -> 'collections.OrderedDict[str, Any]':
    return collections.OrderedDict(dataclasses.asdict(self))

  def validate(self) -> None:
    """Checks every setting that needs no data. Raises ConfigError naming the first problem.

    Section by section, in this order: the names (plugins first, since what they register is
    what the other settings name), the training loop's numbers, the algorithm, the aggregation
    and what is released, and the execution (workers, backend).
    """
    self._check_names()
    self._check_training()
    spec = algorithms_registry.get(self.algorithm)  # validation asks the spec, not the name
    self._check_algorithm(spec)
    self._check_aggregation(spec)
    self._check_execution()

  def _check_names(self) -> None:
    """Plugins, the task and its options, the algorithm, the optimisers and their settings."""
    try:  # first: what they register is what the other settings name
      plugins_lib.load(self.plugins)
    except plugins_lib.PluginError as e:
      raise ConfigError(str(e)) from None
    check_saved_plugins(self)
    try:
      known = tasks_registry.task_options(self.task)  # raises for an unknown task
      algorithms_registry.check_algorithm(self.algorithm)
      unknown = sorted(set(self.task_options) - set(known))
      if unknown:
        raise ConfigError(f'task {self.task!r} has no option(s) {unknown}; its options are '
                          f'{list(known)}')
      for role in ('client', 'server'):
        name = getattr(self, f'{role}_optimizer')
        if name not in optimizers_lib.optimizer_names():
          raise ConfigError(f'unknown {role} optimizer {name!r}; choose one of '
                            f'{optimizers_lib.optimizer_names()}')
        hparams = getattr(self, f'{role}_optimizer_hparams')
        bad = sorted(set(hparams) - set(optimizers_lib.optimizer_hparams(name)))
        if bad:
          raise ConfigError(f'{role} optimizer {name!r} has no hyperparameter(s) {bad}')
    except ConfigError:
      raise
    except ValueError as e:
      raise ConfigError(str(e)) from None

  def _check_training(self) -> None:
    """Rounds, clients, local work, rates, evaluation, checkpoints and the seed."""
    for name in ('rounds', 'clients_per_round', 'client_epochs', 'client_batch_size',
                 'checkpoint_every', 'client_shuffle_buffer'):
      _require(getattr(self, name) > 0, f'{name} must be positive, got {getattr(self, name)}')
    for name in ('client_learning_rate', 'server_learning_rate'):
      _require(getattr(self, name) > 0, f'{name} must be positive, got {getattr(self, name)}')
    _require(self.eval_every >= 0, f'eval_every must be >= 0 (0 disables), got {self.eval_every}')
    for name in ('finetune_epochs', 'local_baseline_epochs'):
      value = getattr(self, name)
      _require(isinstance(value, int) and not isinstance(value, bool) and value >= 0,
               f'{name} must be an integer >= 0 (0: off), got {value!r}')
      _require(value == 0 or self.eval_every > 0,
               f'{name}={value} is part of evaluation; it needs eval_every > 0')
    _require(isinstance(self.seed, int) and not isinstance(self.seed, bool)
             and 0 <= self.seed <= 2**32 - 1, f'seed must be an integer in [0, 2**32 - 1], got '
             f'{self.seed!r}')
    _require(self.client_max_elements is None or self.client_max_elements > 0,
             f'client_max_elements must be positive, got {self.client_max_elements}')

  def _check_algorithm(self, spec) -> None:
    """Its hyperparameters, the learning-rate schedules and the faults (what the algorithm
    supports is `spec.check_config`, asked by the backend check in `_check_execution`)."""
    _require(isinstance(self.algorithm_hparams, dict),
             f'algorithm_hparams must be a dict of hyperparameter values, got '
             f'{self.algorithm_hparams!r}')
    try:
      algorithms_registry.hparams_of(self)
    except ValueError as e:
      raise ConfigError(str(e)) from None
    self._check_schedules(spec)
    try:
      self.faults.validate(self.clients_per_round)
    except ValueError as e:
      raise ConfigError(str(e)) from None

  def _check_aggregation(self, spec) -> None:
    """The aggregation stack, a registered aggregator, and what a DP run releases."""
    try:
      aggregators.validate_aggregation_settings(**self.aggregation_settings())
    except TypeError:
      known = [f.name for f in dataclasses.fields(aggregators.AggregationSettings)]
      raise ConfigError(f'unknown aggregation setting(s) '
                        f'{sorted(set(self.aggregation) - set(known))}') from None
    except ValueError as e:
      raise ConfigError(str(e)) from None
    self._check_registered_aggregator(spec)
    _require(self.dp_metrics in release_lib.MODES,
             f'unknown dp_metrics {self.dp_metrics!r}; choose one of {list(release_lib.MODES)}')
    _require(self.client_sampling in sampling_lib.SCHEMES,
             f'unknown client_sampling {self.client_sampling!r}; choose one of '
             f'{list(sampling_lib.SCHEMES)}')
    _require(self.dp_delta is None or 0 < self.dp_delta < 1,
             f'dp_delta must be in (0, 1), got {self.dp_delta}')
    _require(self.dp_delta is None or self.aggregation.get('dp', 'none') != 'none',
             '--dp_delta only applies with --dp=fixed|adaptive')

  def _check_execution(self) -> None:
    """Workers, the asynchronous section, what the backend and the algorithm can run, and the
    experiment's name."""
    if self.workers:
      try:
        runtime.parse_workers(list(self.workers))
      except ValueError as e:
        raise ConfigError(str(e)) from None
      _require(self.max_concurrent_clients == -1,
               '--max_concurrent_clients applies to the local worker; with --workers set it on '
               'each tff-lab-worker')
    _require(self.worker_timeout > 0, f'worker_timeout must be positive, got {self.worker_timeout}')
    try:
      asynchronous.AsyncSettings.from_dict(self.asynchrony)
    except (TypeError, ValueError) as e:
      raise ConfigError(str(e)) from None
    try:  # what the backend this config selects, and the algorithm on it, cannot run
      backends.check(self)  # with --simulation=auto: that some backend can
    except ValueError as e:
      raise ConfigError(str(e)) from None
    _require(bool(self.experiment_name) and os.sep not in self.experiment_name,
             f'experiment_name must be a non-empty name without {os.sep!r}, '
             f'got {self.experiment_name!r}')

  def _check_schedules(self, spec) -> None:
    """The learning-rate schedules: valid settings, and a client one only where it applies."""
    for role in schedules.ROLES:
      settings = getattr(self, f'{role}_lr_schedule')
      _require(isinstance(settings, dict), f'{role}_lr_schedule must be a dict of schedule '
               f'settings, got {settings!r}')
      try:
        schedule = schedules.of_config(self, role)
      except (TypeError, ValueError) as e:
        raise ConfigError(str(e)) from None
      if role == 'client' and not schedule.is_constant:
        takers = [n for n in algorithms_registry.names()
                  if algorithms_registry.get(n).supports_client_lr_schedule]
        _require(spec.supports_client_lr_schedule,
                 f'--client_lr_schedule applies to --algorithm={"|".join(takers)}, not '
                 f'{self.algorithm} (schedule the server rate with --server_lr_schedule)')

  def _check_registered_aggregator(self, spec) -> None:
    """Builds a registered aggregator's factory (no tracing) to check its options and that it is
    of the kind the algorithm needs (weighted or not), before anything is written."""
    name = self.aggregation.get('aggregator', 'mean')
    if not aggregators_registry.is_registered(name):
      return
    if spec.build_runner is not None:  # as loop.check_model_aggregator: its own rounds
      raise ConfigError(f'--algorithm={self.algorithm} aggregates with its own rounds and cannot '
                        f'run --aggregator={name}')
    from tff_lab.training import loop  # pylint: disable=g-import-not-at-top  (loop imports us)
    try:
      aggregators_registry.build(name, loop.needs_weighted_aggregator(self),
                                 self.aggregation.get('aggregator_options'))
    except ValueError as e:
      raise ConfigError(f'{e} (--algorithm={self.algorithm})') from None

  def validate_against_task(self, num_train_clients: int, prediction_kind: str) -> None:
    """Checks the settings that depend on the task (still before any tracing)."""
    _require(self.clients_per_round <= num_train_clients,
             f'clients_per_round={self.clients_per_round} exceeds the {num_train_clients} '
             f'training clients of task {self.task!r}')
    _require(not (self.byzantine_fraction > 0 and self.attack == 'label_flip')
             or prediction_kind in faults_lib.LABEL_FLIP_KINDS,
             f'--attack=label_flip is defined for {list(faults_lib.LABEL_FLIP_KINDS)} labels; '
             f'task {self.task!r} predicts {prediction_kind!r}')


def _require(condition: bool, message: str) -> None:
  if not condition:
    raise ConfigError(message)
