"""Command-line entry points (console scripts) over the library.

`tff-lab-run` (also `python experiments/run_experiment.py`) runs one federated training
experiment from absl flags. Flags map one-to-one onto `tff_lab.training.ExperimentConfig`; task
options come from `--<task>_<option>` flags and optimiser settings from `--client_*`/`--server_*`
flags, both generated from builder signatures, and algorithm hyperparameters from `--<name>` flags
generated from the algorithm specs (`tff_lab.flags`).

`--plugin=my_package.my_module` (repeatable) imports a module of yours before the flags are
parsed (`tff_lab.plugins`): the tasks, algorithms and aggregators it registers get their flags
(`--<task>_<option>`, `--<aggregator>_<option>`) and can be selected. `run_experiment_app` scans
`sys.argv` for it first; `load_plugins()` does the same for the other binaries built on these
flags (experiments/run_grid.py).

Exit codes: 0 success, 2 invalid input (one line on stderr, before any TFF tracing), 3 training
diverged (non-finite loss; the last good checkpoint is kept), 4 a remote worker failed (named;
checkpoints are kept, re-running resumes), 5 a secure-aggregation round failed, 130 interrupted
(Ctrl-C: one line naming the round reached; re-running resumes).
"""

import dataclasses
import os
import sys

from absl import app
from absl import flags
from absl import logging

from tff_lab import plugins
from tff_lab import runtime
from tff_lab.flags import aggregation_flags
from tff_lab.flags import async_flags
from tff_lab.flags import algorithm_flags
from tff_lab.flags import common_flags
from tff_lab.flags import section_flags
from tff_lab.privacy import secagg
from tff_lab.flags import optimizer_flags
from tff_lab.flags import task_flags
from tff_lab.algorithms import registry as algorithms_registry
from tff_lab.algorithms import schedules
from tff_lab.training import config as config_lib
from tff_lab.training import experiment_dir

_DEFAULTS = config_lib.ExperimentConfig()

_TASK = flags.DEFINE_string('task', _DEFAULTS.task,
                            'Task name, e.g. digits, synthetic, seed_linear.')
_ALGORITHM = flags.DEFINE_string(
    'algorithm', _DEFAULTS.algorithm,
    f'One of {", ".join(algorithms_registry.names())} (tff_lab/algorithms/spec.py). FedOpt is '
    'fedavg with a non-SGD --server_optimizer.')
_ROUNDS = flags.DEFINE_integer('rounds', _DEFAULTS.rounds, 'Number of federated rounds.')
_CLIENTS_PER_ROUND = flags.DEFINE_integer('clients_per_round', _DEFAULTS.clients_per_round,
                                          'Clients sampled per round.')
_CLIENT_EPOCHS = flags.DEFINE_integer('client_epochs', _DEFAULTS.client_epochs,
                                      'Local epochs per round.')
_CLIENT_BATCH_SIZE = flags.DEFINE_integer('client_batch_size', _DEFAULTS.client_batch_size,
                                          'Local batch size.')
_CLIENT_MAX_ELEMENTS = flags.DEFINE_integer('client_max_elements',
                                            _DEFAULTS.client_max_elements,
                                            'Cap on examples per client per round (after epochs).')
_CLIENT_SHUFFLE_BUFFER = flags.DEFINE_integer('client_shuffle_buffer',
                                              _DEFAULTS.client_shuffle_buffer,
                                              'Shuffle buffer of client datasets (1: no shuffle).')
_EVAL_EVERY = flags.DEFINE_integer('eval_every', _DEFAULTS.eval_every,
                                   'Evaluate every k rounds and after the last (0: no evaluation).')
_FINETUNE_EPOCHS = flags.DEFINE_integer(
    'finetune_epochs', _DEFAULTS.finetune_epochs, 'Per-client report: also evaluate the global '
    'model after k local epochs on each test client\'s training split (0: off).')
