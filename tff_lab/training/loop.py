"""The federated training loop: wiring of plan, backend, evaluation, release and checkpoints.

`run_experiment(config)` is the whole job the experiment binary and the notebook run:

  1. validate the config (the algorithm's spec and the selected backend check it) and build the
     task (cheap, no TFF tracing), check it against the task;
  2. create or reopen `<root_output_dir>/<experiment_name>/` (`experiment_dir`: config.json kept
     as made, this invocation appended to history.jsonl);
  3. build the learning process (its state's structure), the backend's round runner
     (`tff_lab.simulation.backends`), the algorithm's client store if it keeps one, and the
     evaluation computations (TFF tracing);
  4. restore the newest good checkpoint (client store included), or make the seeded initial
     state (checkpointed as round 0);
  5. each round: make its plan (`tff_lab.simulation.plan.RoundPlanner`: sampled clients, fault
     roles, data plans), run it (`runner.next(state, plan)`), journal a DP release
     (`tff_lab.training.release`), stop on a non-finite loss, evaluate every `eval_every`
     rounds (with its own progress bar), write what may be released to metrics.csv, metrics.jsonl
     and TensorBoard, checkpoint every `checkpoint_every` rounds, and rewrite summary.json to
     agree with metrics.csv;
  6. write curves.png, final_model.keras, summary.json (with its `privacy` section under DP) and
     how the invocation ended (history.jsonl; also when it stops with an exception).

Every source of randomness is a pure function of (seed, round), or under DP of (run secret,
round) for sampling: the clients sampled, each client's shuffle seed, the fault roles. With the
exact state checkpoints (`checkpoint.py`), a run killed at any moment and re-run ends with the
same weights as an uninterrupted run, and metrics.csv holds one row per round.
"""

import collections
import dataclasses
import math
import os
import time
from typing import Any, Optional, Sequence

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
import tqdm

from tff_lab import aggregators
from tff_lab import faults as faults_lib
from tff_lab import runtime
from tff_lab.aggregators import dp as dp_lib
from tff_lab.algorithms import optimizers as optimizers_lib
from tff_lab.algorithms import registry as algorithms_registry
from tff_lab.algorithms import schedules
from tff_lab.evaluation import centralized
from tff_lab.evaluation import federated
from tff_lab.evaluation import fused as fused_evaluation
from tff_lab.evaluation import personalization
from tff_lab.metrics import plotting
from tff_lab.metrics import writers
from tff_lab.privacy import ledger as ledger_lib
from tff_lab.simulation import asynchronous
from tff_lab.simulation import backends
from tff_lab.simulation import plan as plan_lib
from tff_lab.tasks import registry as tasks_registry
from tff_lab.tasks import task as task_lib
from tff_lab.training import checkpoint
from tff_lab.training import config as config_lib
from tff_lab.training import experiment_dir
from tff_lab.training import release as release_lib


class NonFiniteLossError(RuntimeError):
  """Training produced a NaN or infinite loss."""


# Where rounds come from (tff_lab.simulation.plan); kept under these names for callers of the loop.
sample_clients = plan_lib.sample_clients
client_shuffle_seed = plan_lib.client_shuffle_seed
initial_model_weights = plan_lib.initial_model_weights


def build_task(config: config_lib.ExperimentConfig) -> task_lib.Task:
  """The task of `config`, with the config's client preprocessing."""
  spec = task_lib.ClientSpec(num_epochs=config.client_epochs,
                             batch_size=config.client_batch_size,
                             max_elements=config.client_max_elements,
                             shuffle_buffer_size=config.client_shuffle_buffer)
  try:
    return tasks_registry.create_task(config.task, config.task_options, train_spec=spec)
  except (ValueError, FileNotFoundError) as e:  # bad options; data not downloaded or installed
    raise config_lib.ConfigError(str(e)) from None


def _server_optimizer(config: config_lib.ExperimentConfig) -> tff.learning.optimizers.Optimizer:
  return optimizers_lib.create_optimizer(
      config.server_optimizer, config.server_learning_rate, **config.server_optimizer_hparams)


