"""The aggregator stack: clipping, then DP or a robust rule, then compression, then secure sum.

`create_aggregator(**settings)` composes `tff.aggregators` factories in this fixed order (outermost
first, which is also the order in which each client's update is processed); secure aggregation
keeps its place in the order but is not a factory (4. below):

  1. **Clipping** (norm bounding) with TFF's `clipping_factory`: a fixed `clip_norm`, or with
     `adaptive_clip` a norm that tracks the `clip_quantile` quantile of the update norms (TFF's
     `PrivateQuantileEstimationProcess.no_noise`, as in `tff.learning.robust_aggregator`: initial
     norm `clip_norm` or 1.0, learning rate 0.2; Andrew et al., NeurIPS 2021, arXiv:1905.03871).
     With DP the DP factory clips (its `clip_norm` is the fixed or initial clip), so this layer
     is left out.
  2. **The rule**: the mean (`MeanFactory`, or `UnweightedMeanFactory`); or DP's noised mean
     (`tff_lab.aggregators.dp.create_dp_factory`); or a Byzantine-robust rule (robust.py). Robust
     rules and DP weigh clients equally; for weighted learning processes they are wrapped with
     `tff.aggregators.as_weighted_aggregator`, which ignores the weights.
  3. **Compression**: a `CompressedSumFactory` as the sum inside the mean or DP, or the codec of a
     gathered robust rule (compression.py).
  4. **Secure sum**: the masking protocol of Bonawitz et al. 2017 (`tff_lab.privacy.secagg`) cannot
     run inside a TFF computation (no Python, no X25519 or AES in TFF's C++ worker; see
     `tff_lab.algorithms.secure_rounds`), so `--secure_aggregation` is a round runner,
     `secure_rounds.SecureAggregationRounds`: clients clip (fixed `clip_norm`, or DP's clip) in
     TFF, the protocol sums their encoded updates in Python, the server decodes the sum and, with
     `dp='fixed'`, adds the noise. `create_aggregator` refuses `secure_aggregation=True`, so no
     factory claims a secure sum it does not compute; the runner shares the state of the
     process built with `without_secure_aggregation(settings)`.

`validate_aggregation_settings(**settings)` refuses out-of-range values and combinations that make
no sense, before any tracing, with one-line `ValueError`s naming the setting (= the flag):
  * DP or a robust rule, not both: DP's guarantee is for a noised sum of clipped updates.
  * `dp='fixed'` needs `clip_norm` (its sensitivity bound; `dp='adaptive'` starts from it or
    from 0.1) and contradicts `adaptive_clip`; DP needs a positive `noise_multiplier`, and the
    DP module's own checks (`dp.check_dp_args`) run too.
  * DP with `quantize` or `random_mask` is refused: unbiased codecs can push a clipped update above
    the clip norm, breaking the sensitivity the privacy accounting assumes (top-k cannot).
  * Secure aggregation reveals only the sum, so it excludes the robust rules, which need individual
    updates, and per-client compression, which the server must decode client by client. It also
    excludes `adaptive_clip` and `dp='adaptive'` (their clip follows the clients' norms through a
    second aggregate, not implemented securely), needs at least 2 clients per round, and needs
    the clients that report (clients_per_round − num_dropped) to reach `secagg_threshold`
    (default: a majority of the round's clients), or every round would abort. The threshold
    must be a strict majority, 2t > clients_per_round: with t ≤ n/2 a server that shows
    different survivor lists to two halves of the clients learns a client's update
    (`tff_lab.privacy.secagg`), and the clients refuse such a t.
  * `secagg_threshold`, `secagg_range`, `secagg_active` and `secagg_private_metrics` only apply
    with `secure_aggregation`.
  * The geometric median (RFA) runs several mean passes; compressing them is not implemented.
  * A registered aggregator (`tff_lab.aggregators.register`, `registry.py`) takes the rule's
    place: it composes with clipping, not with DP, compression or secure aggregation, and its
    `aggregator_options` must be its builder's options, of their types. `aggregator_options`
    only applies to a registered aggregator.
  * Krum needs n > 2f + 2 and multi_krum_m ≤ n − f, n = clients_per_round − num_dropped being
    the clients that report.

Measurements, under the learning process's `metrics['aggregator']`: those of each layer, nested
as TFF nests them (`clipping_norm`, `clipped_count`, `clipped_fraction` at the top when clipping,
the rule's inside `clipping`; the compressed sum's inside `mean_value`, or `dp`; the secure
round runner's are listed in `tff_lab.algorithms.secure_rounds`).
Every configuration reports `num_clients`, `upload_bytes_per_client` and
`download_bytes_per_client` once in that tree (`compression.communication`; the secure round
runner uses the same names for the protocol's counted bytes).
"""

