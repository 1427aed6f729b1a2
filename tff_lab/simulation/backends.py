"""Backends: the ways a planned round can be executed, behind one protocol and one registry.

Every backend turns a `RoundPlan` (`tff_lab.simulation.plan`) and the TFF learning process's
state into the next state and the round's metrics, with the layout `process.next` gives:

    runner = backends.build_runner(BackendContext(config, task, process, model_aggregator))
    output = runner.next(state, plan)          # a tff.learning.templates.LearningProcessOutput
    runner.close()

The registered backends (`BACKENDS`):

* `tff`: TFF's own `process.next` on the plan's datasets, on the local worker or `--workers`.
* `fused` and `vectorized`: every client's local SGD in one TF program, packed by example index
  (`tff_lab.algorithms.vectorized`; same mathematics, to float32 round-off). With aggregation
  settings (clipping, DP, robust rules, compression) or update attacks, `fused` stacks the
  clients' deltas and runs the aggregator stack's arithmetic in one TF graph
  (`tff_lab.aggregators.in_graph`); `vectorized` runs the plain mean only.
* `secure`: clients train in TFF and the real secure aggregation protocol sums their updates
  (`tff_lab.algorithms.secure_rounds`); chosen whenever `secure_aggregation` is set.
* `async`: FedBuff's buffered asynchronous aggregation on a simulated clock
  (`tff_lab.simulation.asynchronous`); one `next` is one aggregation.

Every synchronous runner is wrapped in `latency.ClockedRunner`, which adds `simulated_time` from
the same latency model (a round lasts as long as its slowest reporting client), so accuracy
against simulated time compares across backends. Runners that keep state beyond TFF's (the
asynchronous queue, the clock) give `checkpoint_parts()` / `restore_parts(extra)`, which the
loop saves in and restores from the checkpoints' extra parts.

Each backend has a `check(config)` that refuses, in one line and before any tracing, what it
cannot run; `ExperimentConfig.validate` calls the check of the backend the config selects
(`backend_name`). The training loop only calls `build_runner`: it never tests a runner's type.
A new backend is one `Backend(name, description, check, build)` passed to `register`.
"""

import collections
import dataclasses
from typing import Any, Callable, Optional, Protocol

import numpy as np
import tensorflow_federated as tff

from tff_lab import aggregators
from tff_lab.aggregators import dp as dp_lib
from tff_lab.aggregators import in_graph as in_graph_aggregation
from tff_lab.algorithms import optimizers as optimizers_lib
from tff_lab.algorithms import registry as algorithms_registry
from tff_lab.algorithms import schedules
from tff_lab.algorithms import secure_rounds
from tff_lab.algorithms import vectorized
from tff_lab.metrics import accuracy as accuracy_lib
from tff_lab.simulation import asynchronous
from tff_lab.simulation import latency
from tff_lab.simulation import plan as plan_lib
from tff_lab.simulation import server as server_lib
from tff_lab.tasks import task as task_lib


class RoundRunner(Protocol):
  """Executes planned rounds on the state of the experiment's TFF learning process."""

  def next(self, state: Any, plan: plan_lib.RoundPlan
           ) -> tff.learning.templates.LearningProcessOutput:
    """One round: the new state and the round's metrics (`process.next`'s layout)."""

  def close(self) -> None:
    """Releases what the runner holds (sessions, threads)."""


@dataclasses.dataclass(frozen=True)
class BackendContext:
  """What a backend's builder gets.

  Attributes:
    config: The experiment's `tff_lab.training.ExperimentConfig`.
    task: The task, with the config's client preprocessing.
    process: The TFF learning process whose state every backend advances.
    model_aggregator: The aggregation factory `process` was built with.
    client_store: The algorithm's `ClientStore` (`tff_lab.simulation.client_store`), for
      algorithms with client state; None otherwise.
  """

  config: Any
  task: task_lib.Task
  process: tff.learning.templates.LearningProcess
  model_aggregator: Any = None
  client_store: Any = None


