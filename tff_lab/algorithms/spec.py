"""Algorithm specs: everything the toolkit needs to know about a federated algorithm, in one place.

An `AlgorithmSpec` says how to build the algorithm's TFF learning process and its client work
alone, whether it weights clients by their example counts, which hyperparameters it takes, the
local step it runs (the gradient a client follows, written once and used by TFF's client work
and by the in-graph backends alike), and what it supports (update attacks, the in-graph
backends, secure aggregation). Validation asks the spec, never the algorithm's name.

The registry (`register`, `get`, `names`) maps `--algorithm` values to specs;
`tff_lab.algorithms.registry` registers the built-in ones.

## Adding an algorithm

1. Write `tff_lab/algorithms/<name>.py` (or a module of your own package): its TFF process builder
   and client-work builder, a module docstring citing its paper, and an `AlgorithmSpec`. If it is
   local SGD with a corrected gradient (FedProx's proximal term, SCAFFOLD's control variates),
   give it a `LocalStep`: the in-graph backends then run it too.
2. Register the spec: one line in `tff_lab/algorithms/registry.py` (or `register(SPEC)` in your
   own module). Each of its `hparams` gets a `--<name>` flag (`tff_lab.flags.algorithm_flags`)
   and is read from `ExperimentConfig.algorithm_hparams` (`registry.hparams_of(config)`).
3. Test it step by step against an independent NumPy implementation
   (tests/algorithms/test_<name>.py), on every backend whose `check` accepts it.
"""

import collections
import dataclasses
import math
from typing import Any, Callable, Optional, Sequence

import tensorflow as tf

# An update attack replaces a client's *model delta*, so it only applies to algorithms whose
# clients send one (not FedSGD's gradients).


@dataclasses.dataclass(frozen=True)
class Hyperparameter:
  """One algorithm hyperparameter; its type is its default's (float, int, str or bool).

  Attributes:
    default: Its value when not set (the value at which the algorithm reduces to its base case,
      e.g. FedProx's μ = 0 is FedAvg).
    help: One line for `--help`.
    minimum: For a number, the smallest value allowed (inclusive), or None.
    choices: For a string, the values allowed (empty: any string).
  """

  default: Any
  help: str
  minimum: Optional[float] = None
  choices: tuple[str, ...] = ()

  def __post_init__(self):
    if not isinstance(self.default, (bool, int, float, str)):
      raise TypeError(f'a hyperparameter default is a float, int, str or bool, got '
                      f'{self.default!r}')

  @property
  def type(self) -> type:
    """The type its values take (int for an int default; float also takes ints)."""
    return type(self.default)

  def check(self, name: str, value: Any) -> None:
    """Raises a one-line ValueError for a value this hyperparameter does not take."""
    kind = self.type
    if kind is bool or kind is str:
      if not isinstance(value, kind):
        raise ValueError(f'{name} must be a {kind.__name__}, got {value!r}')
      if self.choices and value not in self.choices:
        raise ValueError(f'{name} must be one of {list(self.choices)}, got {value!r}')
      return
    numeric = (int,) if kind is int else (int, float)
    if (isinstance(value, bool) or not isinstance(value, numeric)
        or not math.isfinite(value)):
      what = 'an integer' if kind is int else 'a finite number'
      raise ValueError(f'{name} must be {what}, got {value!r}')
    if self.minimum is not None and value < self.minimum:
      raise ValueError(f'{name} must be >= {self.minimum:g}, got {value}')


@dataclasses.dataclass(frozen=True)
class LocalStep:
  """The gradient a client follows in one local step, written once for every backend.

  `gradient(grads, weights, anchor, hparams, aux=None)` maps the loss gradient at the client's
  current weights to the direction its optimiser takes: the identity for FedAvg,
  `g + μ·(w − wᵗ)` for FedProx, `g + (c − c_i)` for SCAFFOLD. `weights` and `anchor` (the round's
  global weights wᵗ) are sequences of tensors in the order of the model's trainable variables;
  `aux` holds what the step reads from the client's state (SCAFFOLD's correction). TFF's client
  work (`tff_lab.algorithms.client_work`), the in-graph rounds (`tff_lab.algorithms.vectorized`)
  and the rounds of stateful algorithms call it inside their own TF programs.
  """

  gradient: Callable[..., Sequence[tf.Tensor]]


def plain_gradient(grads, weights, anchor, hparams, aux=None):
  """FedAvg's local step: the loss gradient itself."""
  del weights, anchor, hparams, aux
  return tuple(grads)


def proximal_gradient(grads, weights, anchor, hparams, aux=None):
  """FedProx's local step: ∇F_k(w) + μ·(w − wᵗ), the gradient of F_k(w) + (μ/2)‖w − wᵗ‖²."""
  del aux
  mu = float(hparams.get('mu', 0.0))
  if mu == 0.0:
    return tuple(grads)
  return tuple(g + mu * (w - w0) for g, w, w0 in zip(grads, weights, anchor))