import collections
import dataclasses
import importlib
import math
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_lab.aggregators import compression as compression_lib
from tff_lab.aggregators import registry as registry_lib
from tff_lab.aggregators import robust

# The built-in rules; `aggregator` also takes the names registered with `registry.register`.
AGGREGATORS = ('mean', 'median', 'trimmed_mean', 'geometric_median', 'krum')
registry_lib.RESERVED = AGGREGATORS
COMPRESSIONS = ('none', 'quantize', 'topk', 'random_mask')
DP_MODES = ('none', 'fixed', 'adaptive')
# Settings that only the secure round runner reads (see `without_secure_aggregation`).
SECURE_AGGREGATION_SETTINGS = ('secure_aggregation', 'secagg_threshold', 'secagg_range',
                               'secagg_active', 'secagg_private_metrics')

# Adaptive (non-private) clipping, as tff.learning.robust_aggregator's default clipping.
ADAPTIVE_CLIP_INITIAL_NORM = 1.0
ADAPTIVE_CLIP_LEARNING_RATE = 0.2


@dataclasses.dataclass(frozen=True)
class AggregationSettings:
  """The aggregation flags, with their defaults.

  Attributes:
    aggregator: `mean`, `median`, `trimmed_mean`, `geometric_median`, `krum`, or an aggregator
      registered with `tff_lab.aggregators.register`.
    trim_fraction: β of the trimmed mean: the fraction dropped at each end, in [0, 0.5).
    krum_f: Krum's assumed number of Byzantine clients f per round.
    multi_krum_m: Multi-Krum averages the m best-scored updates (1 = Krum).
    gm_passes: Mean passes of the geometric median's smoothed Weiszfeld (RFA), the first being
      the plain mean.
    clip_norm: L2 clip of each client update; with `adaptive_clip` or `dp='adaptive'`, the
      initial clip. None: no clipping.
    adaptive_clip: Adapt the clip to the `clip_quantile` quantile of the update norms.
    clip_quantile: Target quantile of adaptive clipping, in (0, 1).
    compression: `none`, `quantize`, `topk` or `random_mask`.
    bits: Bits per coordinate of `quantize`, in [1, 16].
    rotation: Randomly rotate (Walsh–Hadamard) before `quantize`.
    topk_fraction: Fraction of coordinates `topk` keeps, in (0, 1).
    mask_fraction: Fraction of coordinates `random_mask` keeps, in (0, 1).
    dp: `none`, or DP with `fixed` or `adaptive` clipping (tff_lab.aggregators.dp, with its
      own defaults for the adaptive clip's quantile and learning rate).
    noise_multiplier: DP's noise multiplier z (> 0).
    secure_aggregation: Sum the updates with the secure aggregation protocol
      (tff_lab.algorithms.secure_rounds).
    secagg_threshold: Shamir threshold t of secure aggregation, a strict majority of
      clients_per_round (2t > n, t <= n); None: the least, ⌊clients_per_round/2⌋ + 1. Rounds
      with fewer reporting clients abort.
    secagg_range: Per-coordinate range r of secure aggregation's fixed-point encoding (of
      weight × update for weighted algorithms); larger values are clipped. None: clip_norm
      where it bounds every coordinate, else 100 for an update and 10^4 for weight × update
      (tff_lab.algorithms.secure_rounds).
    secagg_active: Secure aggregation secure against an active server: signed keys under a
      simulated PKI and the consistency-check round (tff_lab.privacy.secagg).
    secagg_private_metrics: Secure aggregation also sums the training metrics and example
      counts through the protocol, instead of in the clear (tff_lab.algorithms.secure_rounds).
    clients_per_round: Clients sampled each round (DP's normaliser).
    num_dropped: Sampled clients that never report (simulated dropout; not a flag). Krum's n is
      clients_per_round − num_dropped.
    aggregator_options: Options of a registered aggregator's factory builder (its flags
      `--<aggregator>_<option>`; unset ones keep the builder's defaults).
  """

  aggregator: str = 'mean'
  trim_fraction: float = 0.1
  krum_f: int = 1
  multi_krum_m: int = 1
  gm_passes: int = 5
  clip_norm: Optional[float] = None
  adaptive_clip: bool = False
  clip_quantile: float = 0.8
  compression: str = 'none'
  bits: int = 8
  rotation: bool = False
  topk_fraction: float = 0.01
  mask_fraction: float = 0.1
  dp: str = 'none'
  noise_multiplier: Optional[float] = None
  secure_aggregation: bool = False
  secagg_threshold: Optional[int] = None
  secagg_range: Optional[float] = None
  secagg_active: bool = False
  secagg_private_metrics: bool = False
  clients_per_round: int = 10
  num_dropped: int = 0
  aggregator_options: dict = dataclasses.field(default_factory=dict)

  @property
  def registered(self) -> bool:
    """Whether `aggregator` is a registered (not built-in) aggregator."""
    return registry_lib.is_registered(self.aggregator)

  def validate(self) -> None:
    """Raises a one-line ValueError naming the first bad setting: its values, then the rule, DP
    and secure aggregation (each with what it cannot be combined with)."""
    self._check_values()
    self._check_rule()
    self._check_dp()
    self._check_secure_aggregation()

  def _check_values(self) -> None:
    """Names and ranges of the settings, each on its own."""
    for name, value, choices in (('aggregator', self.aggregator,
                                  AGGREGATORS + registry_lib.names()),
                                 ('compression', self.compression, COMPRESSIONS),
                                 ('dp', self.dp, DP_MODES)):
      _require(value in choices, f'unknown {name} {value!r}; choose one of {list(choices)}')
    _require(_is_int(self.clients_per_round) and self.clients_per_round >= 1,
             f'clients_per_round must be a positive integer, got {self.clients_per_round}')
    _require(_is_int(self.num_dropped) and 0 <= self.num_dropped < self.clients_per_round,
             f'num_dropped must be in [0, clients_per_round), got {self.num_dropped}')
    _require(0 <= self.trim_fraction < 0.5,
             f'trim_fraction must be in [0, 0.5), got {self.trim_fraction}')
    _require(_is_int(self.krum_f) and self.krum_f >= 0,
             f'krum_f must be an integer >= 0, got {self.krum_f}')
    _require(_is_int(self.multi_krum_m) and self.multi_krum_m >= 1,
             f'multi_krum_m must be an integer >= 1, got {self.multi_krum_m}')
    _require(_is_int(self.gm_passes) and self.gm_passes >= 1,
             f'gm_passes must be an integer >= 1, got {self.gm_passes}')
    _require(self.clip_norm is None or (math.isfinite(self.clip_norm) and self.clip_norm > 0),
             f'clip_norm must be positive and finite, got {self.clip_norm}')
    _require(0 < self.clip_quantile < 1,
             f'clip_quantile must be in (0, 1), got {self.clip_quantile}')
    _require(_is_int(self.bits) and 1 <= self.bits <= 16,
             f'bits must be an integer in [1, 16], got {self.bits}')
    for name in ('topk_fraction', 'mask_fraction'):
      _require(0 < getattr(self, name) < 1, f'{name} must be in (0, 1), got {getattr(self, name)}')
    _require(self.noise_multiplier is None
             or (math.isfinite(self.noise_multiplier) and self.noise_multiplier > 0),
             f'noise_multiplier must be positive, got {self.noise_multiplier}')

  def _check_rule(self) -> None:
    """A registered aggregator's options and what it cannot be combined with; Krum's client
    count; the encodings the rule takes."""
    if self.registered:
      registry_lib.resolve_options(self.aggregator, self.aggregator_options)
      for name, value, why in (
          ('dp', self.dp != 'none', 'DP\'s noised mean is the rule then (DP or another rule, '
           'not both); an aggregator that adds noise itself declares its mechanism with '
           'tff_lab.aggregators.dp.attach_mechanism'),
          ('compression', self.compression != 'none', 'the codec is not given to it'),
          ('secure_aggregation', self.secure_aggregation, 'secure aggregation sums with its '
           'own protocol, not with a tff.aggregators factory')):
        _require(not value, f'aggregator={self.aggregator!r} (registered) cannot be combined '
                 f'with {name}={getattr(self, name)!r}: {why}')
    else:
      _require(not self.aggregator_options,
               f'aggregator_options={self.aggregator_options} only applies to a registered '
               f'aggregator (registered: {list(registry_lib.names())}), got '
               f'aggregator={self.aggregator!r}')
    if self.aggregator == 'krum':
      n, f, m = self.clients_per_round - self.num_dropped, self.krum_f, self.multi_krum_m
      _require(n > 2 * f + 2, f'krum_f={f} needs more than 2*krum_f + 2 = {2 * f + 2} reporting '
               f'clients per round (Krum requires n > 2f + 2), got {n}')
      _require(m <= n - f, f'multi_krum_m must be <= reporting clients - krum_f = {n - f}, '
               f'got {m}')
    _require(not self.rotation or self.compression == 'quantize',
             f'rotation only applies to compression=\'quantize\', got {self.compression!r}')
    _require(self.aggregator != 'geometric_median' or self.compression == 'none',
             f'aggregator=\'geometric_median\' cannot be combined with '
             f'compression={self.compression!r}: compressing its Weiszfeld passes is not '
             'implemented')

  def _check_dp(self) -> None:
    """DP's noise and clip, and the rule and encoding DP allows."""
    if self.dp == 'none':
      _require(self.noise_multiplier is None,
               f'noise_multiplier={self.noise_multiplier} only applies with dp=fixed|adaptive')
    else:
      _require(self.dp != 'fixed' or self.clip_norm is not None,
               'dp=\'fixed\' needs clip_norm (DP clips every update to bound its sensitivity)')
      _require(self.noise_multiplier is not None, f'dp={self.dp!r} needs noise_multiplier')
      _require(self.dp != 'fixed' or not self.adaptive_clip,
               'adaptive_clip contradicts dp=\'fixed\'; for adaptive clipping with DP use '
               'dp=\'adaptive\'')
      _require(self.aggregator == 'mean',
               f'dp={self.dp!r} cannot be combined with aggregator={self.aggregator!r}: DP or '
               'robust aggregation, not both')
      _require(self.compression in ('none', 'topk'),
               f'dp={self.dp!r} cannot be combined with compression={self.compression!r}: it can '
               'push a clipped update above clip_norm (only topk, which never grows a norm, is '
               'allowed)')
      _extension('dp', f'dp={self.dp!r}').check_dp_args(
          self.dp, self.noise_multiplier, self.clients_per_round, self.clip_norm,
          self.adaptive_clip)

  def _check_secure_aggregation(self) -> None:
    """What secure aggregation cannot be combined with, its threshold and range; its settings
    only with it."""
    if not self.secure_aggregation:
      for name in ('secagg_threshold', 'secagg_range'):
        _require(getattr(self, name) is None,
                 f'{name}={getattr(self, name)} only applies with secure_aggregation')
      for name in ('secagg_active', 'secagg_private_metrics'):
        _require(not getattr(self, name), f'{name} only applies with secure_aggregation')
      return
    _require(self.aggregator == 'mean',
             f'secure_aggregation cannot be combined with aggregator={self.aggregator!r}: the '
             'rule needs individual updates and secure aggregation reveals only their sum')
    _require(self.compression == 'none',
             f'secure_aggregation cannot be combined with compression={self.compression!r}: '
             'the server decodes each client\'s message, so it would see it')
    _require(self.dp != 'adaptive',
             'secure_aggregation cannot be combined with dp=\'adaptive\': its clip follows a '
             'noised count of unclipped clients, a second aggregate not implemented securely; '
             'use dp=\'fixed\'')
    _require(not self.adaptive_clip,
             'secure_aggregation cannot be combined with adaptive_clip: the clip would follow '
             'the clients\' update norms, a second aggregate not implemented securely; use a '
             'fixed clip_norm')
    n = self.clients_per_round
    _require(n >= 2, f'secure_aggregation needs clients_per_round >= 2, got {n}')
    t = self.secagg_threshold
    _require(t is None or (_is_int(t) and n < 2 * t and 2 <= t <= n),
             f'secagg_threshold must be an integer in [{max(2, n // 2 + 1)}, '
             f'clients_per_round={n}]: a strict majority of the clients (2t > n; with t <= n/2 '
             f'a server showing different survivor lists to two halves learns an update), '
             f'got {t}')
    t = n // 2 + 1 if t is None else t
    _require(n - self.num_dropped >= t,
             f'dropout_fraction leaves {n - self.num_dropped} of {n} clients reporting per '
             f'round, fewer than the secure aggregation threshold secagg_threshold={t}: every '
             'round would abort; lower dropout_fraction or secagg_threshold')
    _require(self.secagg_range is None
             or (math.isfinite(self.secagg_range) and self.secagg_range > 0),
             f'secagg_range must be positive and finite, got {self.secagg_range}')