@dataclasses.dataclass(frozen=True)
class Backend:
  """A registered way to run rounds.

  Attributes:
    name: The `--simulation` value (or `secure`, selected by `--secure_aggregation`).
    description: One line for `--help` and logs.
    check: `(config) -> None`; raises ValueError (one line, naming the setting) for what this
      backend cannot run. No tracing.
    build: `(BackendContext) -> RoundRunner`.
    calls_process_next: Its runner calls the learning process's `next` (or its client work).
      False: the process serves only for the state, so the loop builds the algorithm's
      state-only process where it has one (`AlgorithmSpec.build_state_process`), which traces
      no client training.
  """

  name: str
  description: str
  check: Callable[[Any], None]
  build: Callable[[BackendContext], RoundRunner]
  calls_process_next: bool = True


BACKENDS: 'collections.OrderedDict[str, Backend]' = collections.OrderedDict()


def register(backend: Backend) -> Backend:
  """Adds `backend` to the registry; a name can be registered once."""
  if backend.name in BACKENDS:
    raise ValueError(f'backend {backend.name!r} is already registered')
  BACKENDS[backend.name] = backend
  return backend


AUTO = 'auto'
# What `--simulation=auto` tries, fastest first (BUILD.md, "Round throughput"). Each computes
# what `tff` computes (to float32 round-off); `vectorized` is slower on CPU, and `async` changes
# the algorithm, so auto never picks them.
AUTO_ORDER = ('fused', 'tff')


def simulation_names() -> tuple[str, ...]:
  """The values `--simulation` takes (`auto`, and every backend but `secure`, which a flag
  selects)."""
  return (AUTO,) + tuple(name for name in BACKENDS if name != 'secure')


def check_task(config, prediction_kind: str) -> None:
  """Raises a one-line ValueError where the in-graph paths cannot train the task's model.

  Their FedAvg/FedProx rounds (the plain mean and the aggregator stack) train sequence and
  multi-label models too, with TFF's loss (the mean over positions) and accuracy (one prediction
  per non-padding target); `vectorized` not sequence models, whose recurrent loop
  `tf.vectorized_map` cannot vectorise. The rounds of algorithms with their own runner, and
  secure aggregation, count one prediction per example, so they refuse those tasks.
  """
  if (config.simulation not in vectorized.SIMULATION_CLIENT_LOOPS
      or prediction_kind in accuracy_lib.PER_EXAMPLE_KINDS):
    return
  if config.simulation == 'vectorized' and prediction_kind == 'next_token':
    raise ValueError('--simulation=vectorized cannot vectorise a sequence model\'s recurrent '
                     'loop (tf.vectorized_map); use --simulation=fused')
  if backend_name(config) == 'secure':
    raise ValueError(f'--secure_aggregation with --simulation={config.simulation} counts one '
                     f'prediction per example, not a {prediction_kind} task\'s; use '
                     '--simulation=tff')
  if algorithms_registry.get(config.algorithm).build_runner is not None:
    raise ValueError(f'--algorithm={config.algorithm} on --simulation={config.simulation} '
                     f'counts one prediction per example, not a {prediction_kind} task\'s; use '
                     '--simulation=tff')


def resolve(config, has_model_aggregator: bool = False,
            prediction_kind: Optional[str] = None) -> tuple[Any, str]:
  """`config` with `--simulation=auto` replaced by the backend that will run it, and why.

  Auto takes the first backend of `AUTO_ORDER` whose check, and the algorithm's, accept the
  configuration (a `model_aggregator` passed to the loop runs on `tff` only), and, given the
  task's `prediction_kind`, `check_task`. Other values are returned as they are, with an empty
  reason.

  Raises:
    ValueError: One line, if no backend can run it (the reason `tff` refuses it).
  """
  if config.simulation != AUTO:
    return config, ''
  refusals = []
  for name in AUTO_ORDER:
    candidate = dataclasses.replace(config, simulation=name)
    try:
      if has_model_aggregator and name != 'tff':
        raise ValueError('a model_aggregator passed to run_experiment runs on tff only')
      check(candidate)  # the backend's check, and the algorithm's on it
      if prediction_kind is not None:
        check_task(candidate, prediction_kind)
    except ValueError as e:
      refusals.append((name, str(e)))
      continue
    if not refusals:
      return candidate, f'--simulation=auto runs {name}: the fastest backend for this configuration'
    passed = '; '.join(f'not {n} ({why})' for n, why in refusals)
    return candidate, f'--simulation=auto runs {name}: {passed}'
  raise ValueError(refusals[-1][1])


