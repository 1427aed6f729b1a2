"""FedBuff: buffered asynchronous aggregation, on a simulated clock (the `async` backend).

Nguyen, Malik, Zhan, Yousefpour, Rabbat, Malek, Huba, "Federated Learning with Buffered
Asynchronous Aggregation", AISTATS 2022 (arXiv:2106.06639), Algorithm 1. The server keeps
`concurrency` clients training at all times. Each starts from the model current when it was
dispatched; when it finishes (after its simulated latency, `tff_lab.simulation.latency`) its
update Δ_i goes into a buffer, and every `buffer_size` (K) arrivals the server aggregates

    Δ̄ = Σ_i s(τ_i)·w_i·Δ_i / Σ_i w_i,     s(τ) = 1/√(1+τ)  (`inverse_sqrt`)  or 1  (`constant`)

with τ_i the staleness of update i (the model versions created between its dispatch and this
aggregation) and w_i its weight: 1 for an unweighted algorithm (the paper's Δ̄/K), the examples
it processed for a weighted one (then τ = 0 everywhere is weighted FedAvg). A client whose update
is not finite gets weight 0, as in TFF's FedAvg. The server optimiser then takes Δ̄ as its
pseudo-gradient (`tff_lab.simulation.server`, the step every backend shares: server SGD at rate η_g
is the paper's x ← x − η_g·Δ̄) and the new model is what later dispatches get. One call of
`next` is one aggregation: one "round" of metrics.csv and of the checkpoints.

The schedule, exactly (`FedBuffRounds`):

* at each instant the server first receives every update that arrives then (in arrival order,
  ties by dispatch order), aggregating whenever the buffer holds K; only then does it refill the
  freed slots, with the model current at that instant. So with zero latency spread and K =
  concurrency = clients_per_round, every aggregation is a synchronous FedAvg round (tested);
* a refill is one dispatch *wave*: f clients sampled uniformly without replacement from the
  clients not training, with `tff_lab.simulation.sampling.fixed_size_sample(idle, f, seed, wave)`
  over the idle clients in the task's order; its `position`-th client shuffles with the shuffle
  seed of (wave, position) and takes the latency of (wave, position). A wave of all clients is
  thus the synchronous planner's round `wave`;
* a client's training depends only on the model it got, so it is computed (one TFF call per model
  version, all the clients dispatched with it, by the shared client phase
  `tff_lab.algorithms.client_phase` with the algorithm's local step) before that model is
  replaced; the update waits, with its arrival time, until the clock reaches it.

What a checkpoint holds (`checkpoint_parts`, the `async_queue` part): the clock, the model
version, the wave and dispatch counters, and every client in flight (who, its wave and position,
the version it started from, when it was dispatched and arrives, and its computed update and
metric sums). Every random draw (sampling, shuffling, latencies) is a pure function of the seed
and these counters, so they are the whole random state and a resumed run continues bit for bit.

Metrics per aggregation: `simulated_time` (the clock at the aggregation), and `async/`
`staleness_mean`, `staleness_p90` (NumPy's linear percentile), `staleness_max`,
`clients_in_flight` (training at that instant), `model_version`, `contributing_clients`, beside
the training loss and accuracy of the buffered updates (`client_work/train/*`, as the other
backends report). Synchronous backends report `simulated_time` from the same latency model
(`latency.ClockedRunner`); `write_time_plot` draws accuracy against simulated time for this run
and every finished sibling run of the same experiment on another backend.

Scope (`check`): stateless local-SGD algorithms (a spec with a `local_step`, no client state and no
runner of its own: fedavg, fedavg_unweighted, fedprox), client SGD, the plain mean (no
aggregation settings), fixed-size sampling, no simulated faults (slow clients are what the latency
model simulates), no client learning-rate schedule (a server schedule applies per aggregation).
"""

import bisect
import collections
import csv
import dataclasses
import json
import math
import numbers
import os
from typing import Any, Optional

import numpy as np
import tensorflow_federated as tff

