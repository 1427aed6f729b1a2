"""The in-graph aggregation against the TFF factories it mirrors: the same client values go to
`create_aggregator(**settings).create(...)`'s process (TFF's runtime) and to
`InGraphAggregation` (one TF graph); results, measurements and states must agree."""

import collections

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_lab.aggregators import in_graph
from tff_lab.aggregators import stack
from tff_lab.algorithms import client_work

SHAPES = [(3, 4), (4,)]
N = 7


def _clients(seed=0, scale=1.0):
  rng = np.random.default_rng(seed)
  deltas = [[(rng.normal(size=s) * scale * (1 + k)).astype(np.float32) for s in SHAPES]
            for k in range(N)]
  weights = rng.integers(1, 20, size=N).astype(np.float32)
  return deltas, weights


def _tff(settings, deltas, weights, weighted=True, state=None):
  factory = stack.create_aggregator(weighted=weighted, **settings)
  value_type = tff.to_type([(np.float32, s) for s in SHAPES])
  if weighted:
    process = factory.create(value_type, tff.TensorType(np.float32))
  else:
    process = factory.create(value_type)
  state = process.initialize() if state is None else state
  args = (state, deltas, list(weights)) if weighted else (state, deltas)
  out = process.next(*args)
  return [np.asarray(r) for r in out.result], out.measurements, out.state, state


def _in_graph(settings, deltas, weights, weighted=True, state=None, attacks=None):
  aggregation = in_graph.InGraphAggregation(stack.AggregationSettings(**settings), weighted,
                                            SHAPES)
  stacked = [np.stack([d[i] for d in deltas]) for i in range(len(SHAPES))]
  try:
    return aggregation(stacked, weights, attacks, state)
  finally:
    aggregation.close()


def _flat_items(structure, prefix=''):
  if isinstance(structure, dict):
    for k, v in structure.items():
      yield from _flat_items(v, f'{prefix}{k}/')
  elif isinstance(structure, tuple) and not structure:
    return
  else:
    yield prefix.rstrip('/'), structure


def _assert_same(ours, theirs, rtol=1e-5, atol=1e-6):
  ours_mean, ours_measurements = ours
  theirs_mean, theirs_measurements = theirs
  for a, b in zip(ours_mean, theirs_mean):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)
  ours_m = dict(_flat_items(ours_measurements))
  theirs_m = dict(_flat_items(theirs_measurements))
  assert list(ours_m) == list(theirs_m)
  for key in theirs_m:
    np.testing.assert_allclose(ours_m[key], theirs_m[key], rtol=rtol, atol=atol, err_msg=key)


DETERMINISTIC = [
    dict(),
    dict(clip_norm=1.5),
    dict(aggregator='median'),
    dict(aggregator='trimmed_mean', trim_fraction=0.2, clip_norm=2.0),
    dict(aggregator='krum', krum_f=1, multi_krum_m=2, clients_per_round=N),
    dict(aggregator='geometric_median', gm_passes=4),
    dict(compression='topk', topk_fraction=0.3),
    dict(aggregator='median', compression='topk', topk_fraction=0.25),
]
# Random codecs: seeded from each client's own value, so both paths draw the same numbers.
SEEDED = [
    dict(compression='quantize', bits=4),
    dict(compression='quantize', bits=3, rotation=True, clip_norm=2.0),
    dict(compression='random_mask', mask_fraction=0.4),
    dict(aggregator='trimmed_mean', compression='quantize', bits=6),
]


@pytest.mark.parametrize('settings', DETERMINISTIC + SEEDED, ids=str)
def test_equals_tff_factory_weighted(settings):
  deltas, weights = _clients()
  mean, measurements, _, _ = _tff(settings, deltas, weights)
  ours_mean, _, ours_measurements = _in_graph(settings, deltas, weights)
  _assert_same((ours_mean, ours_measurements), (mean, measurements))