def needs_weighted_aggregator(config: config_lib.ExperimentConfig) -> bool:
  """Whether the run's learning process takes a weighted `tff.aggregators` factory.

  As the algorithm's spec says; with update attacks every algorithm composes tff_lab's client
  work with a weighted aggregator (an unweighted algorithm's clients then report weight 1).
  """
  return algorithms_registry.get(config.algorithm).weighted or config.faults.update_attacks


def check_model_aggregator(config: config_lib.ExperimentConfig, model_aggregator) -> None:
  """Refuses a user `model_aggregator` that the run could not honour, before any tracing.

  Raises:
    ConfigError: If it is not a factory of the kind the algorithm needs, if the config's own
      aggregation settings would be silently dropped for it (with `dp` set, ε would be reported
      for noise no mechanism adds), or if the backend does not run user aggregators.
  """
  if model_aggregator is None:
    return
  if algorithms_registry.get(config.algorithm).build_runner is not None:
    raise config_lib.ConfigError(f'--algorithm={config.algorithm} aggregates with its own rounds '
                                 'and cannot run a model_aggregator')
  if config.aggregation.get('secure_aggregation'):
    raise config_lib.ConfigError('secure_aggregation aggregates with its own protocol; it cannot '
                                 'be combined with a model_aggregator')
  if config.aggregation:
    raise config_lib.ConfigError(
        f'model_aggregator replaces the aggregation stack, so the aggregation settings '
        f'{sorted(config.aggregation)} would be ignored; give one or the other (a DP aggregator '
        'of your own declares its mechanism with tff_lab.aggregators.dp.attach_mechanism)')
  if config.simulation != 'tff':
    raise config_lib.ConfigError(
        f'--simulation={config.simulation} aggregates with the plain mean in-graph and cannot '
        'run a model_aggregator; use --simulation=tff')
  weighted = needs_weighted_aggregator(config)
  kind = (tff.aggregators.WeightedAggregationFactory if weighted
          else tff.aggregators.UnweightedAggregationFactory)
  if not isinstance(model_aggregator, kind):
    why = (' (update attacks compose every algorithm with a weighted aggregator)'
           if config.faults.update_attacks
           and not algorithms_registry.get(config.algorithm).weighted else '')
    raise config_lib.ConfigError(
        f'--algorithm={config.algorithm} needs a tff.aggregators.{kind.__name__}{why}, got '
        f'{type(model_aggregator).__name__}; wrap an unweighted factory with '
        'tff.aggregators.as_weighted_aggregator')


def create_model_aggregator(config: config_lib.ExperimentConfig, model_aggregator=None
                            ) -> tff.aggregators.AggregationFactory:
  """The run's aggregation factory: `model_aggregator`, or the stack of `config.aggregation`.

  The stack's plain mean is TFF's MeanFactory, plus byte counts. With secure aggregation this is
  the plain-sum factory of the process whose state (same structure) the secure round runner
  advances: the masking protocol is not a tff.aggregators factory.
  """
  if model_aggregator is not None:
    return model_aggregator
  return aggregators.create_aggregator(
      weighted=needs_weighted_aggregator(config),
      **aggregators.without_secure_aggregation(config.aggregation_settings()))


def build_process(config: config_lib.ExperimentConfig, task: task_lib.Task,
                  model_aggregator=None, runs_elsewhere: bool = False
                  ) -> tff.learning.templates.LearningProcess:
  """The TFF learning process of `config` (aggregating with `create_model_aggregator`).

  With `runs_elsewhere` (the backend never calls `process.next`), the algorithm's state-only
  process where it has one: the same state and model weights, no client training traced.
  """
  client_opt = optimizers_lib.create_optimizer(
      config.client_optimizer, config.client_learning_rate, **config.client_optimizer_hparams)
  return algorithms_registry.create_learning_process(
      config.algorithm, task, client_opt, _server_optimizer(config),
      hparams=config.algorithm_hparams,
      model_aggregator=create_model_aggregator(config, model_aggregator),
      with_attacks=config.faults.update_attacks, state_only=True,
      scheduled_client_lr=schedules.scheduled_client_lr(config), runs_elsewhere=runs_elsewhere)