from tff_lab import faults as faults_lib
from tff_lab.algorithms import client_phase as client_phase_lib
from tff_lab.algorithms import optimizers as optimizers_lib
from tff_lab.algorithms import registry as algorithms_registry
from tff_lab.algorithms import spec as spec_lib
from tff_lab.simulation import latency as latency_lib
from tff_lab.simulation import plan as plan_lib
from tff_lab.simulation import sampling
from tff_lab.simulation import server as server_lib
from tff_lab.tasks import task as task_lib

STALENESS = ('inverse_sqrt', 'constant')
PLOT_FILENAME = 'accuracy_vs_simulated_time.png'
QUEUE_PART = 'async_queue'


def _field(default, help_text):
  return dataclasses.field(default=default, metadata={'help': help_text})


@dataclasses.dataclass(frozen=True)
class AsyncSettings:
  """The asynchronous simulation's settings (`ExperimentConfig.asynchrony` holds the non-default
  ones; the `--<field>` flags are generated from these fields, `tff_lab.flags.async_flags`).

  Attributes:
    concurrency: Clients training at once (default: clients_per_round).
    buffer_size: K, updates per aggregation (default: clients_per_round).
    staleness: Staleness weighting s(τ): `inverse_sqrt` (1/√(1+τ)) or `constant` (1).
    latency_model: `lognormal`, `heavy_tail` or `file` (`tff_lab.simulation.latency`).
    latency_median: Median client latency, simulated seconds (lognormal, heavy_tail).
    latency_sigma: Lognormal spread σ of client medians (0: all clients equally fast).
    latency_jitter: Lognormal σ of each task around its client's median (0: none).
    latency_tail_fraction: heavy_tail: fraction of clients slowed by a Pareto factor.
    latency_tail_alpha: heavy_tail: the Pareto index α of that factor.
    latency_file: file: CSV `client_id,latency` or `client_id,speed` naming every client.
  """

  concurrency: Optional[int] = _field(None, 'Asynchronous: clients training at once (default: '
                                            '--clients_per_round).')
  buffer_size: Optional[int] = _field(None, 'Asynchronous: updates per aggregation K (default: '
                                            '--clients_per_round).')
  staleness: str = _field('inverse_sqrt', 'Asynchronous staleness weight: inverse_sqrt '
                                          '(1/sqrt(1+tau)) or constant.')
  latency_model: str = _field('lognormal', 'Simulated client latency: lognormal, heavy_tail '
                                           '(lognormal x Pareto slow-down) or file.')
  latency_median: float = _field(1.0, 'Median client latency (simulated seconds).')
  latency_sigma: float = _field(0.5, 'Lognormal spread of client median latencies (0: equal).')
  latency_jitter: float = _field(0.1, 'Lognormal spread of each task around its client\'s median.')
  latency_tail_fraction: float = _field(0.1, 'heavy_tail: fraction of clients slowed down.')
  latency_tail_alpha: float = _field(1.5, 'heavy_tail: Pareto index of the slow-down (> 0).')
  latency_file: str = _field('', 'latency_model=file: CSV client_id,latency or client_id,speed.')

  @classmethod
  def from_dict(cls, values: Any) -> 'AsyncSettings':
    """The settings of `ExperimentConfig.asynchrony`, validated (one-line ValueError)."""
    if not isinstance(values, dict):
      raise ValueError(f'asynchrony must be a dict of asynchronous settings, got {values!r}')
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(known))
    if unknown:
      raise ValueError(f'unknown asynchronous setting(s) {unknown}; the settings are {known}')
    settings = cls(**values)
    settings.validate(given=values)
    return settings

  def non_defaults(self) -> dict:
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
            if getattr(self, f.name) != f.default}

  def validate(self, given: Optional[dict] = None) -> None:
    """Raises a one-line ValueError naming the first bad setting (the file is parsed too)."""
    given = self.non_defaults() if given is None else given
    for name in ('concurrency', 'buffer_size'):
      value = getattr(self, name)
      if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)
                                or value < 1):
        raise ValueError(f'{name} must be a positive integer, got {value!r}')
    for name, choices in (('staleness', STALENESS), ('latency_model', latency_lib.MODELS)):
      if getattr(self, name) not in choices:
        raise ValueError(f'unknown {name} {getattr(self, name)!r}; choose one of {list(choices)}')
    for name in ('latency_median', 'latency_sigma', 'latency_jitter', 'latency_tail_fraction',
                 'latency_tail_alpha'):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f'{name} must be a finite number, got {value!r}')
    if self.latency_median <= 0:
      raise ValueError(f'latency_median must be positive, got {self.latency_median}')
    for name in ('latency_sigma', 'latency_jitter'):
      if getattr(self, name) < 0:
        raise ValueError(f'{name} must be >= 0, got {getattr(self, name)}')
    if not 0 <= self.latency_tail_fraction <= 1:
      raise ValueError(f'latency_tail_fraction must be in [0, 1], got {self.latency_tail_fraction}')
    if self.latency_tail_alpha <= 0:
      raise ValueError(f'latency_tail_alpha must be positive, got {self.latency_tail_alpha}')
    for name in ('latency_tail_fraction', 'latency_tail_alpha'):
      if name in given and self.latency_model != 'heavy_tail':
        raise ValueError(f'{name} only applies with latency_model=heavy_tail (got '
                         f'latency_model={self.latency_model})')
    if self.latency_model == 'file':
      if not self.latency_file:
        raise ValueError('latency_model=file needs latency_file (a CSV client_id,latency or '
                         'client_id,speed)')
      for name in ('latency_median', 'latency_sigma'):
        if name in given:
          raise ValueError(f'{name} does not apply with latency_model=file (the file gives each '
                           'client\'s latency)')
      latency_lib.read_latency_file(self.latency_file)  # one line if it does not parse
    elif self.latency_file:
      raise ValueError(f'latency_file only applies with latency_model=file (got '
                       f'latency_model={self.latency_model})')

  def resolve(self, clients_per_round: int) -> tuple[int, int]:
    """(concurrency, buffer_size), defaults filled in."""
    return (self.concurrency or clients_per_round, self.buffer_size or clients_per_round)


