"""The typed sections of an experiment's settings, each of which validates itself.

`tff_lab.training.ExperimentConfig` is made of these sections (it inherits their fields, so its
constructor, config.json and the grids keep one flat name per setting):

| section              | settings                                                        |
|----------------------|-----------------------------------------------------------------|
| `TaskSection`        | the task and its builder's options                              |
| `AlgorithmSection`   | the algorithm, its hyperparameters, optimisers and LR schedules |
| `TrainingSection`    | rounds, client sampling, local work, seed                       |
| `EvaluationSection`  | evaluation cadence and the per-client report                    |
| `FaultSection`       | simulated attacks, dropouts and stragglers                      |
| `AggregationSection` | the aggregation stack and what a DP run releases                |
| `SimulationSection`  | the backend, asynchrony and the TFF workers                     |
| `OutputSection`      | the experiment directory, checkpoints, progress and plugins     |

Each field is declared once, with `setting(default, help, ...)`: its default is the config's,
and its `help` and `choices` are its flag's, since tff-lab-run generates every flag from these
fields (`tff_lab.flags.section_flags`), so a flag's default cannot drift from the config's. A field
whose values come from flags generated elsewhere (task options, aggregation settings, ...) says
so with `flag=None`.

Each section has one `check_<section>()` that validates its own fields and raises `ConfigError`,
one line naming the setting; `ExperimentConfig.validate` runs them in the table's order, then the
checks that span sections (what the algorithm runs on the backend, the aggregator's kind).
"""

import dataclasses
import os
from typing import Any, Callable, Optional, Union

from tff_lab import aggregators
# Before faults: faults.simulation -> algorithms -> scaffold -> simulation.plan -> faults is a
# cycle that only resolves when the algorithms are imported first.
from tff_lab.algorithms import optimizers as optimizers_lib
from tff_lab.algorithms import registry as algorithms_registry
from tff_lab.algorithms import schedules
from tff_lab import faults as faults_lib
from tff_lab import runtime
from tff_lab.flags import common_flags
from tff_lab.privacy import release as release_lib
from tff_lab.simulation import asynchronous
from tff_lab.simulation import backends
from tff_lab.simulation import sampling as sampling_lib
from tff_lab.tasks import registry as tasks_registry

Choices = Union[tuple, Callable[[], Any], None]
_NO_FLAG = object()


class ConfigError(ValueError):
  """A setting is invalid; the message names it."""


def setting(default: Any = None, help: str = '', *,  # pylint: disable=redefined-builtin
            choices: Choices = None, flag: Any = _NO_FLAG, flag_default: Any = _NO_FLAG,
            default_factory: Optional[Callable[[], Any]] = None) -> Any:
  """A section field: its default, and its flag's help and choices.

  Args:
    default: The setting's default (and its flag's).
    help: One sentence for `--help`.
    choices: The values it takes, or a function returning them (a registry's names); listed in
      `--help`. Checking them is the section's `check_*`, so a bad one is one line.
    flag: The flag's name, when not the field's; `None` when the values come from flags defined
      elsewhere (the help says which).
    flag_default: The flag's default, when it stands for "derive it" (`--experiment_name`).
    default_factory: For a mutable default (a dict section); such a field has no flag of its own.
  """
  metadata = {'help': help, 'choices': choices}
  if flag is not _NO_FLAG:
    metadata['flag'] = flag
  if flag_default is not _NO_FLAG:
    metadata['flag_default'] = flag_default
  if default_factory is not None:
    metadata.setdefault('flag', None)
    return dataclasses.field(default_factory=default_factory, metadata=metadata)
  return dataclasses.field(default=default, metadata=metadata)


def choices_of(field: dataclasses.Field) -> Optional[tuple]:
  """The values a field takes, where the section lists them."""
  choices = field.metadata.get('choices')
  return tuple(choices()) if callable(choices) else choices


def require(condition: bool, message: str) -> None:
  """Raises ConfigError(message) unless `condition`."""
  if not condition:
    raise ConfigError(message)


def _one_of(section, name: str) -> None:
  """Refuses a value outside the field's choices, listing them."""
  field = next(f for f in dataclasses.fields(section) if f.name == name)
  value, choices = getattr(section, name), choices_of(field)
  require(value in choices, f'unknown {name} {value!r}; choose one of {list(choices)}')


def _positive(section, *names: str) -> None:
  for name in names:
    require(getattr(section, name) > 0, f'{name} must be positive, got {getattr(section, name)}')


def as_config_error(check: Callable[[], Any], errors=(ValueError,)) -> Any:
  """Runs `check`, turning the library's one-line errors into ConfigError."""
  try:
    return check()
  except ConfigError:
    raise
  except errors as e:
    raise ConfigError(str(e)) from None