def backend_name(config) -> str:
  """The backend that runs `config`: `secure` with secure aggregation, else `config.simulation`."""
  return 'secure' if config.aggregation.get('secure_aggregation') else config.simulation


def calls_process_next(config) -> bool:
  """Whether the backend that runs `config` (resolved, not `auto`) calls `process.next`."""
  return get(backend_name(config)).calls_process_next


def get(name: str) -> Backend:
  if name == AUTO:
    raise ValueError('--simulation=auto is resolved to a backend first (backends.resolve)')
  if name not in BACKENDS:
    raise ValueError(f'unknown simulation {name!r}; choose one of {list(simulation_names())}')
  return BACKENDS[name]


def check(config) -> None:
  """Raises a one-line ValueError if the backend `config` selects, or the algorithm on that
  backend (`AlgorithmSpec.check_config`), cannot run it; for `auto`, if no backend can."""
  if config.simulation not in simulation_names():
    raise ValueError(f'unknown simulation {config.simulation!r}; choose one of '
                     f'{list(simulation_names())}')
  if config.simulation == AUTO:
    resolve(config)
    return
  get(backend_name(config)).check(config)
  algorithms_registry.get(config.algorithm).check_config(config)


def build_runner(context: BackendContext) -> RoundRunner:
  """The runner of the backend `context.config` selects (tracing happens here), with a clock."""
  runner = get(backend_name(context.config)).build(context)
  if getattr(runner, 'simulates_clock', False):
    return runner
  return latency.ClockedRunner(runner, asynchronous.latency_model_of(context.config, context.task))


def _client_optimizer(config) -> tff.learning.optimizers.Optimizer:
  return optimizers_lib.create_optimizer(
      config.client_optimizer, config.client_learning_rate, **config.client_optimizer_hparams)


def _server_optimizer(config) -> tff.learning.optimizers.Optimizer:
  return optimizers_lib.create_optimizer(
      config.server_optimizer, config.server_learning_rate, **config.server_optimizer_hparams)


class ProcessRunner:
  """The `tff` backend: TFF's `process.next` on the plan's preprocessed datasets."""

  def __init__(self, process: tff.learning.templates.LearningProcess, task: task_lib.Task,
               dp_mechanism: Optional[dp_lib.GaussianMechanism] = None):
    self._process = process
    self._datasets = plan_lib.PlanDatasets(task)
    # The Gaussian mechanism of the aggregator `process` applies, if it declares one.
    self.dp_mechanism = dp_mechanism

  def next(self, state, plan: plan_lib.RoundPlan):
    return self._process.next(state, self._datasets(plan))

  def close(self) -> None:
    pass


class SecureRunner:
  """The `secure` backend: `SecureAggregationRounds` on the plan (its dropouts join the keys).

  With `--simulation=fused` its clients train on the fast path and it takes the plan's
  `ClientPlan`s; otherwise in TFF's runtime, on the plan's datasets."""

  def __init__(self, rounds: secure_rounds.SecureAggregationRounds, task: task_lib.Task,
               fused: bool = False):
    self._rounds = rounds
    self._inputs = ((lambda plan: list(plan.clients)) if fused
                    else plan_lib.PlanDatasets(task))
    # The Gaussian mechanism the protocol's server applies (ε is reported from it).
    self.dp_mechanism = rounds.dp_mechanism

  def next(self, state, plan: plan_lib.RoundPlan):
    return self._rounds.next(state, self._inputs(plan), num_dropped=plan.num_dropped)

  def close(self) -> None:
    self._rounds.close()


class InGraphRunner:
  """The `fused` and `vectorized` backends with the plain mean: `VectorizedRounds` packs the
  plans by index and sums the updates inside the client loop. It declares no DP mechanism (DP
  runs in `AggregatingInGraphRunner`)."""

  def __init__(self, rounds: vectorized.VectorizedRounds):
    self._rounds = rounds

  def next(self, state, plan: plan_lib.RoundPlan):
    return self._rounds.next(state, list(plan.clients))

  def close(self) -> None:
    self._rounds.close()


