"""Learning-rate schedules for the client and server optimisers, per round.

As TFF's `tff.learning.algorithms.build_weighted_fed_avg_with_optimizer_schedule` does for the
clients (a rate that is a function of the round number), for both optimisers and every algorithm
whose spec says it supports it. The shapes are the usual ones of the FL literature's
experiments: step and exponential decay (Reddi et al., "Adaptive Federated Optimization", ICLR
2021, arXiv:2003.00295, §5 and their `optimization/` code's `--client_lr_schedule` /
`--server_lr_schedule`), inverse square root, and a linear warm-up (Goyal et al., "Accurate,
Large Minibatch SGD", arXiv:1706.02677, §2.2).

For round r (from 1), with t = r − 1 rounds before it and base rate η₀:

    constant      η₀
    step          η₀ · decay_rate^⌊t / decay_rounds⌋
    exponential   η₀ · decay_rate^(t / decay_rounds)
    inverse_sqrt  η₀ / √(1 + t / decay_rounds)

times min(1, r / warmup_rounds) during a warm-up of `warmup_rounds` > 0 rounds.

How a rate reaches the computation (`tff_lab.simulation.backends.ScheduledRunner`): before each
round the server rate is written into the server optimiser's state (TFF optimisers read their
`learning_rate` from it), and the client rate into the client work's state, which the clients
receive with the model (`tff_lab.algorithms.client_work`) or the in-graph round takes as an
input. Both are in the checkpointed state, so resume is exact.
"""

import collections
import dataclasses
import math
from typing import Any, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

KINDS = ('constant', 'step', 'exponential', 'inverse_sqrt')
ROLES = ('client', 'server')