PLAIN_SGD = LocalStep(plain_gradient)
PROXIMAL_SGD = LocalStep(proximal_gradient)


@dataclasses.dataclass(frozen=True)
class AlgorithmSpec:
  """A federated algorithm, as the toolkit builds, validates and runs it.

  Attributes:
    name: The `--algorithm` value.
    description: One line, with the paper.
    build_process: `(task, client_optimizer, server_optimizer, hparams, model_aggregator,
      with_attacks) -> tff.learning.templates.LearningProcess`.
    build_client_work: `(task, client_optimizer, hparams, with_attacks) -> ClientWorkProcess`, the
      client work `build_process` composes, for backends that aggregate outside TFF.
    build_state_process: Optional, with `build_process`'s arguments: the same process's state
      (initialisation, model weights, checkpoint structure) without tracing any client training,
      for backends that run the rounds themselves and never call `next`
      (`composition.StateOnlyProcess`; it cuts the in-graph backends' start-up). None: those
      backends build `build_process`'s.
    weighted: Clients are weighted by example count (the process takes a weighted aggregator).
    hparams: Its hyperparameters by name.
    local_step: Its local step, if it is local SGD with a (corrected) gradient; None otherwise
      (e.g. FedSGD, whose clients send one gradient). The in-graph backends need it.
    sends_model_delta: Clients send a model delta (so update attacks can alter it).
    supports_secure_aggregation: Its client updates can be summed by the masking protocol.
    requires_client_sgd: Non-empty: it implements client SGD only, for this reason (a phrase
      for the error, e.g. "the paper's"); `--client_optimizer` must be `sgd`.
    aggregates_with: Non-empty: it aggregates in its own rounds with this rule (a phrase, e.g.
      'the plain mean') and takes no aggregation settings (robust rules, compression, DP,
      secure aggregation, registered aggregators).
    simulates_update_attacks: Its rounds apply the update attacks of `tff_lab.faults` (with
      `sends_model_delta`); label flips, dropouts and stragglers need nothing of it.
    client_state: Names of the per-client state it keeps (none for stateless algorithms). An
      algorithm with client state gives `initial_store` and `build_runner`; its rounds run
      through that runner, on the `tff` backend (and on `fused` with `fused_runner`).
    check: `(config) -> None`, raising a one-line ValueError for settings it does not
      implement, beyond what the fields above declare (None: nothing more). `check_config`
      checks the declared limits, then calls it.
    initial_store: `(task) -> tff_lab.simulation.client_store.ClientStore`, its state before
      round 1.
    build_runner: `(BackendContext, store) -> RoundRunner`, its rounds on the `tff` backend
      (and on `fused` with `fused_runner`).
    fused_runner: Its `build_runner` also runs `--simulation=fused`, through the fused client
      phase (`tff_lab.algorithms.client_phase.create_client_phase`).
    supports_client_lr_schedule: Its `build_process` and `build_client_work` take
      `scheduled_client_lr` (the first round's client rate), and its clients then read each
      round's rate from the client work's state (`tff_lab.algorithms.schedules`). Server
      schedules need nothing of the algorithm: they set the server optimiser's state.
  """

  name: str
  description: str
  build_process: Callable[..., Any]
  build_client_work: Callable[..., Any]
  weighted: bool = True
  hparams: 'collections.OrderedDict[str, Hyperparameter]' = dataclasses.field(
      default_factory=collections.OrderedDict)
  local_step: Optional[LocalStep] = None
  sends_model_delta: bool = True
  supports_secure_aggregation: bool = True
  requires_client_sgd: str = ''
  aggregates_with: str = ''
  simulates_update_attacks: bool = True
  client_state: tuple[str, ...] = ()
  check: Optional[Callable[[Any], None]] = None
  initial_store: Optional[Callable[..., Any]] = None
  build_runner: Optional[Callable[..., Any]] = None
  fused_runner: bool = False
  supports_client_lr_schedule: bool = False
  build_state_process: Optional[Callable[..., Any]] = None

  def __post_init__(self):
    if self.client_state and (self.initial_store is None or self.build_runner is None):
      raise ValueError(f'algorithm {self.name!r} keeps client state {self.client_state}: give '
                       'its initial_store and build_runner')
    if self.fused_runner and self.build_runner is None:
      raise ValueError(f'algorithm {self.name!r}: fused_runner needs its build_runner')

  @property
  def supports_update_attacks(self) -> bool:
    return self.sends_model_delta and self.simulates_update_attacks

  @property
  def simulations(self) -> tuple[str, ...]:
    """The backends an algorithm with its own runner runs on (empty: it runs through its TFF
    process, on every backend whose check accepts it)."""
    if self.build_runner is None:
      return ()
    return ('tff', 'fused') if self.fused_runner else ('tff',)

  def check_config(self, config) -> None:
    """Raises a one-line ValueError for what `config` asks that this algorithm does not run.

    The limits its fields declare first (client SGD only, its own aggregation, secure
    aggregation, update attacks, the backends of its own runner), then its own `check`. No
    tracing; `tff_lab.simulation.backends.check` calls it for the backend that will run.
    """
    name = f'--algorithm={config.algorithm}'
    if self.requires_client_sgd and config.client_optimizer != 'sgd':
      raise ValueError(f'{name} runs client SGD ({self.requires_client_sgd}), not '
                       f'--client_optimizer={config.client_optimizer}')
    if self.aggregates_with and config.aggregation:
      raise ValueError(f'{name} aggregates with {self.aggregates_with} in its own rounds; it '
                       f'cannot run the aggregation settings {sorted(config.aggregation)}')
    if config.aggregation.get('secure_aggregation') and not self.supports_secure_aggregation:
      raise ValueError(f'{name} cannot run --secure_aggregation: its client updates are not a '
                       'sum the masking protocol can compute')
    if config.faults.update_attacks and not self.supports_update_attacks:
      if self.sends_model_delta:
        raise ValueError(f'{name} does not simulate update attacks (label_flip, dropouts and '
                         'stragglers are supported)')
      others = [s.name for s in _SPECS.values() if s.supports_update_attacks]
      raise ValueError(f'--attack={config.attack} alters local updates; {name} sends gradients '
                       f'(use {", ".join(others)}, or --attack=label_flip)')
    if self.simulations and config.simulation not in self.simulations:
      raise ValueError(f'{name} runs its own rounds on --simulation={"|".join(self.simulations)}, '
                       f'not --simulation={config.simulation}')
    if self.check is not None:
      self.check(config)

  @property
  def runs_in_graph(self) -> bool:
    """Whether the in-graph backends (`fused`, `vectorized`) can run it (stateless local SGD)."""
    return self.local_step is not None and not self.client_state

  def resolve_hparams(self, given: dict) -> 'collections.OrderedDict[str, Any]':
    """`given` completed with the defaults, after checking every name and value.

    Raises:
      ValueError: One line, for an unknown hyperparameter or a value out of range.
    """
    unknown = sorted(set(given) - set(self.hparams))
    if unknown:
      takers = [s.name for s in _SPECS.values() if unknown[0] in s.hparams]
      if takers:  # another algorithm's hyperparameter: say whose
        raise ValueError(f'{unknown[0]} only applies to --algorithm={"|".join(takers)} (got '
                         f'{self.name!r})')
      known = list(self.hparams) or 'none'
      raise ValueError(f'algorithm {self.name!r} has no hyperparameter(s) {unknown}; its '
                       f'hyperparameters: {known}')
    out = collections.OrderedDict()
    for name, hparam in self.hparams.items():
      value = given.get(name, hparam.default)
      hparam.check(name, value)
      out[name] = value
    return out