def settings_of(config) -> AsyncSettings:
  """The `AsyncSettings` of an `ExperimentConfig` (validated)."""
  return AsyncSettings.from_dict(dict(getattr(config, 'asynchrony', None) or {}))


def latency_model_of(config, task: task_lib.Task) -> latency_lib.LatencyModel:
  """The run's latency model (asynchronous and synchronous backends alike)."""
  return latency_lib.create_latency_model(settings_of(config), list(task.train_data.client_ids),
                                          config.seed)


def check_against_task(config, task: task_lib.Task) -> None:
  """Checks what needs the task's clients, before any tracing (one-line ValueError).

  The latency file must name exactly the training clients; with `--simulation=async`,
  `concurrency` cannot exceed them.
  """
  settings = settings_of(config)
  client_ids = list(task.train_data.client_ids)
  if settings.latency_model == 'file':
    latency_lib.check_file_clients(settings.latency_file,
                                   latency_lib.read_latency_file(settings.latency_file), client_ids)
  if config.simulation == 'async':
    concurrency, _ = settings.resolve(config.clients_per_round)
    if concurrency > len(client_ids):
      raise ValueError(f'concurrency={concurrency} exceeds the {len(client_ids)} training clients '
                       f'of task {config.task!r}')


def staleness_weights(staleness, kind: str) -> np.ndarray:
  """s(τ) per update: 1/√(1+τ) (`inverse_sqrt`) or 1 (`constant`), float64."""
  tau = np.asarray(staleness, np.float64)
  if kind == 'inverse_sqrt':
    return 1.0 / np.sqrt(1.0 + tau)
  if kind == 'constant':
    return np.ones_like(tau)
  raise ValueError(f'unknown staleness {kind!r}; choose one of {list(STALENESS)}')