@dataclasses.dataclass
class TaskSection:
  """The task: federated client datasets and a Keras model builder (`tff_lab.tasks`)."""

  task: str = setting('digits', 'Task name (tff_lab/tasks/).', choices=tasks_registry.task_names)
  task_options: dict = setting(
      help='Options of the task builder, by name (--<task>_<option> flags, from the builder\'s '
           'signature).', default_factory=dict)

  def check_task(self) -> None:
    """The task is registered and has these options."""
    known = as_config_error(lambda: tasks_registry.task_options(self.task))
    unknown = sorted(set(self.task_options) - set(known))
    require(not unknown, f'task {self.task!r} has no option(s) {unknown}; its options are '
             f'{list(known)}')


@dataclasses.dataclass
class AlgorithmSection:
  """The algorithm, its hyperparameters, the two optimisers and their learning-rate schedules."""

  algorithm: str = setting('fedavg', 'The algorithm (tff_lab/algorithms/spec.py); FedOpt is '
                           'fedavg with a non-SGD --server_optimizer.',
                           choices=algorithms_registry.names)
  algorithm_hparams: dict = setting(
      help='The algorithm\'s hyperparameters that differ from its defaults, by name (its spec\'s '
           'hparams; --<name> flags, e.g. --mu for FedProx).', default_factory=dict)
  client_optimizer: str = setting('sgd', 'The client (local) optimizer.',
                                  choices=optimizers_lib.optimizer_names)
  client_learning_rate: float = setting(0.1, 'Learning rate of the client optimizer.')
  client_optimizer_hparams: dict = setting(
      help='The client optimizer\'s hyperparameters (--client_<optimizer>_<hparam> flags).',
      default_factory=dict)
  server_optimizer: str = setting('sgd', 'The server optimizer (adam, yogi, adagrad, sgdm: FedOpt).',
                                  choices=optimizers_lib.optimizer_names)
  server_learning_rate: float = setting(1.0, 'Learning rate of the server optimizer.')
  server_optimizer_hparams: dict = setting(
      help='The server optimizer\'s hyperparameters (--server_<optimizer>_<hparam> flags).',
      default_factory=dict)
  client_lr_schedule: dict = setting(
      help='Per-round client learning-rate schedule: the settings of '
           'tff_lab.algorithms.schedules.LearningRateSchedule that differ from its defaults '
           '(--client_lr_* flags; empty: constant).', default_factory=dict)
  server_lr_schedule: dict = setting(
      help='The server learning-rate schedule (--server_lr_* flags).', default_factory=dict)

  def check_algorithm(self) -> None:
    """The algorithm, its hyperparameters, the optimisers, rates and schedules."""
    spec = as_config_error(lambda: algorithms_registry.get(self.algorithm))
    for role in ('client', 'server'):
      name = getattr(self, f'{role}_optimizer')
      require(name in optimizers_lib.optimizer_names(), f'unknown {role} optimizer {name!r}; '
               f'choose one of {optimizers_lib.optimizer_names()}')
      bad = sorted(set(getattr(self, f'{role}_optimizer_hparams'))
                   - set(optimizers_lib.optimizer_hparams(name)))
      require(not bad, f'{role} optimizer {name!r} has no hyperparameter(s) {bad}')
      _positive(self, f'{role}_learning_rate')
    require(isinstance(self.algorithm_hparams, dict),
             f'algorithm_hparams must be a dict of hyperparameter values, got '
             f'{self.algorithm_hparams!r}')
    as_config_error(lambda: spec.resolve_hparams(self.algorithm_hparams))
    for role in schedules.ROLES:
      settings = getattr(self, f'{role}_lr_schedule')
      require(isinstance(settings, dict), f'{role}_lr_schedule must be a dict of schedule '
               f'settings, got {settings!r}')
      schedule = as_config_error(lambda role=role: schedules.of_config(self, role),
                                  (TypeError, ValueError))
      if role == 'client' and not schedule.is_constant:
        takers = [n for n in algorithms_registry.names()
                  if algorithms_registry.get(n).supports_client_lr_schedule]
        require(spec.supports_client_lr_schedule,
                 f'--client_lr_schedule applies to --algorithm={"|".join(takers)}, not '
                 f'{self.algorithm} (schedule the server rate with --server_lr_schedule)')