_SPECS: 'collections.OrderedDict[str, AlgorithmSpec]' = collections.OrderedDict()


def register(spec: AlgorithmSpec) -> AlgorithmSpec:
  """Adds `spec` to the registry; returns it. A name can be registered once."""
  if not isinstance(spec, AlgorithmSpec):
    raise TypeError(f'register takes an AlgorithmSpec, got {type(spec).__name__}')
  if spec.name in _SPECS:
    raise ValueError(f'algorithm {spec.name!r} is already registered')
  for name, hparam in spec.hparams.items():  # one `--<name>` flag serves every algorithm taking it
    other = next((s for s in _SPECS.values() if name in s.hparams), None)
    if other is not None and other.hparams[name].type is not hparam.type:
      raise ValueError(f'algorithm {spec.name!r}: hyperparameter {name!r} is a '
                       f'{hparam.type.__name__}, but algorithm {other.name!r} has {name!r} as a '
                       f'{other.hparams[name].type.__name__} (they share --{name}): rename it')
  _SPECS[spec.name] = spec
  return spec


def names() -> tuple[str, ...]:
  """The registered algorithms, in registration order."""
  return tuple(_SPECS)


def hparam_specs() -> 'collections.OrderedDict[str, tuple[Hyperparameter, tuple[str, ...]]]':
  """Every registered hyperparameter name: (its first registration's Hyperparameter, the
  algorithms that take it). One `--<name>` flag serves them all (`tff_lab.flags.algorithm_flags`).
  """
  out = collections.OrderedDict()
  for spec in _SPECS.values():
    for name, hparam in spec.hparams.items():
      first, takers = out.get(name, (hparam, ()))
      out[name] = (first, takers + (spec.name,))
  return out


def get(name: str) -> AlgorithmSpec:
  """The spec of algorithm `name`; a one-line ValueError listing the known ones otherwise."""
  if name not in _SPECS:
    raise ValueError(f'unknown algorithm {name!r}; choose one of {list(_SPECS)}')
  return _SPECS[name]
