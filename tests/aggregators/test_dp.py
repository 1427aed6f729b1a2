"""DP aggregation: noise std z·C/m, clipping to C (uniform weights), adaptive clip towards the
median norm with TFF's recorded mechanism having the total noise multiplier, argument checks."""

import collections

import numpy as np
import pytest
import tensorflow_federated as tff

from tff_lab.aggregators import dp


@pytest.mark.parametrize('mode,z', [('fixed', 1.0), ('adaptive', 0.3)])
def test_noise_std_is_z_clip_over_clients(mode, z):
  n, clip, length = 4, 0.5, 20_000
  process = dp.create_dp_factory(mode, z, n, clip_norm=clip).create(
      tff.TensorType(np.float32, [length]))
  rng = np.random.default_rng(0)
  values = [(0.1 * rng.normal(size=length) / np.sqrt(length)).astype(np.float32)
            for _ in range(n)]  # norms ≈ 0.1 < clip: nothing is clipped
  noise = process.next(process.initialize(), values).result - np.mean(values, axis=0)
  if mode == 'fixed':
    value_z = z
  else:  # Andrew et al.: z splits into update noise and the count noise σ_b = 0.05·n.
    value_z = (z**-2 - (2 * 0.05 * n)**-2)**-0.5
  expected_std = value_z * clip / n
  assert np.std(noise) == pytest.approx(expected_std, rel=0.03)
  assert abs(np.mean(noise)) < 4 * expected_std / np.sqrt(length)


def test_clipping_bounds_each_update_and_weights_are_ignored():
  n, clip = 3, 1.0
  value_type = tff.types.to_type([tff.TensorType(np.float32, [2]), tff.TensorType(np.float32, [3])])
  process = dp.create_dp_factory('fixed', 1e-6, n, clip_norm=clip, weighted=True).create(
      value_type, tff.TensorType(np.float32))
  rng = np.random.default_rng(1)
  values = [[rng.normal(size=2).astype(np.float32) * s, rng.normal(size=3).astype(np.float32) * s]
            for s in (0.1, 3.0, 10.0)]
  result = process.next(process.initialize(), values, [1.0, 50.0, 1000.0]).result
  flat = [np.concatenate(v) for v in values]
  clipped = [v * min(1.0, clip / np.linalg.norm(v)) for v in flat]  # global L2 norm per client
  np.testing.assert_allclose(np.concatenate(result), np.mean(clipped, axis=0), atol=1e-5)
  assert np.linalg.norm(np.concatenate(result)) <= clip + 1e-5


def test_adaptive_clip_moves_to_median_norm():
  n, z = 8, 0.1
  process = dp.create_dp_factory('adaptive', z, n, clip_norm=0.3).create(
      tff.TensorType(np.float32, [4]))
  rng = np.random.default_rng(2)
  directions = [d / np.linalg.norm(d) for d in rng.normal(size=(n, 4))]
  values = [(norm * d).astype(np.float32) for norm, d in zip(range(1, n + 1), directions)]
  state, clips = process.initialize(), []
  for _ in range(60):
    output = process.next(state, values)
    state = output.state
    clips.append(output.measurements['dp_query_metrics']['clip'])
  # All updates are clipped at first, so the clip grows by about exp(0.2 * 0.5) per round.
  assert all(np.diff(clips[:10]) > 0)
  assert 3.5 < np.mean(clips[-20:]) < 5.5  # the median norm is 4.5 (norms 1..8)
  # The mechanism TFF recorded composes to the total noise multiplier that accounting uses.
  event = tff.aggregators.differential_privacy.extract_dp_event_from_state(state)
  parts = [e.noise_multiplier for e in event.events]
  assert sum(p**-2 for p in parts)**-0.5 == pytest.approx(z, rel=1e-5)


def test_none_builds_nothing():
  assert dp.create_dp_factory('none', 0.0, 10) is None


@pytest.mark.parametrize('kwargs,match', [
    (dict(dp='gaussian'), 'dp must be'),
    (dict(noise_multiplier=0.0), 'noise_multiplier'),
    (dict(noise_multiplier=-1.0), 'noise_multiplier'),
    (dict(noise_multiplier=float('nan')), 'noise_multiplier'),
    (dict(clip_norm=None), 'needs clip_norm'),
    (dict(clip_norm=0.0), 'clip_norm'),
    (dict(adaptive_clip=True), 'adaptive_clip'),
    (dict(clients_per_round=0), 'clients_per_round'),
    (dict(dp='adaptive', noise_multiplier=1.0, clients_per_round=10), 'too large'),
    (dict(dp='adaptive', target_quantile=1.0), 'target_quantile'),
    (dict(dp='adaptive', clip_learning_rate=0.0), 'clip_learning_rate'),
])
def test_bad_arguments_are_refused_before_tracing(kwargs, match):
  args = collections.OrderedDict(dp='fixed', noise_multiplier=0.5, clients_per_round=100,
                                 clip_norm=1.0, adaptive_clip=False)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    dp.create_dp_factory(**args)


def test_the_stack_declares_the_dp_mechanism_it_builds_and_no_other():
  from tff_lab import aggregators  # pylint: disable=g-import-not-at-top
  for weighted in (True, False):
    factory = aggregators.create_aggregator(weighted=weighted, dp='fixed', clip_norm=0.3,
                                            noise_multiplier=0.7, clients_per_round=8)
    assert dp.mechanism_of(factory) == dp.GaussianMechanism(0.7, 8, 0.3, adaptive=False)
    adaptive = aggregators.create_aggregator(weighted=weighted, dp='adaptive',
                                             noise_multiplier=0.2, clients_per_round=8)
    assert dp.mechanism_of(adaptive).adaptive and dp.mechanism_of(adaptive).clip_norm == 0.1
    for settings in ({}, {'clip_norm': 0.3}, {'aggregator': 'median'}):
      assert dp.mechanism_of(aggregators.create_aggregator(weighted=weighted, **settings)) is None


def test_the_adaptive_noise_bound_is_explained_with_flags_that_exist():
  from tff_lab.training import config as config_lib  # pylint: disable=g-import-not-at-top
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.ExperimentConfig(aggregation={'dp': 'adaptive', 'noise_multiplier': 2.0,
                                             'clip_norm': 1.0}).validate()
  message = str(e.value)
  assert '--noise_multiplier=2 is too large for --dp=adaptive with --clients_per_round=10' in (
      message)
  assert 'twice that (1)' in message and 'clipped_count_stddev' not in message