def buffered_update(deltas, weights, staleness, kind: str) -> list[np.ndarray]:
  """FedBuff's Δ̄ = Σ_i s(τ_i)·w_i·Δ_i / Σ_i w_i (float64 sums, float32 result).

  Args:
    deltas: Per update, one array per trainable variable (x − y, TFF's convention).
    weights: Per update, w_i ≥ 0 (0: the update is left out).
    staleness: Per update, τ_i.
    kind: One of `STALENESS`.

  Returns:
    The update; zeros if every weight is 0.
  """
  w = np.asarray(weights, np.float64)
  total = float(np.sum(w))
  if not deltas or total == 0:
    return [np.zeros_like(np.asarray(d), np.float32) for d in deltas[0]] if deltas else []
  coef = staleness_weights(staleness, kind) * w / total
  return [sum(c * np.asarray(parts[i], np.float64) for i, c in enumerate(coef) if w[i] > 0
              ).astype(np.float32) for parts in zip(*deltas)]


@dataclasses.dataclass
class InFlight:
  """One dispatched client: where it is in the schedule, and its update once computed."""

  client_id: str
  wave: int
  position: int
  version: int
  dispatched_at: float
  arrives_at: float
  seq: int
  result: Optional[collections.OrderedDict] = None

  def to_checkpoint(self) -> collections.OrderedDict:
    return collections.OrderedDict((f.name, getattr(self, f.name))
                                   for f in dataclasses.fields(self))

  @classmethod
  def from_checkpoint(cls, saved) -> 'InFlight':
    return cls(**dict(saved))


def _bound_step(local_step: spec_lib.LocalStep, hparams: dict) -> spec_lib.LocalStep:
  """`local_step` with the run's hyperparameters (the client phase passes none)."""
  hparams = dict(hparams)

  def gradient(grads, weights, anchor, unused_hparams, aux=None):
    del unused_hparams
    return local_step.gradient(grads, weights, anchor, hparams, aux=aux)

  return spec_lib.LocalStep(gradient)