def _flatten(prefix: str, value: Any, out: dict) -> None:
  if isinstance(value, collections.abc.Mapping):
    for k, v in value.items():
      _flatten(f'{prefix}/{k}' if prefix else str(k), v, out)
  elif isinstance(value, (list, tuple)):
    for i, v in enumerate(value):
      _flatten(f'{prefix}/{i}', v, out)
  else:
    array = np.asarray(value)
    if array.size == 1 and array.dtype.kind in 'biuf':
      out[prefix] = array.item()


# Communication measurements, reported once per configuration somewhere in the aggregator's
# (nested) measurements; surfaced under these fixed names too.
_COMMUNICATION = ('upload_bytes_per_client', 'download_bytes_per_client',
                  'float32_upload_bytes_per_client', 'compression_ratio')


# The aggregation layers that nest their inner factory's measurements under their own name:
# clipping (`tff.aggregators.clipping_factory`), the mean's value sum (`MeanFactory`), DP
# (`DifferentiallyPrivateFactory`'s record aggregation).
_NESTING = ('clipping', 'mean_value', 'dp')


def normalize_aggregator_names(flat: dict) -> dict:
  """`flat` with the `_NESTING` path parts dropped from `aggregator/...` names, so that a
  measurement has one name whatever the stack around it (e.g. `aggregator/upload_bytes_per_client`
  with or without `--compression`, `--clip_norm` or `--dp`, as the in-graph backends name it).

  Only whole inner parts are dropped (`aggregator/clipping_norm` and `aggregator/dp_query_metrics/`
  stay). Should two measurements get the same name, both keep their TFF paths.
  """
  def short(name):
    parts = name.split('/')
    if parts[0] != 'aggregator' or len(parts) < 3:
      return name
    return '/'.join([parts[0]] + [p for p in parts[1:-1] if p not in _NESTING] + [parts[-1]])

  names = collections.Counter(short(k) for k in flat)
  return {(short(k) if names[short(k)] == 1 else k): v for k, v in flat.items()}


def round_metrics(process_metrics: Any) -> 'collections.OrderedDict[str, Any]':
  """Names the main training metrics and keeps every other scalar under its TFF path (with the
  aggregator's nesting dropped: `normalize_aggregator_names`)."""
  flat = {}
  _flatten('', process_metrics, flat)
  flat = normalize_aggregator_names(flat)
  named = collections.OrderedDict()
  for short, path in (('train_loss', 'client_work/train/loss'),
                      ('train_accuracy', 'client_work/train/accuracy'),
                      ('train_examples', 'client_work/train/num_examples')):
    if path in flat:
      named[short] = flat.pop(path)
  for name in _COMMUNICATION:
    matches = [v for k, v in flat.items() if k.endswith('/' + name)]
    if len(matches) == 1:
      named[name] = matches[0]
  named.update(sorted(flat.items()))
  return named


def _checkpoint_extra(client_store, report=None) -> Optional[dict]:
  """What a checkpoint carries beside the TFF state: the client store, if the algorithm has one,
  and the per-client report's local baseline once computed."""
  extra = {} if client_store is None else {'client_store': client_store.to_checkpoint()}
  baseline = None if report is None else report.to_checkpoint()
  if baseline is not None:
    extra['client_report'] = baseline
  return extra or None


def _with_runner_parts(runner, extra: Optional[dict]) -> Optional[dict]:
  """`extra` plus the parts a runner keeps beyond TFF's state (`checkpoint_parts`: the
  asynchronous queue, the simulated clock; `tff_lab.simulation.backends`)."""
  parts = getattr(runner, 'checkpoint_parts', None)
  if parts is None:
    return extra
  return dict(extra or {}, **parts())


def _extra(runner, client_store, *args) -> Optional[dict]:
  return _with_runner_parts(runner, _checkpoint_extra(client_store, *args))


def _restore_runner_parts(runner, extra) -> None:
  """Restores what `_with_runner_parts` saved; one line for a checkpoint of another backend."""
  restore = getattr(runner, 'restore_parts', None)
  if restore is not None:
    try:
      restore(extra)
    except ValueError as e:
      raise config_lib.ConfigError(str(e)) from None


