"""The aggregator stack on a round's stacked client updates, in one TF program (the fast path).

The `tff` backend aggregates through the `tff.aggregators` factories of
`tff_lab.aggregators.stack`, one client value at a time inside TFF's runtime. The `fused` backend
trains every client in one TF program (`tff_lab.algorithms.vectorized`); with any aggregation
setting other than the plain mean it hands the round's per-client deltas, stacked [n, ...], to
`InGraphAggregation`, which applies the same stack in the same order, in one TF graph:

  0. update attacks (sign flip, scale, Gaussian), with `client_work`'s own `_apply_attack` and the
     plans' seeds, then `zero_all_if_any_non_finite` (a non-finite update counts with weight 0);
  1. clipping (TFF's `clipping_factory`: x / (‖x‖/C) when ‖x‖ > C) to a fixed `clip_norm`, or,
     with `adaptive_clip`, to the estimate of the no-noise quantile query that TFF's
     `PrivateQuantileEstimationProcess.no_noise` wraps (tensorflow-privacy's
     `NoPrivacyQuantileEstimatorQuery`, geometric update, Andrew et al. 2021): each client
     reports whether its norm is at most C, and the estimate moves by exp(−η(b − q)), its state
     being the TFF process's `state.aggregator['clipping_norm']`;
  2. the rule: the (weighted) mean; a robust rule, through the factory's own `rule(stacked)`
     (`tff_lab.aggregators.robust`: median, trimmed mean, Krum/Multi-Krum) or the geometric
     median's Weiszfeld passes (`robust.weiszfeld_weight`); or DP, through the very
     tensorflow-privacy query the DP factory wraps (`tff_lab.aggregators.dp.dp_query`:
     `preprocess_record` clips, the records are summed, `get_noised_result` adds the noise and
     divides by `clients_per_round`; fixed and adaptive clipping, the query state being the TFF
     process's `state.aggregator.query_state`);
  3. compression, with the factories' own codecs and per-client seeds (`compression.client_seed`
     of the value the client encodes: the weighted update inside a weighted mean, the update
     for a robust rule, the clipped record for DP).

Each rule's arithmetic is thus written once, in the modules the factories use. The measurements
have the factories' names and nesting (`clipping/...`, `mean_value/...`, `dp/...`,
`num_clients`, `upload_bytes_per_client`, ...), so metrics.csv has the same columns on both
paths; the byte counts come from the static shapes of the messages the codec produces, as the
factories' do.

Randomness. Compression and the Gaussian attack are stateless and seeded from the update or the
plan, so both paths draw the same numbers from the same inputs
(`tests/aggregators/test_in_graph.py` feeds one set of client values to the TFF factory and to
this class). DP noise is tensorflow-privacy's own unseeded `tf.random.normal`, as on the `tff`
path: the graph here has no graph-level seed, so a resumed run never replays an earlier round's
noise (noise reused across rounds would void the privacy guarantee); DP runs are therefore not
bit-reproducible on either path.

Not here (refused by `check_supported`, one line): registered aggregators (their arithmetic is
TFF code of the plugin's), secure aggregation (its own backend, `tff_lab.algorithms.secure_rounds`).
"""

import collections
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
import tensorflow_privacy as tfp

from tff_lab.aggregators import compression
from tff_lab.aggregators import dp as dp_lib
from tff_lab.aggregators import robust
from tff_lab.aggregators import stack
from tff_lab.algorithms import client_work


def check_supported(settings: stack.AggregationSettings, simulation: str = 'fused') -> None:
  """Raises a one-line ValueError for aggregation settings the in-graph stack does not run."""
  if settings.registered:
    raise ValueError(f'--simulation={simulation} does not run registered aggregators '
                     f'(--aggregator={settings.aggregator}); use --simulation=tff')


def _placeholders(structure: Any) -> Any:
  """A placeholder for each tensor of `structure` (a query state, fed each round)."""
  return tf.nest.map_structure(lambda t: tf.compat.v1.placeholder(t.dtype, t.shape), structure)


