"""Which round metrics may leave the process under DP, and what ε covers.

ε (`tff_lab.privacy.accounting`, counted by `tff_lab.privacy.ledger`) bounds what the *noised,
clipped mean of the client updates* reveals about one client (McMahan, Ramage, Talwar, Zhang,
ICLR 2018, arXiv:1710.06963), and, by post-processing (Dwork & Roth, "The Algorithmic Foundations
of Differential Privacy", 2014, Prop. 2.1), everything computed from it without further access to
client data. Every other quantity a round produces is classified by name, as one of:

* `covered`: a function of the noised releases alone. The model and the server optimizer's state
  (`finalizer/*`, `distributor/*`, checkpoints, final_model.keras); with dp='adaptive',
  `aggregator/dp_query_metrics/clip`, the clip that TFF's quantile estimator derives from the
  *noised* unclipped count (Andrew et al., NeurIPS 2021, arXiv:1905.03871; its noise is part of
  TFF's total noise multiplier, so ε accounts for it). TFF's DP factory reports no clipped count.
* `server_data`: `central_eval_*`, the ε-DP model evaluated on the pooled test split that the
  server holds. No client's training data enters beyond the model, so releasing them costs no
  ε, provided that split is the server's own data (true of tff_lab's tasks, whose centralised
  test split is disjoint from the clients' training data).
* `public`: constants of the configuration and the protocol. Byte counts per client
  (`upload_bytes_per_client` and the like: set by the model size and the codec), `dp_noise_stddev`
  (zC), `clipping_norm` with dp='fixed' (C), the secure-aggregation `threshold` and
  `vector_length`; and, with fixed-size sampling only, client counts (`num_clients`,
  `faults/*`, secure aggregation's `clients_started`, `masked_vectors_held`, `recovered_masks`):
  m and the simulated fault counts follow from the configuration.
* `accounting`: `dp_epsilon`, `dp_delta` and other `dp_*` figures: computed from the public
  mechanism and the count of releases.
* `private`: everything else, withheld by default. The training metrics are sums over the sampled
  clients' data without noise (`train_loss`, `train_accuracy`, `train_examples` is the sampled
  clients' exact example total, `client_work/*`); so is federated evaluation (`fed_eval_*`, every
  client, no noise); clipped counts and fractions outside the DP query, secure aggregation's
  `clipped_coordinates`, and timings (`round_seconds`, `*_seconds`: wall time grows with the
  clients' data); with Poisson sampling, any client count, since the sample size is itself
  private (one client more or less changes it), and secure aggregation's measurements, which
  depend on it. A name not listed here is private too: a new metric is withheld until someone
  shows it is safe.

`release_metrics(metrics, mode)` applies the policy to one round. Mode 'withheld' (the default
under DP) removes the private metrics before they leave the process and says which it removed;
'public' (an explicit opt-in) releases everything, and `coverage_statement` then says that ε does
not cover the private ones. No mode adds noise to training metrics: noised metrics would need
their own share of the privacy budget in the ledger.
"""

import collections
import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

MODES = ('withheld', 'public')
DEFAULT_MODE = 'withheld'
CLASSES = ('covered', 'server_data', 'public', 'accounting', 'private')
_DP_MODES = ('fixed', 'adaptive')
_SAMPLING = ('fixed', 'poisson')

# Leaf names that are constants of the configuration and the protocol.
_CONSTANT_LEAVES = frozenset((
    'upload_bytes_per_client', 'download_bytes_per_client', 'float32_upload_bytes_per_client',
    'compression_ratio', 'extra_upload_bytes_per_client', 'extra_download_bytes_per_client',
    'dp_noise_stddev', 'threshold', 'vector_length'))
# Leaf names that count clients: fixed by m under fixed-size sampling, private under Poisson.
_COUNT_LEAVES = frozenset(('num_clients', 'clients_started', 'masked_vectors_held',
                           'recovered_masks'))
_PRIVATE_PREFIXES = ('train_', 'fed_eval_', 'client_work/')
_COVERED_PREFIXES = ('aggregator/dp_query_metrics/', 'finalizer/', 'distributor/')


def _check(mode: str, sampling: str, dp: str) -> None:
  if mode not in MODES:
    raise ValueError(f'metrics mode must be one of {list(MODES)}; got {mode!r}')
  if sampling not in _SAMPLING:
    raise ValueError(f'sampling must be one of {list(_SAMPLING)}; got {sampling!r}')
  if dp not in _DP_MODES:
    raise ValueError(f'dp must be one of {list(_DP_MODES)} (the metrics policy is for DP runs); '
                     f'got {dp!r}')