class FedBuffRounds:
  """The `async` backend's runner: one FedBuff aggregation per `next` (see the module docstring).

  Attributes:
    clock, version, wave, seq, free_slots: The schedule's counters (simulated seconds; model
      versions = aggregations done; dispatch waves; dispatches; slots freed and not yet refilled).
    in_flight: The clients training, by (arrival time, dispatch order).
    buffer: Updates received since the last aggregation.
  """

  simulates_clock = True

  def __init__(self, task: task_lib.Task, client_phase, server_optimizer, *, concurrency: int,
               buffer_size: int, staleness: str, weighted: bool,
               latency_model: latency_lib.LatencyModel, seed: int):
    """The runner (the client phase is already traced).

    Args:
      task: The task trained.
      client_phase: `build_client_phase(task, η_l, local_step)`.
      server_optimizer: Applies Δ̄.
      concurrency: Clients training at once (at most the task's clients).
      buffer_size: K.
      staleness: One of `STALENESS`.
      weighted: w_i = examples processed (else 1).
      latency_model: Client latencies.
      seed: The run's seed (sampling and shuffling).
    """
    self._task = task
    self._client_ids = list(task.train_data.client_ids)
    if not 1 <= concurrency <= len(self._client_ids):
      raise ValueError(f'concurrency must be in [1, {len(self._client_ids)}], got {concurrency}')
    self._client_phase = client_phase
    self._server_optimizer = server_optimizer
    self.concurrency, self.buffer_size = int(concurrency), int(buffer_size)
    self._staleness = staleness
    self._weighted = weighted
    self._latency = latency_model
    self._seed = int(seed)
    self.clock, self.version, self.wave, self.seq = 0.0, 0, 0, 0
    self.free_slots = self.concurrency
    self.in_flight: list[InFlight] = []
    self.buffer: list[InFlight] = []
    self.last_arrivals: list[tuple[str, int]] = []  # (client, version) of the last aggregation

  # The schedule (no TFF): receive, refill, advance the clock.

  def _dispatch(self) -> None:
    """One wave: refills the free slots at the current instant with the current model."""
    self.wave += 1
    training = {t.client_id for t in self.in_flight}
    idle = [c for c in self._client_ids if c not in training]
    picked = sampling.fixed_size_sample(len(idle), self.free_slots, self._seed, self.wave)
    for position, index in enumerate(picked):
      cid = idle[index]
      task = InFlight(cid, self.wave, position, self.version, self.clock,
                      self.clock + self._latency.task_latency(cid, self.wave, position), self.seq)
      self.seq += 1
      bisect.insort(self.in_flight, task, key=lambda t: (t.arrives_at, t.seq))
    self.free_slots = 0

  def collect(self) -> None:
    """Runs the schedule until the buffer holds `buffer_size` updates."""
    while len(self.buffer) < self.buffer_size:
      if self.in_flight and self.in_flight[0].arrives_at == self.clock:
        self.buffer.append(self.in_flight.pop(0))
        self.free_slots += 1
      elif self.free_slots:
        self._dispatch()
      else:
        self.clock = self.in_flight[0].arrives_at

  # Training and aggregation.

  def _train_pending(self, state) -> None:
    """Computes, in one TFF call, every update started from the current model and not yet done."""
    pending = [t for t in self.buffer + self.in_flight if t.result is None]
    if not pending:
      return
    if any(t.version != self.version for t in pending):
      raise RuntimeError('an update of an older model version was never computed')
    by_wave = collections.defaultdict(list)
    for t in pending:
      by_wave[t.wave].append(t)
    tasks, plans = [], []
    no_faults = faults_lib.FaultConfig()
    for wave in sorted(by_wave):
      members = sorted(by_wave[wave], key=lambda t: t.position)
      if [t.position for t in members] != list(range(len(members))):
        raise RuntimeError(f'wave {wave} is incomplete')
      sampled = [t.client_id for t in members]
      roles = faults_lib.assign_roles(sampled, no_faults, self._seed, wave)
      plans += faults_lib.plan_client_inputs(
          self._task, sampled, roles, no_faults, self._seed, wave,
          lambda position, wave=wave: plan_lib.client_shuffle_seed(self._seed, wave, position))
      tasks += members
    inputs = faults_lib.materialize_client_inputs(self._task, plans, None)
    results = self._client_phase(state.global_model_weights, inputs)
    for t, result in zip(tasks, results):
      t.result = collections.OrderedDict(
          delta=[np.asarray(d, np.float32) for d in result['delta']],
          num_examples=int(result['num_examples']), num_steps=int(result['num_steps']),
          loss_sum=float(result['loss_sum']), correct=float(result['correct']))

  def next(self, state: Any, plan: plan_lib.RoundPlan
           ) -> tff.learning.templates.LearningProcessOutput:
    """The next aggregation (`plan` only numbers it: the schedule samples its own clients)."""
    if plan.round_num != self.version + 1:
      raise RuntimeError(f'aggregation {self.version + 1} was asked for as round '
                         f'{plan.round_num}: the asynchronous queue does not match the state')
    self.collect()
    self._train_pending(state)
    arrived, self.buffer = self.buffer, []
    self.last_arrivals = [(t.client_id, t.version) for t in arrived]
    taus = [self.version - t.version for t in arrived]
    deltas, weights = [], []
    totals = np.zeros(4)
    for t in arrived:
      r = t.result
      totals += [r['loss_sum'], r['correct'], r['num_examples'], r['num_steps']]
      finite = all(np.all(np.isfinite(d)) for d in r['delta'])
      deltas.append(r['delta'])
      weights.append(0.0 if not finite else float(r['num_examples']) if self._weighted else 1.0)
    update = buffered_update(deltas, weights, taus, self._staleness)
    new_state, non_finite = server_lib.apply_server_update(self._server_optimizer, state, update)
    self.version += 1
    output = server_lib.round_output(new_state, non_finite, server_lib.train_metrics(*totals))
    output.metrics['simulated_time'] = self.clock
    output.metrics['async'] = collections.OrderedDict(
        staleness_mean=float(np.mean(taus)), staleness_p90=float(np.percentile(taus, 90)),
        staleness_max=int(np.max(taus)), clients_in_flight=len(self.in_flight),
        model_version=self.version, contributing_clients=int(np.count_nonzero(weights)))
    return output

  # Checkpoints.

  def checkpoint_parts(self) -> 'collections.OrderedDict[str, Any]':
    """The `async_queue` checkpoint part: the schedule's counters and every client in flight."""
    return collections.OrderedDict([(QUEUE_PART, collections.OrderedDict(
        clock=float(self.clock), version=self.version, wave=self.wave, seq=self.seq,
        free_slots=self.free_slots, concurrency=self.concurrency, buffer_size=self.buffer_size,
        seed=self._seed, in_flight=[t.to_checkpoint() for t in self.in_flight],
        buffer=[t.to_checkpoint() for t in self.buffer]))])

  def restore_parts(self, extra: Optional[dict]) -> None:
    """Restores the schedule from a checkpoint's extra parts.

    Raises:
      ValueError: One line, if the checkpoint holds no asynchronous queue (a run of another
        backend) or one of other settings.
    """
    saved = (extra or {}).get(QUEUE_PART)
    if saved is None:
      raise ValueError('the checkpoint to resume holds no asynchronous queue: the run was not '
                       'made with --simulation=async (resume it with its own --simulation, pass '
                       '--overwrite, or choose another --experiment_name)')
    for name, value in (('concurrency', self.concurrency), ('buffer_size', self.buffer_size),
                        ('seed', self._seed)):
      if saved[name] != value:
        raise ValueError(f'the checkpoint\'s asynchronous queue has {name}={saved[name]}, the run '
                         f'{value}')
    self.clock, self.version = float(saved['clock']), int(saved['version'])
    self.wave, self.seq, self.free_slots = int(saved['wave']), int(saved['seq']), int(
        saved['free_slots'])
    self.in_flight = [InFlight.from_checkpoint(t) for t in saved['in_flight']]
    self.buffer = [InFlight.from_checkpoint(t) for t in saved['buffer']]

  def close(self) -> None:
    pass