_LOCAL_BASELINE_EPOCHS = flags.DEFINE_integer(
    'local_baseline_epochs', _DEFAULTS.local_baseline_epochs, 'Per-client report: the '
    'fraction of clients beating a model trained alone this many epochs from the initial model '
    '(0: off).')
_CHECKPOINT_EVERY = flags.DEFINE_integer('checkpoint_every', _DEFAULTS.checkpoint_every,
                                         'Checkpoint every k rounds.')
_SEED = flags.DEFINE_integer('seed', _DEFAULTS.seed, 'Seed of initialisation, sampling, shuffling.')
_ROOT_OUTPUT_DIR = flags.DEFINE_string('root_output_dir', _DEFAULTS.root_output_dir,
                                       'Root of experiment directories.')
_EXPERIMENT_NAME = flags.DEFINE_string(
    'experiment_name', None, 'Experiment directory name (default: <task>_<algorithm>_<server '
    'optimizer>_<hash of the other settings>, so the same command resumes its own run).')
_BYZANTINE_FRACTION = flags.DEFINE_float('byzantine_fraction', _DEFAULTS.byzantine_fraction,
                                         'Fraction of each round\'s sampled clients that attack.')
_ATTACK = flags.DEFINE_string('attack', _DEFAULTS.attack,
                              'Byzantine attack: sign_flip, scale, gaussian or label_flip.')
_ATTACK_SCALE = flags.DEFINE_float('attack_scale', _DEFAULTS.attack_scale,
                                   'c in -c*update (sign_flip), c*update (scale), N(0,c^2) '
                                   '(gaussian).')
_DROPOUT_FRACTION = flags.DEFINE_float('dropout_fraction', _DEFAULTS.dropout_fraction,
                                       'Fraction of sampled clients that never report.')
_STRAGGLER_FRACTION = flags.DEFINE_float('straggler_fraction', _DEFAULTS.straggler_fraction,
                                         'Fraction of sampled clients doing partial local work.')
_DP_DELTA = flags.DEFINE_float('dp_delta', _DEFAULTS.dp_delta,
                                'δ of the ε reported each round with --dp (default: population^-1.1).')
_DP_METRICS = flags.DEFINE_enum(
    'dp_metrics', _DEFAULTS.dp_metrics, ['withheld', 'public'],
    'Under DP: withheld keeps the metrics the noise does not cover (training loss, accuracy, '
    'example counts, federated evaluation) out of metrics.csv, TensorBoard and summary.json; '
    'public releases them, not covered by ε.')
_CLIENT_SAMPLING = flags.DEFINE_enum(
    'client_sampling', _DEFAULTS.client_sampling, ['fixed', 'poisson'],
    'fixed: clients_per_round clients uniformly without replacement; poisson: each client with '
    'probability clients_per_round/N (the tighter DP accounting; --simulation=tff only).')
_SIMULATION = flags.DEFINE_string('simulation', _DEFAULTS.simulation,
                                  'auto: the fastest backend that runs the configuration (fused '
                                  'where it can, else tff; logged); tff: rounds through TFF\'s '
                                  'runtime; fused: all sampled '
                                  'clients\' local SGD in one TF program, one client after '
                                  'another (same results, fastest on CPU); vectorized: the same, '
                                  'batched over clients with tf.vectorized_map (sgd clients, '
                                  'mean aggregation); async: FedBuff, buffered asynchronous '
                                  'aggregation on a simulated clock (--concurrency, '
                                  '--buffer_size, --staleness, --latency_*).')
_WORKERS = flags.DEFINE_list('workers', list(_DEFAULTS.workers), 'TFF workers host:port,... started with '
                             'tff-lab-worker; empty: one managed local worker.')
_WORKER_TIMEOUT = flags.DEFINE_float('worker_timeout',
                                     _DEFAULTS.worker_timeout,
                                     'Seconds to wait for a dead worker before failing the round.')