def _restore_or_init(process, task, config, ckpt_dir, csv_writer, client_store=None,
                     report=None, runner=None):
  """The state to start from (and `client_store`, `report` restored with it), and its round."""
  template = process.initialize()
  # The newest good checkpoint: damaged newer ones are moved aside, with one warning line.
  restored = checkpoint.restore_latest(ckpt_dir, template)
  if restored is not None:
    csv_writer.truncate_after(restored.round_num)
    _restore_runner_parts(runner, restored.extra)
    if client_store is not None:
      client_store.restore(restored.extra['client_store'])
    if report is not None:
      report.restore((restored.extra or {}).get('client_report'))
    return restored.state, restored.round_num
  state = process.set_model_weights(template, initial_model_weights(task, config.seed))
  csv_writer.truncate_after(0)
  checkpoint.save_checkpoint(ckpt_dir, 0, state, extra=_extra(runner, client_store))
  return state, 0


def _evaluate(task, weights, evaluation, show_progress: bool = False
              ) -> 'collections.OrderedDict[str, Any]':
  """Federated then centralised evaluation; the federated one has its own progress bar (test
  clients evaluated, one update per chunk of `federated.CHUNK_CLIENTS`), off with --noprogress."""
  out = collections.OrderedDict()
  with tqdm.tqdm(total=len(task.test_data.client_ids), desc='evaluation', unit='client',
                 leave=False, disable=not show_progress, dynamic_ncols=True) as bar:
    for k, v in evaluation.federated(weights, progress=bar.update).items():
      out[f'fed_eval_{k}'] = v
  for k, v in evaluation.centralized(weights).items():
    out[f'central_eval_{k}'] = v
  return out


def create_evaluation(config: config_lib.ExperimentConfig, task):
  """The run's evaluation: in-graph (`fused.FusedEvaluation`) with an in-graph backend where the
  task allows it, else on TFF's runtime (`federated.TFFEvaluation`); None without evaluation.
  Same metrics either way (each makes its Keras model at its first evaluation)."""
  if not config.eval_every:
    return None
  if config.simulation in ('fused', 'vectorized') and fused_evaluation.supports(task):
    return fused_evaluation.FusedEvaluation(task)
  return federated.TFFEvaluation(task)


def _set_execution_context(config: config_lib.ExperimentConfig) -> None:
  if config.workers:
    runtime.set_remote_context(list(config.workers), reconnect_timeout=config.worker_timeout)
  else:
    runtime.set_local_context(max_concurrent_clients=config.max_concurrent_clients)
  # tf.data combines each shuffle's op seed with TF's global seed, so fix the global seed on every
  # (re)start; otherwise a resumed run would shuffle differently from an uninterrupted one.
  tf.random.set_seed(config.seed)


def _train_round(runner: backends.RoundRunner, state: Any, plan: plan_lib.RoundPlan,
                 config: config_lib.ExperimentConfig, release: release_lib.RoundRelease,
                 ckpt_dir: str):
  """Runs one planned round; returns (new state, all its metrics, before the release policy).

  Raises:
    NonFiniteLossError: If the round's training loss is not finite (nothing is written).
  """
  t0 = time.time()
  output = runner.next(state, plan)
  release.record(plan.round_num)  # journaled before anything of the round leaves the process
  metrics = round_metrics(output.metrics)
  if config.faults != faults_lib.FaultConfig():
    metrics.update(plan.fault_metrics())
  metrics.update(release.epsilon_metrics())
  loss = metrics.get('train_loss')
  if loss is not None and not math.isfinite(loss):
    raise NonFiniteLossError(
        f'round {plan.round_num}: training loss is {loss}; stopping. The last good checkpoint '
        f'(round {checkpoint.latest_checkpoint(ckpt_dir)}) is kept in {ckpt_dir}. Lower the '
        'learning rates or check the data.')
  metrics['round_seconds'] = time.time() - t0
  return output.state, metrics


# FedOpt's names (Reddi et al. 2021): FedAvg with an adaptive or momentum server optimiser.
_FEDOPT_NAMES = {'adam': 'FedAdam', 'yogi': 'FedYogi', 'adagrad': 'FedAdagrad', 'sgdm': 'FedAvgM'}