def classify(name: str, *, sampling: str = 'fixed', dp: str = 'fixed',
             secure_aggregation: bool = False) -> str:
  """The class (one of `CLASSES`, see the module docstring) of the metric called `name`.

  Args:
    name: A round metric's name, as the loop writes it (`train_loss`, `aggregator/num_clients`).
    sampling: 'fixed' or 'poisson': how the round's clients were sampled.
    dp: 'fixed' or 'adaptive'.
    secure_aggregation: The round ran the masking protocol (its byte counts depend on how many
      clients took part).
  """
  _check(DEFAULT_MODE, sampling, dp)
  leaf = name.rsplit('/', 1)[-1]
  if name.startswith('dp_'):
    return 'accounting'
  if name.startswith('central_eval_'):
    return 'server_data'
  if name.startswith(_PRIVATE_PREFIXES):
    return 'private'
  if name.startswith(_COVERED_PREFIXES):
    return 'covered'
  if sampling == 'poisson' and (secure_aggregation or name.startswith('aggregator/secagg/')):
    return 'private'  # every secure-aggregation figure depends on the private sample size
  if leaf in _CONSTANT_LEAVES:
    return 'public'
  if leaf in _COUNT_LEAVES or name.startswith('faults/'):
    return 'public' if sampling == 'fixed' else 'private'
  if leaf == 'clipping_norm' and dp == 'fixed':
    return 'public'
  return 'private'


@dataclasses.dataclass(frozen=True)
class Release:
  """One round's metrics after the policy.

  Attributes:
    metrics: What may leave the process (metrics.csv, TensorBoard, the console), in order.
    withheld: The names removed (mode 'withheld'), sorted.
    not_covered: The private names released anyway (mode 'public'), sorted.
    classes: {name: class} of every metric given.
    mode: The mode applied.
  """
  metrics: 'collections.OrderedDict[str, Any]'
  withheld: tuple[str, ...]
  not_covered: tuple[str, ...]
  classes: dict[str, str]
  mode: str


def release_metrics(metrics: Mapping[str, Any], mode: str = DEFAULT_MODE, *,
                    sampling: str = 'fixed', dp: str = 'fixed') -> Release:
  """Applies the DP metrics policy to one round's metrics.

  Args:
    metrics: The round's metrics, by name.
    mode: 'withheld' (private metrics removed) or 'public' (all released; explicit opt-in).
    sampling: 'fixed' or 'poisson'.
    dp: 'fixed' or 'adaptive'.
  """
  _check(mode, sampling, dp)
  secure = any(name.startswith('aggregator/secagg/') for name in metrics)
  classes = {name: classify(name, sampling=sampling, dp=dp, secure_aggregation=secure)
             for name in metrics}
  private = tuple(sorted(name for name, c in classes.items() if c == 'private'))
  if mode == 'public':
    return Release(collections.OrderedDict(metrics), (), private, classes, mode)
  released = collections.OrderedDict(
      (name, value) for name, value in metrics.items() if classes[name] != 'private')
  return Release(released, private, (), classes, mode)


def coverage_statement(mode: str, classes: Mapping[str, str]) -> str:
  """What ε covers, for summary.json, given the {name: class} of the metrics a run produced."""
  _check(mode, 'fixed', 'fixed')
  by_class = collections.defaultdict(list)
  for name, c in sorted(classes.items()):
    by_class[c].append(name)

  def names(c):
    return ', '.join(by_class[c]) or 'none'

  parts = [
      'dp_epsilon bounds what the noised, clipped mean of the client updates reveals about one '
      'client, and everything computed from it alone: the model after every round, the '
      f'checkpoints, final_model.keras and these metrics: {names("covered")}.',
      f'central_eval_* metrics ({names("server_data")}) evaluate that model on the server\'s own '
      'test split: they use no client training data.',
      f'Public constants of the configuration and protocol, not client data: {names("public")}.',
  ]
  if mode == 'withheld':
    parts.append('Withheld: computed from client data without noise, they never left the '
                 f'process: {names("private")}.')
  else:
    parts.append('Released WITHOUT noise and NOT covered by dp_epsilon (metrics mode \'public\'): '
                 f'{names("private")}.')
  return ' '.join(parts)


class MetricsPolicy:
  """`release_metrics` round after round, remembering what it saw for summary.json."""

  def __init__(self, mode: str = DEFAULT_MODE, *, sampling: str = 'fixed', dp: str = 'fixed'):
    _check(mode, sampling, dp)
    self.mode, self.sampling, self.dp = mode, sampling, dp
    self._classes: dict[str, str] = {}

  def apply(self, metrics: Mapping[str, Any]) -> 'collections.OrderedDict[str, Any]':
    """The metrics of one round that may leave the process."""
    release = release_metrics(metrics, self.mode, sampling=self.sampling, dp=self.dp)
    self._classes.update(release.classes)
    return release.metrics

  def names(self, cls: str) -> list[str]:
    """The metric names seen so far in class `cls`, sorted."""
    return sorted(name for name, c in self._classes.items() if c == cls)

  def summary(self, seen: Iterable[str] = ()) -> dict[str, Any]:
    """summary.json's account of the metrics: mode, each class's names, and the statement.

    Args:
      seen: More metric names to classify (e.g. evaluation metrics added after `apply`).
    """
    secure = any(name.startswith('aggregator/secagg/') for name in self._classes)
    for name in seen:
      self._classes.setdefault(name, classify(name, sampling=self.sampling, dp=self.dp,
                                              secure_aggregation=secure))
    out = dict(mode=self.mode, statement=coverage_statement(self.mode, self._classes))
    for cls in CLASSES:
      out[cls] = self.names(cls)
    out['withheld' if self.mode == 'withheld' else 'released_not_covered'] = self.names('private')
    return out
