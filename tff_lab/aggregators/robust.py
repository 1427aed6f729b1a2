"""Byzantine-robust aggregation rules as `tff.aggregators` factories.

* Coordinate-wise median and β-trimmed mean: Yin, Chen, Kannan, Bartlett, "Byzantine-Robust
  Distributed Learning: Towards Optimal Statistical Rates", ICML 2018 (arXiv:1803.01498).
* Krum and Multi-Krum: Blanchard, El Mhamdi, Guerraoui, Stainer, "Machine Learning with
  Adversaries: Byzantine Tolerant Gradient Descent", NeurIPS 2017.
* Geometric median by smoothed Weiszfeld (RFA): Pillutla, Kakade, Harchaoui, "Robust Aggregation
  for Federated Learning", IEEE TSP 2022 (arXiv:1912.13445).

**What the server sees.** Median, trimmed mean and Krum are functions of all the individual
updates at once, so their factories gather every client's (decoded) update at the server: one
`tff.federated_aggregate` whose accumulator stacks the flattened updates into an n×d matrix (the
pattern of TFF's `UnweightedReservoirSamplingFactory`), then the rule runs on that matrix at the
server. The server therefore sees each individual update. That is inherent to these rules, and it
is why they cannot be combined with secure aggregation or DP. The geometric median is different:
RFA computes it with a few passes of a weighted *mean* (Weiszfeld steps), so the server only ever
sees weighted averages; each pass costs one more broadcast and upload. It follows the RFA
authors' TFF template (`RobustWeiszfeldFactory` in google-research/federated; TFF 0.87 has no
such factory): the first pass is the plain mean, each later pass re-weights client i by
β_i = 1 / max(ν, ‖v − w_i‖) and takes the weighted mean, with ν = 1e-6 and 5 passes by default.
From the mean, an outlier far from the others is discounted by about a factor n−1 per pass;
raise `num_passes` for extreme outliers.

All rules weigh clients equally (a client's self-reported example count is not trusted);
`tff.aggregators.as_weighted_aggregator` turns them into weighted factories that ignore the
weights, for the weighted learning processes. Structured values are flattened to one float32
vector with `tff.aggregators.concat_factory`.

Measurements: `trimmed_per_side` (trimmed mean); `num_selected` (Krum); `num_passes` and
`objective` = mean_i ‖v − w_i‖ at the result (geometric median; one extra scalar upload); and
`compression.communication`: `num_clients`, `upload_bytes_per_client`, ... (all passes).
"""

import collections
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_lab.aggregators import compression

WEISZFELD_NU = 1e-6