def algorithm_label(config: config_lib.ExperimentConfig) -> str:
  """The algorithm as a paper would name it: FedAdam for fedavg with a server Adam, and so on;
  the algorithm's name otherwise (with its server optimiser when not plain SGD)."""
  server = config.server_optimizer
  momentum = config.server_optimizer_hparams.get('momentum')
  if server == 'sgdm' and not momentum:
    server = 'sgd'  # sgdm without momentum is SGD
  if config.algorithm in ('fedavg', 'fedavg_unweighted') and server in _FEDOPT_NAMES:
    suffix = ' (unweighted)' if config.algorithm == 'fedavg_unweighted' else ''
    return _FEDOPT_NAMES[server] + suffix
  return config.algorithm if server == 'sgd' else f'{config.algorithm}, server {server}'


def _write_final_outputs(config, task, process, state, exp_dir, csv_path, start_round, record,
                         release, report=None) -> 'collections.OrderedDict[str, Any]':
  """curves.png and final_model.keras (kept as they are when a finished run ran no round), the
  accuracy-vs-simulated-time plot of an async run, the per-client report's clients.csv and
  client_accuracy.png of this invocation's last evaluation unless DP withholds them, then
  summary.json and the invocation's history entry (`experiment_dir.RunRecord.finish`)."""
  outputs = [os.path.join(exp_dir, name) for name in ('curves.png', 'final_model.keras')]
  title = f'{task.description} — {algorithm_label(config)}'
  if (start_round < config.rounds or not record.previously_finished
      or not all(map(os.path.exists, outputs))):
    plotting.plot_curves(csv_path, outputs[0], title=title)
    centralized.keras_model_with_weights(task, process.get_model_weights(state)).save(outputs[1])
    experiment_dir.write_model_card(exp_dir, task)
  asynchronous.write_time_plot(config)  # with the finished sibling runs, also on a re-run
  if report is not None and (not release.dp or config.dp_metrics == 'public'):
    report.write_final(exp_dir, title)  # nothing when this invocation evaluated no round
    record.files += [name for name in (personalization.CSV_NAME, personalization.PNG_NAME)
                     if os.path.exists(os.path.join(exp_dir, name))]
  record.privacy = release.summary()
  if record.privacy is not None:
    record.files.append(ledger_lib.LEDGER_FILENAME)
  return record.finish()


def _build_runner(config, task, process, model_aggregator):
  """The selected backend's runner, and the algorithm's client store (None if it keeps none).

  Built before any other Keras model: the in-graph backends make a TF1 graph, which invalidates
  earlier Keras models.
  """
  spec = algorithms_registry.get(config.algorithm)
  client_store = spec.initial_store(task) if spec.client_state else None
  runner = backends.build_runner(
      backends.BackendContext(config, task, process, model_aggregator, client_store))
  return schedules.ScheduledRunner.wrap(runner, config), client_store


def _build_report(config, task, personalized: bool, evaluation=None
                  ) -> Optional[personalization.ClientReport]:
  """The per-client report evaluated with every evaluation (None without evaluation); the
  global model's per-client results from the fast path's `evaluation` where it is one."""
  if not config.eval_every:
    return None
  initial = (initial_model_weights(task, config.seed) if config.local_baseline_epochs else None)
  return personalization.ClientReport(
      task, initial, config.client_learning_rate, config.seed,
      finetune_epochs=config.finetune_epochs, local_baseline_epochs=config.local_baseline_epochs,
      personalized=personalized,
      evaluate_global=(evaluation.each if isinstance(evaluation, fused_evaluation.FusedEvaluation)
                       else None))


# Shown in the progress bar, where released.
_SHOWN = ('train_loss', 'train_accuracy', 'fed_eval_accuracy', 'central_eval_accuracy')


def _round_line(round_num: int, rounds: int, last: dict) -> str:
  """The log line of a round when the progress bar is off: what the bar would show, the latest
  evaluation included, and the round's wall time."""
  shown = ', '.join(f'{k} {last[k]:.4f}' for k in _SHOWN if k in last)
  seconds = f' ({last["round_seconds"]:.2f} s)' if 'round_seconds' in last else ''
  return f'round {round_num}/{rounds}: {shown}{seconds}'