_MAX_CONCURRENT_CLIENTS = flags.DEFINE_integer('max_concurrent_clients',
                                               _DEFAULTS.max_concurrent_clients,
                                               'Client computations run in parallel (-1: all).')
_OVERWRITE = flags.DEFINE_bool('overwrite', _DEFAULTS.overwrite,
                               'Delete an existing experiment directory instead of resuming it.')
_PROGRESS = common_flags.define_progress_flag()
_PLUGIN = plugins.define_plugin_flag()

aggregation_flags.define_aggregation_flags()
async_flags.define_async_flags()
algorithm_flags.define_algorithm_flags()
optimizer_flags.define_optimizer_flags('client', _DEFAULTS.client_optimizer,
                                      _DEFAULTS.client_learning_rate)
optimizer_flags.define_optimizer_flags('server', _DEFAULTS.server_optimizer,
                                      _DEFAULTS.server_learning_rate)
for _role in schedules.ROLES:  # --client_lr_schedule, --server_lr_decay_rate, ...
  section_flags.define_section_flags(schedules.LearningRateSchedule, f'{_role}_lr_')
task_flags.define_task_flags()


def config_from_flags() -> config_lib.ExperimentConfig:
  """Builds the config from parsed flags. Raises ConfigError on inconsistent flags."""
  try:
    task_options = task_flags.task_options_from_flags(_TASK.value)
    client = optimizer_flags.optimizer_settings_from_flags('client')
    server = optimizer_flags.optimizer_settings_from_flags('server')
    aggregation = aggregation_flags.aggregation_from_flags()
    asynchrony = async_flags.asynchrony_from_flags()
  except ValueError as e:
    raise config_lib.ConfigError(str(e)) from None
  config = config_lib.ExperimentConfig(
      task=_TASK.value, task_options=task_options, algorithm=_ALGORITHM.value,
      algorithm_hparams=algorithm_flags.algorithm_hparams_from_flags(),
      rounds=_ROUNDS.value, clients_per_round=_CLIENTS_PER_ROUND.value,
      client_epochs=_CLIENT_EPOCHS.value, client_batch_size=_CLIENT_BATCH_SIZE.value,
      client_max_elements=_CLIENT_MAX_ELEMENTS.value,
      client_shuffle_buffer=_CLIENT_SHUFFLE_BUFFER.value, eval_every=_EVAL_EVERY.value,
      finetune_epochs=_FINETUNE_EPOCHS.value, local_baseline_epochs=_LOCAL_BASELINE_EPOCHS.value,
      checkpoint_every=_CHECKPOINT_EVERY.value, seed=_SEED.value,
      byzantine_fraction=_BYZANTINE_FRACTION.value, attack=_ATTACK.value,
      attack_scale=_ATTACK_SCALE.value, dropout_fraction=_DROPOUT_FRACTION.value,
      straggler_fraction=_STRAGGLER_FRACTION.value, simulation=_SIMULATION.value,
      asynchrony=asynchrony,
      aggregation=aggregation, dp_delta=_DP_DELTA.value,
      dp_metrics=_DP_METRICS.value, client_sampling=_CLIENT_SAMPLING.value,
      workers=tuple(_WORKERS.value), worker_timeout=_WORKER_TIMEOUT.value,
      root_output_dir=_ROOT_OUTPUT_DIR.value,
      experiment_name=_EXPERIMENT_NAME.value or 'experiment',
      max_concurrent_clients=_MAX_CONCURRENT_CLIENTS.value, overwrite=_OVERWRITE.value,
      progress=_PROGRESS.value, plugins=tuple(dict.fromkeys(_PLUGIN.value)),
      client_lr_schedule=section_flags.section_from_flags(schedules.LearningRateSchedule,
                                                         'client_lr_'),
      server_lr_schedule=section_flags.section_from_flags(schedules.LearningRateSchedule,
                                                         'server_lr_'), **client, **server)
  if _EXPERIMENT_NAME.value:
    return config
  return dataclasses.replace(config, experiment_name=experiment_dir.default_experiment_name(config))