@dataclasses.dataclass
class TrainingSection:
  """The rounds: how many, which clients, how much local work, and the seed."""

  rounds: int = setting(60, 'Number of federated rounds.')
  clients_per_round: int = setting(10, 'Clients sampled per round.')
  client_sampling: str = setting(
      'fixed', 'fixed: clients_per_round clients uniformly without replacement; poisson: each '
      'client with probability clients_per_round/N (the sample size varies; the tighter DP '
      'accounting).', choices=sampling_lib.SCHEMES)
  client_epochs: int = setting(1, 'Local epochs per round.')
  client_batch_size: int = setting(20, 'Local batch size.')
  client_max_elements: Optional[int] = setting(
      None, 'Cap on examples per client per round, after epochs (unset: none).')
  client_shuffle_buffer: int = setting(1000, 'Shuffle buffer of client datasets (1: no shuffle).')
  seed: int = setting(0, 'Seed of model initialisation, client sampling and shuffling, in '
                      '[0, 2**32 - 1].')

  def check_training(self) -> None:
    """Positive counts, a known sampling scheme and a seed NumPy takes."""
    _positive(self, 'rounds', 'clients_per_round', 'client_epochs', 'client_batch_size',
              'client_shuffle_buffer')
    _one_of(self, 'client_sampling')
    require(self.client_max_elements is None or self.client_max_elements > 0,
             f'client_max_elements must be positive, got {self.client_max_elements}')
    require(isinstance(self.seed, int) and not isinstance(self.seed, bool)
             and 0 <= self.seed <= 2**32 - 1, f'seed must be an integer in [0, 2**32 - 1], got '
             f'{self.seed!r}')


@dataclasses.dataclass
class EvaluationSection:
  """When the global model is evaluated, and what the per-client report adds
  (`tff_lab.evaluation.personalization`). These may change when resuming."""

  eval_every: int = setting(5, 'Evaluate every k rounds, and after the last round (0: never).')
  finetune_epochs: int = setting(
      0, 'Per-client report: also evaluate the global model after k local epochs on each test '
      'client\'s training split (0: off).')
  local_baseline_epochs: int = setting(
      0, 'Per-client report: the fraction of clients beating a model trained alone this many '
      'epochs from the initial model (0: off).')

  def check_evaluation(self) -> None:
    require(self.eval_every >= 0, f'eval_every must be >= 0 (0 disables), got {self.eval_every}')
    for name in ('finetune_epochs', 'local_baseline_epochs'):
      value = getattr(self, name)
      require(isinstance(value, int) and not isinstance(value, bool) and value >= 0,
               f'{name} must be an integer >= 0 (0: off), got {value!r}')
      require(value == 0 or self.eval_every > 0,
               f'{name}={value} is part of evaluation; it needs eval_every > 0')


_FAULT_DEFAULTS = faults_lib.FaultConfig()


@dataclasses.dataclass
class FaultSection:
  """Simulated attacks and faults, as fractions of each round's sampled clients
  (`tff_lab.faults`; defaults are `FaultConfig`'s)."""

  byzantine_fraction: float = setting(_FAULT_DEFAULTS.byzantine_fraction,
                                      'Fraction of each round\'s sampled clients that attack.')
  attack: str = setting(_FAULT_DEFAULTS.attack, 'The Byzantine clients\' attack.',
                        choices=faults_lib.ATTACKS)
  attack_scale: float = setting(_FAULT_DEFAULTS.attack_scale,
                                'c in -c*update (sign_flip), c*update (scale), N(0, c^2) '
                                '(gaussian).')
  dropout_fraction: float = setting(_FAULT_DEFAULTS.dropout_fraction,
                                    'Fraction of sampled clients that never report.')
  straggler_fraction: float = setting(_FAULT_DEFAULTS.straggler_fraction,
                                      'Fraction of sampled clients doing partial local work.')

  @property
  def faults(self) -> faults_lib.FaultConfig:
    """This section as the fault simulation's settings."""
    return faults_lib.FaultConfig(**{f.name: getattr(self, f.name)
                                     for f in dataclasses.fields(FaultSection)})

  def check_faults(self, clients_per_round: int) -> None:
    """Fractions in range that leave an honest client reporting out of `clients_per_round`."""
    as_config_error(lambda: self.faults.validate(clients_per_round))