class AggregatingInGraphRunner:
  """The `fused` backend with the aggregator stack: clients in one TF program
  (`vectorized.FusedClientPhase`), their deltas stacked, then the stack's arithmetic in one TF
  graph (`tff_lab.aggregators.in_graph`): update attacks, clipping, DP or a robust rule,
  compression. Used whenever an aggregation setting or an update attack is set; the plain mean
  keeps `InGraphRunner`'s program, which sums inside the client loop.
  """

  def __init__(self, phase: vectorized.FusedClientPhase,
               aggregation: in_graph_aggregation.InGraphAggregation,
               server_optimizer: tff.learning.optimizers.Optimizer,
               dp_mechanism: Optional[dp_lib.GaussianMechanism] = None):
    self._phase = phase
    self._aggregation = aggregation
    self._server_optimizer = server_optimizer
    # The Gaussian mechanism the in-graph DP query applies (ε is reported from it).
    self.dp_mechanism = dp_mechanism

  def next(self, state, plan: plan_lib.RoundPlan):
    clients = list(plan.clients)
    # The clients train honestly; an attacker's plan replaces its delta afterwards, as
    # `client_work` does on the tff path.
    attacks = [None if c.attack is None else c.attack.get_single_element() for c in clients]
    honest = dataclasses.replace(plan, clients=tuple(
        dataclasses.replace(c, attack=None) for c in clients))
    results = self._phase(state.global_model_weights, honest,
                          rate=schedules.client_rate_in(state))
    num_examples = sum(r['num_examples'] for r in results)
    if not num_examples:
      raise ValueError('every sampled client has an empty dataset')
    deltas = [np.stack([r['delta'][i] for r in results]) for i in range(len(results[0]['delta']))]
    weights = np.array([r['num_examples'] for r in results], np.float32)
    mean_delta, aggregator_state, measurements = self._aggregation(
        deltas, weights, attacks, state.aggregator)
    new_state, non_finite = server_lib.apply_server_update(
        self._server_optimizer, state, mean_delta, aggregator=aggregator_state)
    train = server_lib.train_metrics(
        sum(r['loss_sum'] for r in results), sum(r['correct'] for r in results), num_examples,
        sum(r['num_steps'] for r in results),
        num_predictions=sum(r['num_predictions'] for r in results))
    return server_lib.round_output(new_state, non_finite, train,
                                   aggregator_metrics=measurements)

  def close(self) -> None:
    self._phase.close()
    self._aggregation.close()


def _check_tff(config) -> None:
  del config  # TFF's runtime runs every algorithm, aggregator and fault.


def _check_in_graph(config) -> None:
  name = config.simulation
  if config.client_sampling != 'fixed':
    raise ValueError(f'--simulation={name} runs --client_sampling=fixed rounds only (a Poisson '
                     'round can have any number of clients; use --simulation=tff)')
  if config.workers:
    raise ValueError(f'--simulation={name} does not use --workers')
  spec = algorithms_registry.get(config.algorithm)
  if spec.build_runner is not None and spec.fused_runner:  # its own runner, fused client phase
    if name != 'fused':
      raise ValueError(f'--algorithm={config.algorithm} runs its own rounds on --simulation=tff|'
                       f'fused, not --simulation={name}')
    return  # the rest is the algorithm's own check
  if not spec.runs_in_graph:
    local_sgd = [n for n in algorithms_registry.names()
                 if algorithms_registry.get(n).runs_in_graph]
    raise ValueError(f'--simulation={name} runs {", ".join(local_sgd)}, not '
                     f'{config.algorithm} (only algorithms whose spec gives an in-graph local '
                     'step and no client state)')
  vectorized.check_supported(config.client_optimizer, model_aggregator_is_default=True,
                             update_attacks=False, simulation=name)
  if _aggregates_in_graph(config):
    if name != 'fused':
      raise ValueError(f'--simulation={name} runs the plain mean only; --simulation=fused runs '
                       'the aggregation settings and update attacks')
    in_graph_aggregation.check_supported(
        aggregators.AggregationSettings(**config.aggregation_settings()), name)


def _aggregates_in_graph(config) -> bool:
  """Whether the in-graph round needs the aggregator stack (any setting but the plain mean)."""
  return bool(config.aggregation) or config.faults.update_attacks


