"""Aggregators of your own: `tff_lab.aggregators.register(name, factory_builder)`.

`factory_builder(weighted, **options)` returns a `tff.aggregators` factory: a
`WeightedAggregationFactory` when `weighted` is True (FedAvg, FedSGD, FedProx, and any algorithm
under update attacks), an `UnweightedAggregationFactory` otherwise (`fedavg_unweighted`). Its
keyword options, each with a bool, int, float or str default, become the settings
`aggregation['aggregator_options']` and, in the console scripts, the flags `--<name>_<option>`.

A registered aggregator is a setting like the built-in rules (`--aggregator=<name>`, recorded in
config.json, so resuming without it is refused). It takes the rule's place in the stack
(`tff_lab.aggregators.stack`): `clip_norm` / `adaptive_clip` clip before it, the byte counts
are added as for the plain mean; DP, compression and secure aggregation are refused with it in
one line. An aggregator that adds DP noise itself declares its mechanism with
`tff_lab.aggregators.dp.attach_mechanism`, so that ε is reported from it.

Example (a norm-bounded mean)::

    def build_norm_mean(weighted: bool, max_norm: float = 1.0):
      mean = (tff.aggregators.MeanFactory() if weighted
              else tff.aggregators.UnweightedMeanFactory())
      return tff.aggregators.clipping_factory(max_norm, mean)

    tff_lab.aggregators.register('norm_mean', build_norm_mean)
"""

import collections
import inspect
from typing import Any, Callable, Mapping, Optional

import tensorflow_federated as tff

from tff_lab import builder_options

_BUILDERS: 'collections.OrderedDict[str, Callable[..., Any]]' = collections.OrderedDict()
# Names the stack owns (its rules and `mean`); set by stack.py, which imports this module.
RESERVED: tuple[str, ...] = ()


def register(name: str, factory_builder: Callable[..., Any]) -> Callable[..., Any]:
  """Adds aggregator `name`, built by `factory_builder(weighted, **options)`; returns the builder.

  Raises:
    ValueError: One line, for a name that is not an identifier, is built in or already
      registered, a builder without a first `weighted` parameter, or an option that cannot be a
      flag (see `tff_lab.builder_options`).
    TypeError: If `factory_builder` is not callable.
  """
  if not isinstance(name, str) or not name.isidentifier():
    raise ValueError(f'aggregator name must be an identifier (it prefixes the flags '
                     f'--<name>_<option>), got {name!r}')
  if name in RESERVED:
    raise ValueError(f'aggregator {name!r} is built in; register yours under another name')
  if name in _BUILDERS:
    raise ValueError(f'aggregator {name!r} is already registered')
  what = f'aggregator {name!r}'
  builder_options.check_options(factory_builder, what, skip=('weighted',))
  params = list(inspect.signature(factory_builder).parameters)
  if not params or params[0] != 'weighted':
    raise ValueError(f'{what}: the factory builder\'s first parameter must be `weighted` (True: '
                     f'return a WeightedAggregationFactory), got {params[:1]}')
  _BUILDERS[name] = factory_builder
  return factory_builder


def names() -> tuple[str, ...]:
  """The registered aggregators, in registration order."""
  return tuple(_BUILDERS)


def is_registered(name: str) -> bool:
  return name in _BUILDERS


def option_specs(name: str) -> 'collections.OrderedDict[str, builder_options.Option]':
  """Options of registered aggregator `name` (defaults and flag types), in signature order."""
  return builder_options.options(_get(name), skip=('weighted',))


def resolve_options(name: str, given: Optional[Mapping[str, Any]]
                    ) -> 'collections.OrderedDict[str, Any]':
  """`given` completed with the defaults, after checking each name and type (one-line
  ValueError)."""
  specs, given = option_specs(name), dict(given or {})
  unknown = sorted(set(given) - set(specs))
  if unknown:
    raise ValueError(f'aggregator {name!r} has no option(s) {unknown}; its options are '
                     f'{list(specs)}')
  out = collections.OrderedDict()
  for option, spec in specs.items():
    value = given.get(option, spec.default)
    builder_options.check_value(f'aggregator {name!r}', option, spec, value)
    out[option] = value
  return out


def build(name: str, weighted: bool, options: Optional[Mapping[str, Any]] = None
          ) -> tff.aggregators.AggregationFactory:
  """The factory of registered aggregator `name` (no TFF tracing).

  Raises:
    ValueError: One line, for bad options (the builder's own ValueErrors and TypeErrors too) or
      a factory of the wrong kind for `weighted`.
  """
  resolved = resolve_options(name, options)
  try:
    factory = _get(name)(weighted, **resolved)
  except (ValueError, TypeError) as e:
    raise ValueError(f'aggregator {name!r}: {" ".join(str(e).split())}') from None
  kind = (tff.aggregators.WeightedAggregationFactory if weighted
          else tff.aggregators.UnweightedAggregationFactory)
  if not isinstance(factory, kind):
    need = 'weighted' if weighted else 'unweighted'
    raise ValueError(f'aggregator {name!r} returned a {type(factory).__name__} for '
                     f'weighted={weighted}; the algorithm needs a {need} '
                     f'tff.aggregators.{kind.__name__}')
  return factory


def _get(name: str) -> Callable[..., Any]:
  if name not in _BUILDERS:
    raise ValueError(f'aggregator {name!r} is not registered; registered: {list(_BUILDERS)}')
  return _BUILDERS[name]