@pytest.mark.parametrize('settings', [dict(), dict(clip_norm=1.0, compression='quantize'),
                                      dict(aggregator='median')], ids=str)
def test_equals_tff_factory_unweighted(settings):
  deltas, weights = _clients(seed=1)
  mean, measurements, _, _ = _tff(settings, deltas, weights, weighted=False)
  ours_mean, _, ours_measurements = _in_graph(settings, deltas, weights, weighted=False)
  _assert_same((ours_mean, ours_measurements), (mean, measurements))


def test_non_finite_client_counts_with_weight_zero_in_the_mean():
  deltas, weights = _clients(seed=2)
  deltas[3][0][0, 0] = np.nan
  ours_mean, _, _ = _in_graph(dict(), deltas, weights)
  honest = [k for k in range(N) if k != 3]
  expected = [sum(weights[k] * deltas[k][i] for k in honest) / weights[honest].sum()
              for i in range(len(SHAPES))]
  for a, b in zip(ours_mean, expected):
    np.testing.assert_allclose(a, b, rtol=1e-5)


@pytest.mark.parametrize('kind', ['sign_flip', 'scale', 'gaussian'])
def test_attacks_are_the_client_works_own(kind):
  """An attacked client's update is `client_work._apply_attack`'s, with the plan's seed."""
  deltas, weights = _clients(seed=3)
  attack = collections.OrderedDict(kind=np.int32(client_work.ATTACK_KINDS[kind]),
                                   scale=np.float32(3.0), seed=np.int32(12345))
  attacks = [None] * N
  attacks[2] = attack
  attacked = [list(d) for d in deltas]
  attacked[2] = [np.asarray(t) for t in client_work._apply_attack(
      [tf.constant(t) for t in deltas[2]], {k: tf.constant(v) for k, v in attack.items()})]
  mean, measurements, _, _ = _tff(dict(aggregator='median'), attacked, weights)
  ours_mean, _, ours_measurements = _in_graph(dict(aggregator='median'), deltas, weights,
                                              attacks=attacks)
  _assert_same((ours_mean, ours_measurements), (mean, measurements))
  if kind == 'sign_flip':
    np.testing.assert_allclose(attacked[2][0], -3.0 * deltas[2][0])


def test_dp_fixed_with_negligible_noise_equals_tff():
  """z = 1e-7 leaves the noise below float32 round-off: clip, sum and the fixed denominator."""
  settings = dict(dp='fixed', clip_norm=1.0, noise_multiplier=1e-7, clients_per_round=N)
  deltas, weights = _clients(seed=4)
  mean, measurements, new_state, state = _tff(settings, deltas, weights)
  ours_mean, ours_state, ours_measurements = _in_graph(settings, deltas, weights, state=state)
  _assert_same((ours_mean, ours_measurements), (mean, measurements), atol=1e-5)
  assert ours_state.is_init_state == new_state.is_init_state == False  # noqa: E712
  np.testing.assert_allclose(tf.nest.flatten(ours_state.query_state),
                             tf.nest.flatten(new_state.query_state))


def test_dp_fixed_topk_with_negligible_noise_equals_tff():
  settings = dict(dp='fixed', clip_norm=0.5, noise_multiplier=1e-7, clients_per_round=N,
                  compression='topk', topk_fraction=0.5)
  deltas, weights = _clients(seed=5)
  mean, measurements, _, state = _tff(settings, deltas, weights)
  ours_mean, _, ours_measurements = _in_graph(settings, deltas, weights, state=state)
  _assert_same((ours_mean, ours_measurements), (mean, measurements), atol=1e-5)