@dataclasses.dataclass(frozen=True)
class LearningRateSchedule:
  """A per-round multiplier of an optimiser's learning rate (see the module docstring).

  A typed configuration section: `ExperimentConfig.client_lr_schedule` and `server_lr_schedule`
  hold the fields that differ from these defaults, and `--client_lr_<field>` /
  `--server_lr_<field>` flags are generated from them (`tff_lab.flags.section_flags`).
  """

  schedule: str = dataclasses.field(default='constant', metadata={
      'help': f'Learning-rate schedule over rounds: {"|".join(KINDS)}.'})
  decay_rate: float = dataclasses.field(default=0.5, metadata={
      'help': 'step/exponential: factor per decay_rounds rounds, in (0, 1].'})
  decay_rounds: int = dataclasses.field(default=10, metadata={
      'help': 'step/exponential/inverse_sqrt: rounds per decay period (>= 1).'})
  warmup_rounds: int = dataclasses.field(default=0, metadata={
      'help': 'Linear warm-up over the first N rounds (0: none), with any schedule.'})

  @classmethod
  def from_settings(cls, settings: dict, role: str) -> 'LearningRateSchedule':
    """The schedule of a config section dict, validated.

    Raises:
      ValueError: One line naming the `--<role>_lr_<field>` setting at fault.
    """
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(settings) - set(known))
    if unknown:
      raise ValueError(f'unknown {role} learning-rate schedule setting(s) {unknown}; the '
                       f'settings are {known}')
    schedule = cls(**settings)
    schedule.validate(role, given=settings)
    return schedule

  def validate(self, role: str = 'client', given: Any = ()) -> None:
    """Raises a one-line ValueError for a bad or ineffective setting."""
    flag = lambda name: f'--{role}_lr_{name}'
    if self.schedule not in KINDS:
      raise ValueError(f'unknown {flag("schedule")}={self.schedule!r}; choose one of '
                       f'{list(KINDS)}')
    if isinstance(self.decay_rate, bool) or not 0 < self.decay_rate <= 1:
      raise ValueError(f'{flag("decay_rate")} must be in (0, 1], got {self.decay_rate}')
    for name in ('decay_rounds', 'warmup_rounds'):
      value = getattr(self, name)
      low = 1 if name == 'decay_rounds' else 0
      if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f'{flag(name)} must be an integer >= {low}, got {value!r}')
    uses = {'constant': (), 'step': ('decay_rate', 'decay_rounds'),
            'exponential': ('decay_rate', 'decay_rounds'), 'inverse_sqrt': ('decay_rounds',)}
    idle = [n for n in ('decay_rate', 'decay_rounds') if n in given
            and n not in uses[self.schedule]]
    if idle:  # a setting that would silently do nothing
      raise ValueError(f'{flag(idle[0])} has no effect with {flag("schedule")}='
                       f'{self.schedule}')

  @property
  def is_constant(self) -> bool:
    return self.schedule == 'constant' and self.warmup_rounds == 0

  def factor(self, round_num: int) -> float:
    """The multiplier of the base rate in round `round_num` (from 1)."""
    if round_num < 1:
      raise ValueError(f'rounds count from 1, got {round_num}')
    t = round_num - 1
    if self.schedule == 'step':
      value = self.decay_rate ** (t // self.decay_rounds)
    elif self.schedule == 'exponential':
      value = self.decay_rate ** (t / self.decay_rounds)
    elif self.schedule == 'inverse_sqrt':
      value = 1.0 / math.sqrt(1.0 + t / self.decay_rounds)
    else:
      value = 1.0
    if self.warmup_rounds:
      value *= min(1.0, round_num / self.warmup_rounds)
    return value

  def rate(self, base: float, round_num: int) -> float:
    """The learning rate of round `round_num`, from the base rate."""
    return float(base) * self.factor(round_num)


def client_rate_in(state: Any) -> Optional[np.float32]:
  """The round's client rate held in a `LearningAlgorithmState`'s client work state, if any.

  Scheduled client work keeps a float32 scalar there (`client_work.build_client_work`);
  unscheduled client work keeps an empty structure.
  """
  value = state.client_work
  if isinstance(value, (float, np.floating)) or (isinstance(value, (np.ndarray, tf.Tensor))
                                                 and tuple(value.shape) == ()):
    return np.float32(value)
  return None


def with_rates(state: Any, client_rate: Optional[float], server_rate: Optional[float]) -> Any:
  """`state` with the round's rates: the server optimiser's `learning_rate` and, for scheduled
  client work, the client work's state. None leaves a rate as it is."""
  client_work, finalizer = state.client_work, state.finalizer
  if client_rate is not None:
    if client_rate_in(state) is None:
      raise ValueError('this process\'s client work takes no scheduled rate (build it with '
                       'scheduled_client_lr)')
    client_work = np.float32(client_rate)
  if server_rate is not None:
    finalizer = collections.OrderedDict(finalizer)
    key = tff.learning.optimizers.LEARNING_RATE_KEY
    finalizer[key] = np.asarray(server_rate, np.asarray(finalizer[key]).dtype)
  return tff.learning.templates.LearningAlgorithmState(
      global_model_weights=state.global_model_weights, distributor=state.distributor,
      client_work=client_work, aggregator=state.aggregator, finalizer=finalizer)


def of_config(config, role: str) -> LearningRateSchedule:
  """The `role` ('client' or 'server') schedule of an `ExperimentConfig`, validated."""
  return LearningRateSchedule.from_settings(getattr(config, f'{role}_lr_schedule'), role)


def scheduled_client_lr(config) -> Optional[float]:
  """The first round's client rate if the config schedules the client rate, else None (the
  `scheduled_client_lr` of `tff_lab.algorithms.registry.create_learning_process`)."""
  schedule = of_config(config, 'client')
  return None if schedule.is_constant else schedule.rate(config.client_learning_rate, 1)


class ScheduledRunner:
  """Sets each round's scheduled rates in the state, then runs the round on `runner`.

  Wraps any backend's `RoundRunner` (they all read the server rate from the server optimiser's
  state and the client rate from the client work's state), and adds the rates to the round's
  metrics (`client_learning_rate`, `server_learning_rate`).
  """

  def __init__(self, runner: Any, config):
    self._runner = runner
    self._client = of_config(config, 'client')
    self._server = of_config(config, 'server')
    self._client_base = float(config.client_learning_rate)
    self._server_base = float(config.server_learning_rate)

  @classmethod
  def wrap(cls, runner: Any, config) -> Any:
    """`runner`, wrapped when the config schedules a rate."""
    if of_config(config, 'client').is_constant and of_config(config, 'server').is_constant:
      return runner
    return cls(runner, config)

  def __getattr__(self, name: str) -> Any:  # dp_mechanism, checkpoint_parts, ... of the runner
    return getattr(self._runner, name)

  def rates(self, round_num: int) -> tuple[Optional[float], Optional[float]]:
    """(client, server) rates of round `round_num`; None for an unscheduled one."""
    client = None if self._client.is_constant else self._client.rate(self._client_base,
                                                                      round_num)
    server = None if self._server.is_constant else self._server.rate(self._server_base,
                                                                     round_num)
    return client, server

  def next(self, state: Any, plan) -> Any:
    client, server = self.rates(plan.round_num)
    output = self._runner.next(with_rates(state, client, server), plan)
    metrics = collections.OrderedDict(output.metrics)
    for name, rate in (('client_learning_rate', client), ('server_learning_rate', server)):
      if rate is not None:
        metrics[name] = np.float32(rate)
    return tff.learning.templates.LearningProcessOutput(output.state, metrics)

  def close(self) -> None:
    self._runner.close()