class InGraphAggregation:
  """`create_aggregator(**settings)`'s arithmetic on stacked client deltas, in one TF graph."""

  def __init__(self, settings: stack.AggregationSettings, weighted: bool,
               shapes: Sequence[Sequence[int]]):
    """Builds the aggregation graph.

    Args:
      settings: The aggregation settings (validated; `check_supported` passes).
      weighted: The learning process is weighted (clients weigh their example counts in the
        mean; robust rules and DP ignore the weights, as `as_weighted_aggregator` does).
      shapes: The shapes of the model's trainable weights (the structure of one update).
    """
    check_supported(settings)
    self._settings = settings
    self._weighted = weighted
    self._shapes = [tuple(int(n) for n in s) for s in shapes]
    self._d = int(sum(np.prod(s, dtype=np.int64) for s in self._shapes))
    self._codec = compression.create_codec(settings.compression, settings.bits,
                                           settings.rotation, settings.topk_fraction,
                                           settings.mask_fraction)
    self._query = None
    if settings.dp != 'none':
      self._query = dp_lib.dp_query(settings.dp, settings.noise_multiplier,
                                    settings.clients_per_round, settings.clip_norm)
    self._quantile = None  # adaptive clipping without DP: the clip's quantile query
    if settings.adaptive_clip:
      self._quantile = tfp.NoPrivacyQuantileEstimatorQuery(
          initial_estimate=float(settings.clip_norm or stack.ADAPTIVE_CLIP_INITIAL_NORM),
          target_quantile=float(settings.clip_quantile),
          learning_rate=stack.ADAPTIVE_CLIP_LEARNING_RATE, geometric_update=True)
    self.graph = tf.Graph()  # no graph-level seed: DP noise is fresh in every process
    with self.graph.as_default():
      self._deltas = [tf.compat.v1.placeholder(tf.float32, [None, *s]) for s in self._shapes]
      self._weights = tf.compat.v1.placeholder(tf.float32, [None])
      self._attack = collections.OrderedDict(
          kind=tf.compat.v1.placeholder(tf.int32, [None]),
          scale=tf.compat.v1.placeholder(tf.float32, [None]),
          seed=tf.compat.v1.placeholder(tf.int32, [None]))
      self._query_state = self._quantile_state = None
      if self._query is not None:
        self._query_state = _placeholders(self._query.initial_global_state())
      if self._quantile is not None:
        self._quantile_state = _placeholders(self._quantile.initial_global_state())
      self._outputs = self._build()
    self._session = tf.compat.v1.Session(graph=self.graph)

  # The graph.

  def _flat(self, delta: Sequence[tf.Tensor]) -> tf.Tensor:
    """One client's update as float32[d] (`tff.aggregators.concat_factory`'s order)."""
    return tf.concat([tf.reshape(t, [-1]) for t in delta], axis=0)

  def _unflat(self, x: tf.Tensor) -> list[tf.Tensor]:
    sizes = [int(np.prod(s, dtype=np.int64)) for s in self._shapes]
    return [tf.reshape(part, s) for part, s in zip(tf.split(x, sizes), self._shapes)]

  def _clip(self) -> Optional[tf.Tensor]:
    """This round's clip (None: none, or DP's own): fixed, or the quantile query's estimate."""
    if self._quantile_state is not None:
      return self._quantile_state.current_estimate
    if self._settings.dp == 'none' and self._settings.clip_norm is not None:
      return tf.constant(self._settings.clip_norm, tf.float32)
    return None

  def _client_rows(self):
    """Each client's delta after its attack, zeroed if not finite, clipped: rows [n, d], the
    weights (0 for a non-finite update), and each update's norm before clipping."""
    clip = self._clip()

    def one(args):
      delta, kind, scale, seed = args
      attacked = client_work._apply_attack(  # pylint: disable=protected-access
          list(delta), collections.OrderedDict(kind=kind, scale=scale, seed=seed))
      attacked, non_finite = tff.learning.tensor_utils.zero_all_if_any_non_finite(attacked)
      # TFF's clipping_factory: the global norm from the tensors' norms, x / (‖x‖/C) above C.
      norm = tf.math.sqrt(tf.reduce_sum(tf.stack([tf.norm(t) ** 2 for t in attacked])))
      if clip is not None:
        attacked = tf.cond(norm > clip, lambda: [t / (norm / clip) for t in attacked],
                           lambda: attacked)
      return self._flat(attacked), tf.equal(non_finite, 0), norm

    rows, finite, norms = tf.map_fn(
        one, (self._deltas, self._attack['kind'], self._attack['scale'], self._attack['seed']),
        fn_output_signature=(tf.float32, tf.bool, tf.float32))
    weights = (self._weights if self._weighted else tf.ones_like(self._weights))
    return rows, weights * tf.cast(finite, tf.float32), norms

  def _encoded(self, rows: tf.Tensor) -> tuple[tf.Tensor, int]:
    """Each row as the server decodes it after the codec, and the bytes of one message."""
    d = rows.shape[1]
    message = self._codec.encode(tf.zeros([d]), tf.constant(0))
    upload = sum(int(np.prod(t.shape)) * t.dtype.size for t in tf.nest.flatten(message))
    if isinstance(self._codec, compression.IdentityCodec):
      return rows, upload

    def one(x):
      x = tf.ensure_shape(x, [d])
      return self._codec.round_trip(x, compression.client_seed(x))

    return tf.map_fn(one, rows), upload

  def _communication(self, n: tf.Tensor, upload: int, passes: int = 1) -> collections.OrderedDict:
    dense = 4 * self._d
    return compression.communication(n, passes * upload, dense, dense)

  def _build(self) -> collections.OrderedDict:
    s = self._settings
    rows, weights, norms = self._client_rows()
    n = tf.shape(rows)[0]
    if s.dp != 'none':
      mean, query_state, measurements = self._dp(rows)
      return collections.OrderedDict(mean=self._unflat(mean), query_state=query_state,
                                     measurements=measurements)
    if s.aggregator == 'mean':
      mean, measurements = self._mean(rows, weights, n)
    elif s.aggregator == 'geometric_median':
      mean, measurements = self._geometric_median(rows, n)
    else:
      decoded, upload = self._encoded(rows)
      rule, rule_measurements = stack.robust_factory(s, self._codec).rule(decoded)
      mean, measurements = rule, collections.OrderedDict(
          **rule_measurements, **self._communication(n, upload))
    outputs = collections.OrderedDict()
    clip = self._clip()
    if clip is not None:
      clipped = tf.reduce_sum(tf.cast(norms > clip, tf.int32))
      measurements = collections.OrderedDict(
          clipping=measurements, clipping_norm=clip, clipped_count=clipped,
          clipped_fraction=tf.cast(clipped, tf.float32) / tf.cast(n, tf.float32))
    if self._quantile is not None:
      outputs['quantile_state'] = self._next_quantile_state(norms)
    return collections.OrderedDict(mean=self._unflat(mean), measurements=measurements, **outputs)

  def _next_quantile_state(self, norms: tf.Tensor) -> Any:
    """`PrivateQuantileEstimationProcess.next`: each norm's record, summed, then the query's
    update of its estimate."""
    query, state = self._quantile, self._quantile_state
    params = query.derive_sample_params(state)
    spec = query.preprocess_record(params, tf.constant(0.0))
    records = tf.map_fn(lambda norm: tf.nest.flatten(query.preprocess_record(params, norm)),
                        norms, fn_output_signature=[t.dtype for t in tf.nest.flatten(spec)])
    summed = tf.nest.pack_sequence_as(spec, [tf.reduce_sum(r, axis=0) for r in records])
    _, new_state, _ = query.get_noised_result(summed, state)
    return new_state

  def _mean(self, rows, weights, n):
    """The mean: Σ codec(w·x) / Σw (`MeanFactory`) or Σ codec(x) / n (unweighted)."""
    if self._weighted:
      decoded, upload = self._encoded(rows * weights[:, tf.newaxis])
      mean = tf.math.divide_no_nan(tf.reduce_sum(decoded, axis=0), tf.reduce_sum(weights))
      names = ('mean_value', 'mean_weight')
    else:
      decoded, upload = self._encoded(rows)
      mean = tf.reduce_sum(decoded, axis=0) / tf.cast(n, tf.float32)
      names = ('mean_value', 'mean_count')
    communication = self._communication(n, upload)
    if self._settings.compression == 'none':  # `add_measurements(dense_communication)`
      return mean, collections.OrderedDict([(names[0], ()), (names[1], ()), *communication.items()])
    return mean, collections.OrderedDict([(names[0], communication), (names[1], ())])

  def _geometric_median(self, rows, n):
    """RFA's smoothed Weiszfeld passes, as `robust.GeometricMedianFactory` runs them."""
    passes = self._settings.gm_passes
    v = tf.reduce_mean(rows, axis=0)
    for _ in range(passes - 1):
      beta = tf.map_fn(lambda x: robust.weiszfeld_weight(x, v), rows)
      v = tf.reduce_sum(beta[:, tf.newaxis] * rows, axis=0) / tf.reduce_sum(beta)
    objective = tf.reduce_mean(tf.norm(rows - v, axis=1))
    dense = 4 * self._d
    return v, collections.OrderedDict(
        num_passes=tf.constant(passes), objective=objective,
        **compression.communication(n, passes * dense + 4 * passes, (passes + 1) * dense, dense))

  def _dp(self, rows):
    """The DP factory's query: clip each record, sum (through the codec), noise, divide by m."""
    query, state = self._query, self._query_state
    params = query.derive_sample_params(state)
    num_leaves = len(tf.nest.flatten(self._record_structure()))
    records = tf.map_fn(
        lambda x: tf.nest.flatten(query.preprocess_record(params, self._unflat(x))), rows,
        fn_output_signature=[tf.float32] * num_leaves)
    sizes = [int(np.prod(r.shape[1:])) for r in records]
    flat = tf.concat([tf.reshape(r, [-1, size]) for r, size in zip(records, sizes)], axis=1)
    decoded, upload = self._encoded(flat)
    total = tf.reduce_sum(decoded, axis=0)
    leaves = [tf.reshape(part, r.shape[1:]) for part, r in zip(tf.split(total, sizes), records)]
    summed = tf.nest.pack_sequence_as(self._record_structure(), leaves)
    result, new_state, _ = query.get_noised_result(summed, state)
    n = tf.shape(rows)[0]
    communication = self._communication(n, upload)
    metrics = collections.OrderedDict(dp_query_metrics=query.derive_metrics(new_state))
    if self._settings.compression == 'none':
      metrics.update(dp=(), **communication)
    else:
      metrics.update(dp=communication)
    return self._flat(tf.nest.flatten(result)), new_state, metrics

  def _record_structure(self):
    """The structure of one DP record (the clipped update, plus the unclipped indicator)."""
    specs = [tf.zeros(s) for s in self._shapes]
    return self._query.preprocess_record(self._query.derive_sample_params(self._query_state),
                                         specs)

  # Running it.

  def __call__(self, deltas: Sequence[np.ndarray], weights: np.ndarray,
               attacks: Optional[Sequence[Optional[dict]]], aggregator_state: Any
               ) -> tuple[list[np.ndarray], Any, 'collections.OrderedDict[str, Any]']:
    """One round's aggregate.

    Args:
      deltas: Per trainable variable, the reporting clients' deltas stacked [n, ...].
      weights: float32[n]: the clients' example counts (ignored unless weighted and the mean).
      attacks: Per client, its plan's attack (`OrderedDict(kind, scale, seed)`) or None.
      aggregator_state: The TFF process's `state.aggregator` (read with DP or adaptive clipping).

    Returns:
      The aggregated delta (one array per variable), the aggregator's new state, and the
      measurements (the factory's names and nesting).
    """
    n = len(weights)
    attacks = [a or {} for a in (attacks or [None] * n)]
    feed = {**dict(zip(self._deltas, deltas)), self._weights: np.asarray(weights, np.float32),
            self._attack['kind']: np.array([a.get('kind', 0) for a in attacks], np.int32),
            self._attack['scale']: np.array([a.get('scale', 1.0) for a in attacks], np.float32),
            self._attack['seed']: np.array([a.get('seed', 0) for a in attacks], np.int32)}
    if self._query is not None:
      feed.update(zip(tf.nest.flatten(self._query_state),
                      tf.nest.flatten(aggregator_state.query_state)))
    if self._quantile is not None:  # clipping_factory's state: (estimator (query, sum), ...)
      feed.update(zip(tf.nest.flatten(self._quantile_state),
                      tf.nest.flatten(aggregator_state['clipping_norm'][0])))
    out = self._session.run(self._outputs, feed)
    new_state = aggregator_state
    if self._quantile is not None:
      estimator = aggregator_state['clipping_norm']
      query_state = tf.nest.pack_sequence_as(estimator[0], tf.nest.flatten(out['quantile_state']))
      new_state = type(aggregator_state)(aggregator_state)
      new_state['clipping_norm'] = type(estimator)([query_state, *estimator[1:]])
    if self._query is not None:
      query_state = tf.nest.pack_sequence_as(aggregator_state.query_state,
                                             tf.nest.flatten(out['query_state']))
      new_state = type(aggregator_state)(
          query_state=query_state, agg_state=aggregator_state.agg_state,
          dp_event=aggregator_state.dp_event, is_init_state=False)
    return list(out['mean']), new_state, out['measurements']

  def close(self) -> None:
    self._session.close()