def _check_saved_plugins() -> None:
  """Refuses a run directory made with other plugins before the task or aggregator is looked up
  (they may be the missing plugin's).

  Without --experiment_name, the directory is named after the settings; where they cannot be
  read (a missing plugin's task or aggregator), every `<task>_<algorithm>_<server optimizer>_*`
  run of the root is checked.
  """
  if _EXPERIMENT_NAME.value:
    names = [_EXPERIMENT_NAME.value]
  else:
    try:
      names = [config_from_flags().experiment_name]
    except (config_lib.ConfigError, ValueError):
      prefix = f'{_TASK.value}_{_ALGORITHM.value}_{flags.FLAGS.server_optimizer}_'
      root = _ROOT_OUTPUT_DIR.value
      names = sorted(n for n in (os.listdir(root) if os.path.isdir(root) else [])
                     if n.startswith(prefix))
  for name in names:
    config_lib.check_saved_plugins(config_lib.ExperimentConfig(
        root_output_dir=_ROOT_OUTPUT_DIR.value, experiment_name=name, overwrite=_OVERWRITE.value,
        plugins=tuple(dict.fromkeys(_PLUGIN.value))))


def load_plugins(argv=None) -> tuple[str, ...]:
  """Imports the `--plugin` modules of `argv` (default `sys.argv`) and defines the flags of what
  they registered; call it before `app.run`. One line on stderr and exit code 2 for a plugin
  that does not import or a flag it would define twice."""
  names = plugins.load_from_argv(argv)
  try:
    task_flags.define_task_flags()
    aggregation_flags.define_aggregation_flags()
    algorithm_flags.define_algorithm_flags()
  except flags.Error as e:  # e.g. DuplicateFlagError: a registered option's flag exists
    print(f'error: --plugin: {" ".join(str(e).split())}', file=sys.stderr)
    sys.exit(2)
  return names


def _main(argv):
  logging.set_verbosity(logging.WARNING)
  if len(argv) > 1:
    sys.exit(f'error: unexpected arguments {argv[1:]}')
  from tff_lab.training import loop  # pylint: disable=g-import-not-at-top
  config = None
  try:
    _check_saved_plugins()
    config = config_from_flags()
    summary = loop.run_experiment(config, argv=sys.argv)
  except KeyboardInterrupt:  # Ctrl-C: one line, not a traceback (history.jsonl records it)
    where = ''
    if config is not None and os.path.isdir(config.experiment_dir):
      where = f' at round {experiment_dir.completed_rounds(config.experiment_dir)}'
    print(f'interrupted{where}; re-run the same command to resume from its last checkpoint',
          file=sys.stderr)
    sys.exit(130)
  except config_lib.ConfigError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  except loop.NonFiniteLossError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(3)
  except runtime.WorkerError as e:
    print(f'error: {e}; checkpoints are kept: re-run the same command to resume', file=sys.stderr)
    sys.exit(4)
  except secagg.SecAggError as e:  # a secure-aggregation round failed: no sum was computed
    print(f'error: {e}; checkpoints are kept', file=sys.stderr)
    sys.exit(5)
  final = summary['final_metrics']
  shown = ', '.join(f'{k}={final[k]:.4f}' for k in
                    ('train_loss', 'fed_eval_accuracy', 'central_eval_accuracy') if k in final)
  print(f'done: {config.experiment_dir} ({shown})')


def run_experiment_app() -> None:
  """Console script `tff-lab-run`."""
  load_plugins()
  app.run(_main, flags_parser=parse_flags)


def parse_flags(argv):
  """absl's parser, with a bad flag as one line and exit code 2 (as all bad input)."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    message = ' '.join(str(e).split())
    if 'Unknown command line flag' in message:
      message += ' (the flags of a plugin\'s task or aggregator need its --plugin)'
    print(f'error: {message}', file=sys.stderr)
    sys.exit(2)