def run_experiment(config: config_lib.ExperimentConfig, model_aggregator=None,
                   argv: Optional[Sequence[str]] = None, progress_desc: Optional[str] = None
                   ) -> 'collections.OrderedDict[str, Any]':
  """Runs (or resumes) the experiment described by `config`; returns the summary.

  Args:
    config: The experiment.
    model_aggregator: A `tff.aggregators` factory replacing the config's aggregation stack.
    argv: The command line that asked for the run (tff-lab-run gives `sys.argv`), recorded in the
      directory's history.jsonl.
    progress_desc: The progress bar's label (default `<task>/<algorithm>`; a grid names its cell).

  Raises:
    ConfigError: For invalid settings, before any TFF tracing (and before anything is written).
    WorkerError: A remote worker (`config.workers`) is unreachable or died; checkpoints are kept.
    NonFiniteLossError: If a round's training loss is NaN or infinite; the last good checkpoint
      is kept and the metrics of that round are not written.
  """
  config.validate()
  if config.model_aggregator:
    raise config_lib.ConfigError(
        f'model_aggregator={config.model_aggregator!r} is recorded by run_experiment for the '
        'factory passed to it; pass the factory as run_experiment(config, model_aggregator=...)')
  if model_aggregator is not None:  # recorded in config.json: resuming without it is refused
    kind = type(model_aggregator)
    config = dataclasses.replace(config, model_aggregator=f'{kind.__module__}.{kind.__qualname__}')
  requested = config
  config, why = backends.resolve(config, has_model_aggregator=model_aggregator is not None)
  check_model_aggregator(config, model_aggregator)
  task = build_task(config)
  config.validate_against_task(len(task.train_data.client_ids), task.prediction_kind)
  try:  # what the backend cannot train is known from the task
    if requested.simulation == backends.AUTO:
      config, why = backends.resolve(dataclasses.replace(config, simulation=backends.AUTO),
                                     has_model_aggregator=model_aggregator is not None,
                                     prediction_kind=task.prediction_kind)
    else:
      backends.check_task(config, task.prediction_kind)
  except ValueError as e:
    raise config_lib.ConfigError(str(e)) from None
  try:  # the latency file names the task's clients; async concurrency fits them
    asynchronous.check_against_task(config, task)
  except ValueError as e:
    raise config_lib.ConfigError(str(e)) from None
  try:  # local fine-tuning and baselines train each test client on its training split
    personalization.check_task(task, config.finetune_epochs, config.local_baseline_epochs)
  except ValueError as e:
    raise config_lib.ConfigError(str(e)) from None
  experiment_dir.prepare_experiment_dir(config)
  if why:  # which backend --simulation=auto chose, once the input is known to be good
    logging.warning('%s', why)
  record = experiment_dir.RunRecord(config, argv)
  try:
    return _train(config, task, model_aggregator, record, progress_desc)
  except BaseException as e:  # pylint: disable=broad-except  (recorded, then raised as it was)
    record.finish(experiment_dir.status_of(e), error=e)
    raise


@dataclasses.dataclass
class _Run:
  """What a training run is made of, built (TFF tracing) once before its rounds."""
  process: Any  # the TFF learning process: initial state, model weights, checkpoint structure
  runner: backends.RoundRunner  # the backend's runner of a round's plan
  client_store: Any  # per-client state (SCAFFOLD, Ditto, ...), or None
  evaluation: Any  # federated and centralised evaluation (`create_evaluation`), or None
  personal: Any  # the runner's personalised models (Ditto, FedRep), or None
  report: Any  # the per-client report


def _build_run(config, task, model_aggregator) -> _Run:
  _set_execution_context(config)
  model_aggregator = create_model_aggregator(config, model_aggregator)
  process = build_process(config, task, model_aggregator,
                          runs_elsewhere=not backends.calls_process_next(config))
  runner, client_store = _build_runner(config, task, process, model_aggregator)
  evaluation = create_evaluation(config, task)
  # A runner whose algorithm keeps personalised models gives them (Ditto, FedRep).
  personal = getattr(runner, 'personal_model_weights', None)
  report = _build_report(config, task, personal is not None,  # traces: before any Keras model
                         evaluation)
  return _Run(process, runner, client_store, evaluation, personal, report)