def check(config) -> None:
  """The `async` backend's check: refuses, in one line, what FedBuff here does not run."""
  spec = algorithms_registry.get(config.algorithm)
  if spec.local_step is None or spec.client_state or spec.build_runner is not None:
    ok = [n for n in algorithms_registry.names() if _runs_async(algorithms_registry.get(n))]
    raise ValueError(f'--simulation=async runs {", ".join(ok)}, not --algorithm='
                     f'{config.algorithm} (stateless local SGD: a spec with a local step, no '
                     'client state and no runner of its own)')
  if config.client_optimizer != 'sgd' or config.client_optimizer_hparams:
    raise ValueError(f'--simulation=async runs client SGD without options, not '
                     f'--client_optimizer={config.client_optimizer} '
                     f'{dict(config.client_optimizer_hparams) or ""}'.rstrip())
  if config.aggregation:
    raise ValueError(f'--simulation=async aggregates with its staleness-weighted mean; it cannot '
                     f'run the aggregation settings {sorted(config.aggregation)}')
  faults = config.faults
  if faults.byzantine_fraction or faults.dropout_fraction or faults.straggler_fraction:
    raise ValueError('--simulation=async does not simulate attacks, dropouts or stragglers (slow '
                     'clients are what its latency model simulates)')
  if config.client_sampling != 'fixed':
    raise ValueError('--simulation=async samples each dispatch wave uniformly from the idle '
                     'clients; --client_sampling=poisson does not apply')
  if getattr(config, 'client_lr_schedule', None):
    raise ValueError('--simulation=async trains every client at --client_learning_rate; a '
                     '--client_lr_schedule does not apply (--server_lr_schedule does, per '
                     'aggregation)')


def _runs_async(spec: spec_lib.AlgorithmSpec) -> bool:
  return spec.local_step is not None and not spec.client_state and spec.build_runner is None


def _hparams(config) -> dict:
  hparams_of = getattr(algorithms_registry, 'hparams_of', None)
  if hparams_of is not None and hasattr(config, 'algorithm_hparams'):
    return dict(hparams_of(config))
  spec = algorithms_registry.get(config.algorithm)
  return dict(spec.resolve_hparams({'mu': config.mu} if 'mu' in spec.hparams else {}))