def validate_aggregation_settings(**settings) -> None:
  """Checks aggregation settings (the fields of `AggregationSettings`) before any tracing.

  Raises:
    ValueError: One line naming the first bad setting.
    TypeError: For a setting that does not exist.
  """
  AggregationSettings(**settings).validate()


def create_aggregator(weighted: bool = True, **settings) -> tff.aggregators.AggregationFactory:
  """Builds the aggregation factory described by `settings` (see `AggregationSettings`).

  Args:
    weighted: Return a `WeightedAggregationFactory` (for `fedavg`, `fedsgd`, `fedprox`) rather
      than an `UnweightedAggregationFactory` (for `fedavg_unweighted`).
    **settings: Fields of `AggregationSettings`.

  Raises:
    ValueError: For settings `validate_aggregation_settings` refuses.
  """
  s = AggregationSettings(**settings)
  s.validate()
  _require(not s.secure_aggregation,
           'secure_aggregation is not a tff.aggregators factory: the masking protocol runs in '
           'tff_lab.algorithms.secure_rounds.SecureAggregationRounds (the training loop uses it); '
           'build its reference process with without_secure_aggregation(settings)')
  codec = compression_lib.create_codec(s.compression, s.bits, s.rotation, s.topk_fraction,
                                       s.mask_fraction)
  # 3. compression: the sum inside a mean or DP (None: TFF's plain SumFactory).
  value_sum = None
  if s.compression != 'none':
    value_sum = compression_lib.CompressedSumFactory(codec)
  # 2. The rule.
  dp_factory = None
  if s.dp != 'none':
    # HOOK (dp.py, another module): the unweighted DP mean, summing records with `value_sum`.
    factory = dp_factory = _extension('dp', f'dp={s.dp!r}').create_dp_factory(
        s.dp, s.noise_multiplier, s.clients_per_round, s.clip_norm, s.adaptive_clip,
        record_aggregation_factory=value_sum)
  elif s.aggregator == 'mean':
    factory = (tff.aggregators.MeanFactory(value_sum_factory=value_sum) if weighted
               else tff.aggregators.UnweightedMeanFactory(value_sum_factory=value_sum))
  elif s.registered:  # of the kind `weighted` asks for, or refused in one line
    factory = registry_lib.build(s.aggregator, weighted, s.aggregator_options)
    # Declared by an aggregator that adds noise itself; kept visible through the wrappers.
    dp_factory = factory if _extension('dp', 'a DP aggregator').mechanism_of(factory) else None
  else:
    factory = robust_factory(s, codec)
  if weighted and isinstance(factory, tff.aggregators.UnweightedAggregationFactory):
    factory = tff.aggregators.as_weighted_aggregator(factory)
  if (s.aggregator == 'mean' or s.registered) and value_sum is None:
    factory = tff.aggregators.add_measurements(
        factory, client_measurement_fn=(lambda value, weight: compression_lib.dense_communication(
            value)) if weighted else compression_lib.dense_communication)
  # 1. Clipping (DP clips inside its own factory).
  if s.dp == 'none' and (s.clip_norm is not None or s.adaptive_clip):
    factory = _clipping(factory, s)
  # The DP factory's declared mechanism (its own z, C, m) stays visible through the wrappers,
  # so that ε is reported only where the noise is added.
  if dp_factory is not None:
    dp_lib = _extension('dp', f'dp={s.dp!r}' if s.dp != 'none' else 'a DP aggregator')
    dp_lib.attach_mechanism(factory, dp_lib.mechanism_of(dp_factory))
  return factory