def _train(config, task, model_aggregator, record: experiment_dir.RunRecord,
           progress_desc: Optional[str] = None) -> 'collections.OrderedDict[str, Any]':
  """Builds the run (TFF tracing), restores it, trains the remaining rounds, writes the outputs."""
  exp_dir = config.experiment_dir
  ckpt_dir = os.path.join(exp_dir, 'checkpoints')
  csv_writer = writers.CSVMetricsWriter(os.path.join(exp_dir, 'metrics.csv'),
                                        os.path.join(exp_dir, 'metrics.jsonl'))
  run = _build_run(config, task, model_aggregator)
  state, start_round = _restore_or_init(run.process, task, config, ckpt_dir, csv_writer,
                                        run.client_store, run.report, runner=run.runner)
  record.restored(start_round, task.summary())
  if start_round:
    logging.warning('resuming from round %d of %d', start_round, config.rounds)
  tb_writer = writers.TensorBoardWriter(os.path.join(exp_dir, 'tensorboard'), resume_at=start_round)
  # Only the mechanism that adds the noise is accounted for, as the runner that applies it
  # declares it; under DP the release also picks the (secret) sampling entropy.
  release = release_lib.RoundRelease(config, dp_lib.mechanism_of(run.runner), exp_dir, ckpt_dir,
                                     len(task.train_data.client_ids))
  planner = plan_lib.RoundPlanner(task, config.clients_per_round, config.faults, config.seed,
                                  config.client_sampling, release.sampling_entropy)
  last = dict(record.final_metrics)  # shown in the progress bar
  bar = tqdm.tqdm(total=config.rounds, initial=start_round,
                  desc=progress_desc or f'{config.task}/{config.algorithm}',
                  unit='round', disable=not config.progress, dynamic_ncols=True)
  try:
    for round_num in range(start_round + 1, config.rounds + 1):
      state, metrics = _train_round(run.runner, state, planner.plan(round_num), config, release,
                                    ckpt_dir)
      metrics = _finish_round(config, task, run, state, round_num, metrics, release,
                              (csv_writer, tb_writer), record, ckpt_dir)
      last.update(metrics)
      bar.set_postfix(collections.OrderedDict(
          (k, f'{last[k]:.4f}') for k in _SHOWN if k in last))
      bar.update(1)
      if not config.progress:  # no bar (a batch job): the log shows each round instead
        logging.warning('%s', _round_line(round_num, config.rounds, last))
  except NonFiniteLossError:  # the curves up to the last good round, as the CSV holds them
    if os.path.exists(csv_writer.path):
      plotting.plot_curves(csv_writer.path, os.path.join(exp_dir, 'curves.png'),
                           title=f'{task.description} — {algorithm_label(config)} (diverged)')
    raise
  finally:
    bar.close()
    tb_writer.close()
    run.runner.close()
    if config.workers:  # a notebook continues on a local worker, not on the remote ones
      runtime.set_local_context()
  return _write_final_outputs(config, task, run.process, state, exp_dir, csv_writer.path,
                              start_round, record, release, run.report)


def _finish_round(config, task, run: _Run, state, round_num: int, metrics, release,
                  metric_writers, record: experiment_dir.RunRecord, ckpt_dir: str):
  """Evaluates when due, releases and writes the round's metrics (CSV, summary.json, TensorBoard)
  and checkpoints when due; returns the released metrics."""
  if run.evaluation is not None and (round_num % config.eval_every == 0
                                   or round_num == config.rounds):
    weights = run.process.get_model_weights(state)
    metrics.update(_evaluate(task, weights, run.evaluation, config.progress))
    metrics.update(run.report.evaluate(weights, run.personal))
  metrics = release.apply(metrics)  # what may leave the process (all of it without DP)
  csv_writer, tb_writer = metric_writers
  csv_writer.write(round_num, metrics)
  record.round_done(round_num, metrics)  # summary.json follows metrics.csv
  tb_writer.write(round_num, metrics)
  if round_num % config.checkpoint_every == 0 or round_num == config.rounds:
    checkpoint.save_checkpoint(ckpt_dir, round_num, state,
                               extra=_extra(run.runner, run.client_store, run.report))
    record.checkpointed(round_num)
  return metrics