@dataclasses.dataclass
class AggregationSection:
  """How the server combines the updates (`tff_lab.aggregators`), and what a DP run releases
  (`tff_lab.training.release`)."""

  aggregation: dict = setting(
      help='Aggregation settings that differ from tff_lab.aggregators.AggregationSettings\'s '
           'defaults (--aggregator, --clip_norm, --compression, --dp, --noise_multiplier, '
           '--secure_aggregation, ...).', default_factory=dict)
  dp_delta: Optional[float] = setting(
      None, 'δ of the ε reported each round with --dp (unset: population^-1.1).')
  dp_metrics: str = setting(
      'withheld', 'Under DP: withheld keeps the metrics the noise does not cover (training loss, '
      'accuracy, example counts, federated evaluation) out of metrics.csv, TensorBoard and '
      'summary.json; public releases them, not covered by ε.', choices=release_lib.MODES)

  def check_aggregation(self, clients_per_round: int, num_dropped: int) -> None:
    """The aggregation stack for rounds of `clients_per_round` clients, `num_dropped` of which
    never report, and the DP release settings."""
    try:
      aggregators.validate_aggregation_settings(**self.aggregation,
                                                clients_per_round=clients_per_round,
                                                num_dropped=num_dropped)
    except TypeError:
      known = [f.name for f in dataclasses.fields(aggregators.AggregationSettings)]
      raise ConfigError(f'unknown aggregation setting(s) '
                        f'{sorted(set(self.aggregation) - set(known))}') from None
    except ValueError as e:
      raise ConfigError(str(e)) from None
    _one_of(self, 'dp_metrics')
    require(self.dp_delta is None or 0 < self.dp_delta < 1,
             f'dp_delta must be in (0, 1), got {self.dp_delta}')
    require(self.dp_delta is None or self.aggregation.get('dp', 'none') != 'none',
             '--dp_delta only applies with --dp=fixed|adaptive')


@dataclasses.dataclass
class SimulationSection:
  """Which backend runs the rounds, the asynchronous simulation, and the TFF workers."""

  simulation: str = setting(
      'auto', 'auto: the fastest backend that runs the configuration (fused where it can, else '
      'tff; logged); tff: rounds through TFF\'s runtime; fused: all sampled clients\' local '
      'training in one TF program, one client after another (same results, fastest on CPU); '
      'vectorized: the same, batched over clients with tf.vectorized_map; async: FedBuff, '
      'buffered asynchronous aggregation on a simulated clock (--concurrency, --buffer_size, '
      '--staleness, --latency_*).', choices=backends.simulation_names)
  asynchrony: dict = setting(
      help='Asynchronous-simulation settings that differ from '
           'tff_lab.simulation.asynchronous.AsyncSettings\'s defaults (--concurrency, '
           '--buffer_size, --staleness, --latency_*); the latency model also gives synchronous '
           'runs simulated_time.', default_factory=dict)
  workers: tuple = setting((), 'TFF workers host:port,... started with tff-lab-worker; empty: '
                           'one managed local worker.')
  worker_timeout: float = setting(30.0, 'Seconds to wait for a dead worker to come back before '
                                  'failing the round.')
  max_concurrent_clients: int = setting(-1, 'Client computations the local worker runs in '
                                        'parallel (-1: no limit).')

  def check_simulation(self) -> None:
    """A known backend, valid asynchronous settings, and workers that parse."""
    _one_of(self, 'simulation')
    as_config_error(lambda: asynchronous.AsyncSettings.from_dict(self.asynchrony),
                     (TypeError, ValueError))
    if self.workers:
      as_config_error(lambda: runtime.parse_workers(list(self.workers)))
      require(self.max_concurrent_clients == -1,
               '--max_concurrent_clients applies to the local worker; with --workers set it on '
               'each tff-lab-worker')
    _positive(self, 'worker_timeout')


@dataclasses.dataclass
class OutputSection:
  """Where the run is written, how often it is checkpointed, and what it shows."""

  root_output_dir: str = setting('runs', 'Root of experiment directories.')
  experiment_name: str = setting(
      'experiment', 'Experiment directory name (default: <task>_<algorithm>_<server optimizer>_'
      '<hash of the other settings>, so the same command resumes its own run).',
      flag_default=None)
  checkpoint_every: int = setting(5, 'Checkpoint every k rounds, and after the last round.')
  overwrite: bool = setting(False, 'Delete an existing experiment directory instead of resuming '
                            'it.')
  progress: bool = setting(True, common_flags.PROGRESS_HELP)
  plugins: tuple = setting((), 'Modules imported before anything else, whose registrations '
                           '(tasks, algorithms, aggregators) the run may use (--plugin, '
                           'repeatable).', flag=None)
  model_aggregator: str = setting(
      '', 'Set by run_experiment to the class of a model_aggregator passed to it (resuming with '
      'another is refused); not set by hand.', flag=None)

  @property
  def experiment_dir(self) -> str:
    return os.path.join(self.root_output_dir, self.experiment_name)

  def check_output(self) -> None:
    _positive(self, 'checkpoint_every')
    require(bool(self.experiment_name) and os.sep not in self.experiment_name,
             f'experiment_name must be a non-empty name without {os.sep!r}, '
             f'got {self.experiment_name!r}')


# The sections in the order of `--help` and of validation, with their `--help` titles.
SECTIONS = (('task', TaskSection), ('algorithm', AlgorithmSection),
            ('training', TrainingSection), ('evaluation', EvaluationSection),
            ('faults', FaultSection), ('aggregation', AggregationSection),
            ('simulation', SimulationSection), ('output', OutputSection))