def build_runner(context) -> FedBuffRounds:
  """The `async` backend's builder (`tff_lab.simulation.backends`; traces the client phase)."""
  config, task = context.config, context.task
  spec = algorithms_registry.get(config.algorithm)
  concurrency, buffer_size = settings_of(config).resolve(config.clients_per_round)
  client_phase = client_phase_lib.build_client_phase(
      task, config.client_learning_rate, _bound_step(spec.local_step, _hparams(config)))
  return FedBuffRounds(
      task, client_phase, optimizers_lib.create_optimizer(
          config.server_optimizer, config.server_learning_rate, **config.server_optimizer_hparams),
      concurrency=concurrency, buffer_size=buffer_size, staleness=settings_of(config).staleness,
      weighted=spec.weighted, latency_model=latency_model_of(config, task), seed=config.seed)


# Accuracy against simulated time.

_ACCURACY_COLUMNS = ('central_eval_accuracy', 'fed_eval_accuracy', 'train_accuracy')
# Settings that may differ between runs of "the same experiment" on different backends.
_NOT_COMPARED = ('simulation', 'experiment_name', 'rounds', 'root_output_dir', 'overwrite',
                 'progress', 'max_concurrent_clients', 'workers', 'worker_timeout')


def _read_rows(csv_path: str) -> list[dict]:
  with open(csv_path, newline='') as f:
    return list(csv.DictReader(f))


def _same_experiment(exp_dir: str, other_dir: str) -> bool:
  def load(d):
    with open(os.path.join(d, 'config.json'), encoding='utf-8') as f:
      saved = json.load(f)
    return {k: v for k, v in saved.items() if k not in _NOT_COMPARED}
  try:
    return load(exp_dir) == load(other_dir)
  except (OSError, ValueError, AttributeError):
    return False


def plot_accuracy_vs_simulated_time(runs: 'collections.OrderedDict[str, str]', png_path: str,
                                    title: str = '') -> list[str]:
  """Plots accuracy against `simulated_time` for each run's metrics.csv into `png_path`.

  Args:
    runs: Label -> metrics.csv path.
    png_path: The PNG written.
    title: Figure title.

  Returns:
    The columns drawn, one per run (the first of central, federated evaluation or training
    accuracy that the run reports; runs without `simulated_time` are left out).
  """
  # A Figure of its own (not pyplot, whose backend a notebook in this process uses inline).
  from matplotlib import figure  # pylint: disable=g-import-not-at-top  (only for the plot)
  fig = figure.Figure(figsize=(6.5, 4))
  ax = fig.subplots()
  drawn = []
  for label, csv_path in runs.items():
    rows = _read_rows(csv_path)
    for column in _ACCURACY_COLUMNS:
      points = [(float(r['simulated_time']), float(r[column])) for r in rows
                if r.get('simulated_time') and r.get(column)]
      if points:
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker='.' if len(xs) < 30 else None, label=f'{label}: {column}')
        drawn.append(column)
        break
  ax.set_xlabel('simulated time (latency model units)')
  ax.set_ylabel('accuracy')
  ax.grid(alpha=0.3)
  if ax.lines:
    ax.legend(fontsize=8)
  if title:
    ax.set_title(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(png_path, dpi=100)
  return drawn


def write_time_plot(config) -> Optional[str]:
  """After an asynchronous run: accuracy vs simulated time, with the finished sibling runs.

  Siblings are the experiment directories next to this one whose config.json is this run's up to
  the backend (`--simulation`), the name, the rounds and settings that change nothing computed;
  re-running the asynchronous command after them redraws the plot with them. Returns the PNG's
  path, or None for a synchronous run.
  """
  if config.simulation != 'async':
    return None
  exp_dir = config.experiment_dir
  runs = collections.OrderedDict([(f'{config.experiment_name} (async)',
                                   os.path.join(exp_dir, 'metrics.csv'))])
  root = config.root_output_dir
  for name in sorted(os.listdir(root)):
    other = os.path.join(root, name)
    if (name != config.experiment_name and os.path.isfile(os.path.join(other, 'metrics.csv'))
        and _same_experiment(exp_dir, other)):
      with open(os.path.join(other, 'config.json'), encoding='utf-8') as f:
        simulation = json.load(f).get('simulation')
      runs[f'{name} ({simulation})'] = os.path.join(other, 'metrics.csv')
  png = os.path.join(exp_dir, PLOT_FILENAME)
  plot_accuracy_vs_simulated_time(runs, png, title=f'{config.task} — {config.algorithm}')
  return png