def robust_factory(s: AggregationSettings, codec: compression_lib.Codec):
  """The robust rule's factory for `s.aggregator` (median, trimmed_mean, krum, geometric_median)."""
  if s.aggregator == 'median':
    return robust.CoordinateMedianFactory(codec)
  if s.aggregator == 'trimmed_mean':
    return robust.TrimmedMeanFactory(s.trim_fraction, codec)
  if s.aggregator == 'krum':
    return robust.KrumFactory(s.krum_f, s.multi_krum_m, codec)
  return robust.GeometricMedianFactory(s.gm_passes)


def _clipping(factory, s: AggregationSettings):
  """TFF's clipping_factory around `factory`, plus a `clipped_fraction` measurement."""
  if s.adaptive_clip:
    norm = tff.aggregators.PrivateQuantileEstimationProcess.no_noise(
        initial_estimate=float(s.clip_norm or ADAPTIVE_CLIP_INITIAL_NORM),
        target_quantile=float(s.clip_quantile), learning_rate=ADAPTIVE_CLIP_LEARNING_RATE)
  else:
    norm = float(s.clip_norm)
  return _with_clipped_fraction(tff.aggregators.clipping_factory(norm, factory))


def _add_clipped_fraction(output, value):

  @tff.tensorflow.computation(tff.TensorType(np.int32), tff.TensorType(np.int32))
  def _fraction(count, total):
    return tf.cast(count, tf.float32) / tf.cast(total, tf.float32)

  measurements = output.measurements
  names = tff.structure.name_list(measurements.type_signature.member)
  fields = collections.OrderedDict((name, getattr(measurements, name)) for name in names)
  fields['clipped_fraction'] = tff.federated_map(
      _fraction, (measurements.clipped_count, compression_lib.count_clients(value)))
  return tff.templates.MeasuredProcessOutput(output.state, output.result,
                                             tff.federated_zip(fields))