def test_dp_noise_has_the_mechanisms_std_and_is_fresh_each_call():
  """With all-zero updates the aggregate is pure noise: std zC/m per coordinate (d = 16 here,
  so over 40 rounds: 640 draws; the sample std is within 15% of zC/m with overwhelming
  probability), and two rounds never repeat a draw."""
  z, c = 2.0, 0.5
  settings = stack.AggregationSettings(dp='fixed', clip_norm=c, noise_multiplier=z,
                                       clients_per_round=N)
  factory = stack.create_aggregator(weighted=True, **{
      k: getattr(settings, k) for k in ('dp', 'clip_norm', 'noise_multiplier',
                                        'clients_per_round')})
  state = factory.create(tff.to_type([(np.float32, s) for s in SHAPES]),
                         tff.TensorType(np.float32)).initialize()
  aggregation = in_graph.InGraphAggregation(settings, True, SHAPES)
  zeros = [np.zeros((N, *s), np.float32) for s in SHAPES]
  draws = []
  for _ in range(40):
    mean, state, _ = aggregation(zeros, np.ones(N, np.float32), None, state)
    draws.append(np.concatenate([m.ravel() for m in mean]))
  aggregation.close()
  draws = np.stack(draws)
  assert abs(draws.std() / (z * c / N) - 1) < 0.15
  assert len({row.tobytes() for row in draws}) == len(draws)


def test_dp_adaptive_moves_the_clip_like_tff():
  """Adaptive DP: every update far above the clip, so the unclipped fraction is ~0 and the clip
  grows by exp(η·γ) on both paths (the count noise σ_b = 0.05·m moves it only slightly)."""
  settings = dict(dp='adaptive', clip_norm=0.1, noise_multiplier=0.01, clients_per_round=N)
  deltas, weights = _clients(seed=6, scale=10.0)
  _, _, tff_state, state = _tff(settings, deltas, weights)
  _, ours_state, _ = _in_graph(settings, deltas, weights, state=state)
  clip = lambda s: float(s.query_state.numerator_state.sum_state.l2_norm_clip)
  assert clip(ours_state) > clip(state) and clip(tff_state) > clip(state)
  np.testing.assert_allclose(clip(ours_state), clip(tff_state), rtol=0.05)


@pytest.mark.parametrize('settings', [
    dict(adaptive_clip=True, clip_norm=2.0, clip_quantile=0.5),
    dict(adaptive_clip=True, clip_quantile=0.3, aggregator='median'),
], ids=str)
def test_adaptive_clip_follows_the_quantile_like_tff_over_rounds(settings):
  """Three rounds, each state fed back: the clip used and the estimate it moves to are TFF's
  `PrivateQuantileEstimationProcess.no_noise` state on both paths; it must move each round."""
  aggregation = in_graph.InGraphAggregation(stack.AggregationSettings(**settings), True, SHAPES)
  _, _, _, tff_state = _tff(settings, *_clients(), state=None)
  ours_state = tff_state
  clips = []
  for round_num in range(3):
    deltas, weights = _clients(seed=10 + round_num, scale=0.5 + round_num)
    mean, measurements, tff_state, _ = _tff(settings, deltas, weights, state=tff_state)
    stacked = [np.stack([d[i] for d in deltas]) for i in range(len(SHAPES))]
    ours_mean, ours_state, ours_measurements = aggregation(stacked, weights, None, ours_state)
    _assert_same((ours_mean, ours_measurements), (mean, measurements))
    np.testing.assert_allclose(tf.nest.flatten(ours_state['clipping_norm']),
                               tf.nest.flatten(tff_state['clipping_norm']), rtol=1e-6)
    clips.append(float(measurements['clipping_norm']))
  aggregation.close()
  assert len(set(clips)) == 3  # the clip moved every round


def test_refuses_what_it_does_not_run():
  from tff_lab import aggregators  # pylint: disable=g-import-not-at-top
  from tff_lab.aggregators import registry  # pylint: disable=g-import-not-at-top
  aggregators.register('t_in_graph_plugin', lambda weighted: tff.aggregators.MeanFactory())
  try:
    with pytest.raises(ValueError, match='does not run registered aggregators'):
      in_graph.check_supported(stack.AggregationSettings(aggregator='t_in_graph_plugin'))
  finally:
    del registry._BUILDERS['t_in_graph_plugin']  # pylint: disable=protected-access