def coordinate_median(x: tf.Tensor) -> tf.Tensor:
  """Per-coordinate median of the rows of x (n×d); the mean of the middle two for even n."""
  n = tf.shape(x)[0]
  ordered = tf.sort(x, axis=0)
  return (ordered[(n - 1) // 2] + ordered[n // 2]) / 2


def trimmed_mean(x: tf.Tensor, trim_fraction: float) -> tuple[tf.Tensor, tf.Tensor]:
  """Per-coordinate mean after dropping the k = ⌊β·n⌋ largest and k smallest values.

  k is computed as `scipy.stats.trim_mean` does, `int(β·n)` in float64.

  Returns:
    The trimmed mean (float32[d]) and k.
  """
  n = tf.shape(x)[0]
  k = tf.cast(trim_fraction * tf.cast(n, tf.float64), tf.int32)
  return tf.reduce_mean(tf.sort(x, axis=0)[k:n - k], axis=0), k


def krum_scores(x: tf.Tensor, num_byzantine: int) -> tf.Tensor:
  """Krum score of each row: the sum of its squared distances to its n − f − 2 nearest rows."""
  n = tf.shape(x)[0]
  squared = tf.map_fn(lambda row: tf.reduce_sum(tf.square(x - row), axis=1), x)
  # Column 0 of each sorted row is the row's zero distance to itself.
  return tf.reduce_sum(tf.sort(squared, axis=1)[:, 1:n - num_byzantine - 1], axis=1)


def weiszfeld_weight(x: tf.Tensor, v: tf.Tensor, nu: float = WEISZFELD_NU) -> tf.Tensor:
  """RFA's smoothed Weiszfeld weight of update x at the current estimate v: 1 / max(ν, ‖v − x‖)."""
  return 1.0 / tf.maximum(nu, tf.norm(x - v))


class GatheredRuleFactory(tff.aggregators.UnweightedAggregationFactory):
  """Gathers every client's decoded update at the server and applies `rule` to the n×d stack.

  The base of the robust rules, public so that a new rule is one method: subclass it and write
  `rule(stacked)`, with `stacked` the float32 [n, d] matrix of the n reporting clients' updates
  (flattened and concatenated), returning the aggregate (float32 [d]) and an OrderedDict of
  scalar measurements (they reach metrics.csv under `aggregator/`). The base does the rest:
  structures with several tensors are flattened into one vector (`tff.aggregators.concat_factory`)
  and restored, an optional upload `codec` (`tff_lab.aggregators.compression`) encodes each
  client's update, and the communication counters (`upload_bytes_per_client`, ...) are reported
  with the rule's measurements. For example, a norm-bounded mean:

      class NormBoundedMeanFactory(GatheredRuleFactory):
        def __init__(self, bound):
          super().__init__()
          self._bound = bound
        def rule(self, stacked):
          norms = tf.norm(stacked, axis=1, keepdims=True)
          kept = tf.minimum(1.0, self._bound / tf.maximum(norms, 1e-12))
          return tf.reduce_mean(stacked * kept, axis=0), collections.OrderedDict(
              clipped=tf.reduce_sum(tf.cast(norms > self._bound, tf.int32)))

  Unweighted (every client counts once), as robust rules are.
  """

  def __init__(self, codec: Optional[compression.Codec] = None):
    self._codec = codec or compression.IdentityCodec()

  def rule(self, stacked: tf.Tensor):
    """Returns (aggregate float32[d], OrderedDict of scalar measurements) from the n×d stack."""
    raise NotImplementedError

  def create(self, value_type) -> tff.templates.AggregationProcess:
    d = compression.float32_vector_length(value_type)
    if d is None:
      return tff.aggregators.concat_factory(self).create(value_type)
    codec = self._codec
    encode = compression.build_client_encoder(codec, d)
    upload, dense = compression.type_bytes(encode.type_signature.result), 4 * d
    stack_type = tff.TensorType(np.float32, [None, d])

    @tff.tensorflow.computation
    def zero():
      return tf.zeros([0, d], tf.float32)

    @tff.tensorflow.computation(stack_type, encode.type_signature.result)
    def accumulate(stacked, message):
      return tf.concat([stacked, codec.decode(message, d)[tf.newaxis]], axis=0)

    @tff.tensorflow.computation(stack_type, stack_type)
    def merge(a, b):
      return tf.concat([a, b], axis=0)

    @tff.tensorflow.computation(stack_type)
    def report(stacked):
      return stacked

    @tff.tensorflow.computation(stack_type)
    def apply_rule(stacked):
      aggregate, measurements = self.rule(stacked)
      return aggregate, collections.OrderedDict(
          **measurements, **compression.communication(tf.shape(stacked)[0], upload, dense, dense))

    @tff.federated_computation()
    def init_fn():
      return tff.federated_value((), tff.SERVER)

    @tff.federated_computation(init_fn.type_signature.result,
                               tff.FederatedType(value_type, tff.CLIENTS))
    def next_fn(state, value):
      messages = tff.federated_map(encode, value)
      stacked = tff.federated_aggregate(messages, zero(), accumulate, merge, report)
      aggregate, measurements = tff.federated_map(apply_rule, stacked)
      return tff.templates.MeasuredProcessOutput(state, aggregate, measurements)

    return tff.templates.AggregationProcess(init_fn, next_fn)


class CoordinateMedianFactory(GatheredRuleFactory):
  """Coordinate-wise median (Yin et al. 2018)."""

  def rule(self, stacked):
    return coordinate_median(stacked), {}


class TrimmedMeanFactory(GatheredRuleFactory):
  """β-trimmed mean (Yin et al. 2018): per coordinate, drop the ⌊β·n⌋ largest and smallest."""

  def __init__(self, trim_fraction: float, codec: Optional[compression.Codec] = None):
    if not 0 <= trim_fraction < 0.5:
      raise ValueError(f'trim_fraction must be in [0, 0.5), got {trim_fraction}')
    super().__init__(codec)
    self._trim_fraction = trim_fraction

  def rule(self, stacked):
    aggregate, k = trimmed_mean(stacked, self._trim_fraction)
    return aggregate, {'trimmed_per_side': k}


class KrumFactory(GatheredRuleFactory):
  """Multi-Krum (Blanchard et al. 2017): the mean of the m updates with the lowest Krum scores.

  m = 1 is Krum. Needs n > 2f + 2 reporting clients and m ≤ n − f; a round with fewer clients
  fails with an error rather than returning an aggregate without Krum's guarantee. Ties in score
  go to the update aggregated first.
  """

  def __init__(self, num_byzantine: int, num_selected: int = 1,
               codec: Optional[compression.Codec] = None):
    if num_byzantine < 0:
      raise ValueError(f'krum_f must be >= 0, got {num_byzantine}')
    if num_selected < 1:
      raise ValueError(f'multi_krum_m must be >= 1, got {num_selected}')
    super().__init__(codec)
    self._f = num_byzantine
    self._m = num_selected

  def rule(self, stacked):
    n = tf.shape(stacked)[0]
    check = tf.debugging.Assert(
        tf.logical_and(n > 2 * self._f + 2, self._m <= n - self._f),
        [f'Krum with f={self._f}, m={self._m} needs n > 2f+2 and m <= n-f clients; n =', n])
    with tf.control_dependencies([check]):
      scores = krum_scores(stacked, self._f)
    selected = tf.argsort(scores, stable=True)[:self._m]
    return tf.reduce_mean(tf.gather(stacked, selected), axis=0), {
        'num_selected': tf.size(selected)}


class GeometricMedianFactory(tff.aggregators.UnweightedAggregationFactory):
  """Approximate geometric median by RFA's smoothed Weiszfeld passes (Pillutla et al.)."""

  def __init__(self, num_passes: int = 5, nu: float = WEISZFELD_NU):
    if num_passes < 1:
      raise ValueError(f'num_passes must be >= 1, got {num_passes}')
    if nu <= 0:
      raise ValueError(f'nu must be positive, got {nu}')
    self._num_passes = num_passes
    self._nu = nu

  def create(self, value_type) -> tff.templates.AggregationProcess:
    if compression.float32_vector_length(value_type) is None:
      return tff.aggregators.concat_factory(self).create(value_type)
    num_passes, nu = self._num_passes, self._nu
    dense = compression.type_bytes(value_type)

    @tff.tensorflow.computation(value_type, value_type)
    def distance(x, v):
      return tf.norm(x - v)

    @tff.tensorflow.computation(value_type, value_type)
    def weiszfeld_step_weight(x, v):
      return weiszfeld_weight(x, v, nu)

    @tff.tensorflow.computation(tff.TensorType(np.int32), tff.TensorType(np.float32))
    def measure(n, objective):
      # Uploads: the first pass's update, then update and weight per pass, then the distance.
      # Downloads: the model, then v before each later pass and before the distance.
      return collections.OrderedDict(
          num_passes=tf.constant(num_passes), objective=objective,
          **compression.communication(n, num_passes * dense + 4 * num_passes,
                                      (num_passes + 1) * dense, dense))

    @tff.federated_computation()
    def init_fn():
      return tff.federated_value((), tff.SERVER)

    @tff.federated_computation(init_fn.type_signature.result,
                               tff.FederatedType(value_type, tff.CLIENTS))
    def next_fn(state, value):
      v = tff.federated_mean(value)
      for _ in range(num_passes - 1):
        beta = tff.federated_map(weiszfeld_step_weight, (value, tff.federated_broadcast(v)))
        v = tff.federated_mean(value, weight=beta)
      objective = tff.federated_mean(
          tff.federated_map(distance, (value, tff.federated_broadcast(v))))
      measurements = tff.federated_map(measure, (compression.count_clients(value), objective))
      return tff.templates.MeasuredProcessOutput(state, v, measurements)

    return tff.templates.AggregationProcess(init_fn, next_fn)