def _with_clipped_fraction(factory):
  """Wraps a `clipping_factory` to also report clipped_count / number of clients."""
  if isinstance(factory, tff.aggregators.WeightedAggregationFactory):

    class WeightedFactory(tff.aggregators.WeightedAggregationFactory):

      def create(self, value_type, weight_type):
        process = factory.create(value_type, weight_type)

        @tff.federated_computation(process.state_type,
                                   tff.FederatedType(value_type, tff.CLIENTS),
                                   tff.FederatedType(weight_type, tff.CLIENTS))
        def next_fn(state, value, weight):
          return _add_clipped_fraction(process.next(state, value, weight), value)

        return tff.templates.AggregationProcess(process.initialize, next_fn)

    return WeightedFactory()

  class UnweightedFactory(tff.aggregators.UnweightedAggregationFactory):

    def create(self, value_type):
      process = factory.create(value_type)

      @tff.federated_computation(process.state_type, tff.FederatedType(value_type, tff.CLIENTS))
      def next_fn(state, value):
        return _add_clipped_fraction(process.next(state, value), value)

      return tff.templates.AggregationProcess(process.initialize, next_fn)

  return UnweightedFactory()


def without_secure_aggregation(settings: dict) -> dict:
  """`settings` with the secure aggregation ones removed: those of the plain-sum process whose
  state `SecureAggregationRounds` advances (same clipping, DP and mean, no masking)."""
  return {k: v for k, v in settings.items() if k not in SECURE_AGGREGATION_SETTINGS}


def _extension(name: str, setting: str):
  """Imports tff_lab.aggregators.<name> (dp), which `setting` needs."""
  module = f'tff_lab.aggregators.{name}'
  try:
    return importlib.import_module(module)
  except ModuleNotFoundError as e:
    if e.name != module:
      raise
    raise ValueError(f'{setting} needs {module}, which is not in this checkout yet') from None


def _is_int(value) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _require(condition: bool, message: str) -> None:
  if not condition:
    raise ValueError(message)