def _check_secure(config) -> None:
  if config.client_sampling != 'fixed':
    raise ValueError('--secure_aggregation needs --client_sampling=fixed: the protocol is sized '
                     'for clients_per_round clients')
  if config.simulation not in ('tff', 'fused'):
    raise ValueError(f'--secure_aggregation cannot be combined with '
                     f'--simulation={config.simulation}: its clients train in TFF or on the fused '
                     'path, and the masking protocol sums their updates')
  if config.simulation == 'fused':
    spec = algorithms_registry.get(config.algorithm)
    if not spec.runs_in_graph or spec.build_runner is not None:
      raise ValueError(f'--secure_aggregation with --simulation=fused runs the local-SGD '
                       f'algorithms of the fused path, not --algorithm={config.algorithm} '
                       '(use --simulation=tff)')
    if config.aggregation.get('secagg_private_metrics'):
      raise ValueError('--secagg_private_metrics sums each client\'s TFF metrics through the '
                       'protocol: it needs --simulation=tff')
    if config.workers:
      raise ValueError('--simulation=fused does not use --workers')


def _build_in_graph(context: BackendContext) -> RoundRunner:
  config = context.config
  spec = algorithms_registry.get(config.algorithm)
  if spec.build_runner is not None:  # e.g. SCAFFOLD: its runner, on the fused client phase
    return spec.build_runner(context, context.client_store)
  if _aggregates_in_graph(config):
    # Built before any other Keras model, as below (a TF1 graph).
    phase = vectorized.FusedClientPhase(
        context.task, config.client_learning_rate, spec.local_step,
        hparams=algorithms_registry.hparams_of(config), client_optimizer=_client_optimizer(config))
    aggregation = in_graph_aggregation.InGraphAggregation(
        aggregators.AggregationSettings(**config.aggregation_settings()), spec.weighted,
        phase.shapes)
    return AggregatingInGraphRunner(phase, aggregation, _server_optimizer(config),
                                    dp_lib.mechanism_of(context.model_aggregator))
  # Same state and mathematics as `context.process`; only how a round is scheduled differs.
  # Build it before any other Keras model: it makes a TF1 graph, which invalidates earlier
  # Keras models.
  return InGraphRunner(vectorized.VectorizedRounds(
      context.task, config.client_learning_rate, _server_optimizer(config),
      hparams=algorithms_registry.hparams_of(config), weighted=spec.weighted, local_step=spec.local_step,
      client_loop=vectorized.SIMULATION_CLIENT_LOOPS[config.simulation],
      client_optimizer=_client_optimizer(config)))


def _build_secure(context: BackendContext) -> RoundRunner:
  config = context.config
  fused_phase = None
  if config.simulation == 'fused':  # a TF1 graph: built before the TFF computations' models
    spec = algorithms_registry.get(config.algorithm)
    fused_phase = vectorized.FusedClientPhase(context.task, config.client_learning_rate,
                                              spec.local_step,
                                              hparams=algorithms_registry.hparams_of(config),
                                              client_optimizer=_client_optimizer(config))
  return SecureRunner(secure_rounds.SecureAggregationRounds(
      context.task, config.algorithm, _client_optimizer(config), _server_optimizer(config),
      aggregators.AggregationSettings(**config.aggregation_settings()),
      hparams=config.algorithm_hparams, with_attacks=config.faults.update_attacks,
      scheduled_client_lr=schedules.scheduled_client_lr(config), fused_phase=fused_phase),
      context.task, fused=fused_phase is not None)


def _build_tff(context: BackendContext) -> RoundRunner:
  spec = algorithms_registry.get(context.config.algorithm)
  if spec.build_runner is not None:  # an algorithm with client state runs its own rounds
    return spec.build_runner(context, context.client_store)
  return ProcessRunner(context.process, context.task,
                       dp_lib.mechanism_of(context.model_aggregator))


register(Backend('tff', "TFF's runtime, one client computation per client (every setting)",
                 _check_tff, _build_tff))
register(Backend('fused', 'all clients in one TF program, one after another (fastest on CPU)',
                 _check_in_graph, _build_in_graph, calls_process_next=False))
register(Backend('vectorized', 'all clients in one TF program, batched with tf.vectorized_map',
                 _check_in_graph, _build_in_graph, calls_process_next=False))
register(Backend('secure', 'clients in TFF or fused, updates summed by the secure aggregation '
                 'protocol',
                 _check_secure, _build_secure))
register(Backend('async', 'FedBuff: buffered asynchronous aggregation on a simulated clock',
                 asynchronous.check, asynchronous.build_runner))
