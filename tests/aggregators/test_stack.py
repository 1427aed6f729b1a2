"""The aggregator stack: every bad setting is refused before tracing with a one-line error naming
it; factories have the right weightedness; each family runs inside a real learning process."""

import sys

import numpy as np
import pytest
import tensorflow_federated as tff

from tff_lab import algorithms
from tff_lab import tasks
from tff_lab.aggregators import stack

DP = dict(dp='fixed', clip_norm=1.0, noise_multiplier=1.0)

BAD = [
    (dict(aggregator='mode'), 'aggregator'),
    (dict(compression='zip'), 'compression'),
    (dict(dp='maybe'), 'dp'),
    (dict(clients_per_round=0), 'clients_per_round'),
    (dict(trim_fraction=0.5), 'trim_fraction'),
    (dict(trim_fraction=-0.1), 'trim_fraction'),
    (dict(krum_f=-1), 'krum_f'),
    (dict(aggregator='krum', krum_f=2, clients_per_round=6), 'krum_f'),
    (dict(multi_krum_m=0), 'multi_krum_m'),
    (dict(aggregator='krum', krum_f=1, multi_krum_m=10, clients_per_round=10), 'multi_krum_m'),
    (dict(aggregator='krum', krum_f=2, clients_per_round=10, num_dropped=4), 'krum_f'),
    (dict(num_dropped=10, clients_per_round=10), 'num_dropped'),
    (dict(gm_passes=0), 'gm_passes'),
    (dict(clip_norm=0.0), 'clip_norm'),
    (dict(clip_norm=-1.0), 'clip_norm'),
    (dict(clip_norm=float('inf')), 'clip_norm'),
    (dict(clip_quantile=1.0), 'clip_quantile'),
    (dict(bits=0), 'bits'),
    (dict(bits=17), 'bits'),
    (dict(bits=4.5), 'bits'),
    (dict(topk_fraction=0.0), 'topk_fraction'),
    (dict(topk_fraction=1.0), 'topk_fraction'),
    (dict(mask_fraction=1.5), 'mask_fraction'),
    (dict(DP, noise_multiplier=0.0), 'noise_multiplier'),
    (dict(DP, noise_multiplier=-1.0), 'noise_multiplier'),
    (dict(noise_multiplier=1.0), 'noise_multiplier'),  # without DP
    (dict(DP, clip_norm=None), 'clip_norm'),  # DP without clipping
    (dict(DP, noise_multiplier=None), 'noise_multiplier'),
    (dict(DP, adaptive_clip=True), 'adaptive_clip'),
    (dict(DP, aggregator='median'), 'aggregator'),
    (dict(DP, compression='quantize'), 'compression'),
    (dict(DP, compression='random_mask'), 'compression'),
    (dict(secure_aggregation=True, aggregator='krum'), 'secure_aggregation'),
    (dict(secure_aggregation=True, compression='topk'), 'secure_aggregation'),
    (dict(secure_aggregation=True, dp='adaptive', noise_multiplier=0.1), "dp='adaptive'"),
    (dict(secure_aggregation=True, adaptive_clip=True), 'adaptive_clip'),
    (dict(secure_aggregation=True, clients_per_round=1), 'clients_per_round >= 2'),
    (dict(secure_aggregation=True, secagg_threshold=1), 'secagg_threshold'),
    (dict(secure_aggregation=True, secagg_threshold=11), 'secagg_threshold'),
    (dict(secure_aggregation=True, secagg_threshold=2.5), 'secagg_threshold'),
    (dict(secure_aggregation=True, secagg_threshold=5), r'strict majority of the clients \(2t > n'),
    (dict(secure_aggregation=True, num_dropped=5), 'dropout_fraction leaves 5 of 10'),
    (dict(secure_aggregation=True, secagg_threshold=8, num_dropped=3), 'secagg_threshold=8'),
    (dict(secure_aggregation=True, secagg_range=0.0), 'secagg_range'),
    (dict(secure_aggregation=True, secagg_range=float('nan')), 'secagg_range'),
    (dict(secagg_threshold=3), 'only applies with secure_aggregation'),
    (dict(secagg_range=10.0), 'only applies with secure_aggregation'),
    (dict(rotation=True), 'rotation'),
    (dict(aggregator='geometric_median', compression='topk'), 'geometric_median'),
]


@pytest.mark.parametrize('settings,name', BAD, ids=[str(s) for s, _ in BAD])
def test_bad_settings_are_refused_with_one_line_naming_them(settings, name):
  with pytest.raises(ValueError, match=name) as error:
    stack.validate_aggregation_settings(**settings)
  assert '\n' not in str(error.value)
  with pytest.raises(ValueError, match=name):
    stack.create_aggregator(**settings)


def test_unknown_setting_is_a_type_error():
  with pytest.raises(TypeError, match='trim_fractoin'):
    stack.validate_aggregation_settings(trim_fractoin=0.1)


@pytest.mark.parametrize('settings', [
    dict(), dict(aggregator='trimmed_mean', trim_fraction=0.49),
    dict(aggregator='krum', krum_f=2, multi_krum_m=5, clients_per_round=7),
    dict(aggregator='krum', krum_f=2, multi_krum_m=3, clients_per_round=10, num_dropped=3),
    dict(compression='quantize', bits=1, rotation=True), dict(compression='quantize', bits=16),
    dict(clip_norm=0.1, adaptive_clip=True, clip_quantile=0.5), dict(adaptive_clip=True),
    dict(secure_aggregation=True, clip_norm=0.5), dict(secure_aggregation=True, **DP),
    dict(secure_aggregation=True, num_dropped=4),  # 6 of 10 report: the majority threshold
    dict(secure_aggregation=True, secagg_threshold=6, num_dropped=4, secagg_range=1e3),
    dict(secure_aggregation=True, clients_per_round=2),
])
def test_sensible_settings_pass(settings):
  stack.validate_aggregation_settings(**settings)


def test_a_missing_extension_module_is_a_clear_error(monkeypatch):
  monkeypatch.setitem(sys.modules, 'tff_lab.aggregators.dp', None)  # import fails
  with pytest.raises(ValueError, match='needs tff_lab.aggregators.dp'):
    stack.validate_aggregation_settings(**DP)


def test_secure_aggregation_is_not_a_factory_and_its_reference_is_the_plain_stack():
  settings = dict(secure_aggregation=True, secagg_threshold=3, clip_norm=0.5,
                  clients_per_round=4)
  stack.validate_aggregation_settings(**settings)
  with pytest.raises(ValueError, match='secure_rounds.SecureAggregationRounds') as error:
    stack.create_aggregator(**settings)
  assert '\n' not in str(error.value)
  assert stack.without_secure_aggregation(settings) == dict(clip_norm=0.5, clients_per_round=4)
  assert isinstance(stack.create_aggregator(**stack.without_secure_aggregation(settings)),
                    tff.aggregators.WeightedAggregationFactory)


@pytest.mark.parametrize('settings', [
    dict(), dict(aggregator='median'), dict(aggregator='geometric_median', clip_norm=1.0),
    dict(aggregator='trimmed_mean', compression='topk'), dict(compression='quantize'),
    dict(adaptive_clip=True, compression='random_mask'),
])
def test_weightedness_follows_the_learning_process(settings):
  assert isinstance(stack.create_aggregator(weighted=True, **settings),
                    tff.aggregators.WeightedAggregationFactory)
  assert isinstance(stack.create_aggregator(weighted=False, **settings),
                    tff.aggregators.UnweightedAggregationFactory)


def test_dp_with_topk_compression_composes():
  pytest.importorskip('tff_lab.aggregators.dp')
  factory = stack.create_aggregator(weighted=False, compression='topk', topk_fraction=0.25,
                                    clients_per_round=3, **DP)
  process = factory.create(tff.TensorType(np.float32, [8]))
  out = process.next(process.initialize(), [np.array([3, 0, 0, 4, 0, 0, 0, 0], np.float32)] * 3)
  assert np.all(np.isfinite(out.result))
  # The clipped records go through the compressed sum: 2 of 8 coordinates, values and indices.
  assert out.measurements['dp']['upload_bytes_per_client'] == 2 * (4 + 4)
  assert out.measurements['dp']['compression_ratio'] == pytest.approx(2.0)


def _run_rounds(algorithm, rounds=2, **settings):
  task = tasks.create_task('seed_linear')
  ids = task.train_data.client_ids[:6]
  data = [task.preprocess_train(task.train_data.create_tf_dataset_for_client(c)) for c in ids]
  opt = tff.learning.optimizers.build_sgdm
  process = algorithms.create_learning_process(
      algorithm, task, opt(0.05), opt(1.0), model_aggregator=stack.create_aggregator(
          weighted=algorithm != 'fedavg_unweighted', clients_per_round=6, **settings))
  state = process.initialize()
  start = process.get_model_weights(state).trainable[0]
  history = []
  for _ in range(rounds):
    output = process.next(state, data)
    state = output.state
    history.append(output.metrics['aggregator'])
  end = process.get_model_weights(state).trainable[0]
  assert np.all(np.isfinite(end)) and not np.allclose(start, end)
  return history


def test_robust_rule_with_adaptive_clipping_in_fedavg():
  first, last = _run_rounds('fedavg', aggregator='trimmed_mean', trim_fraction=0.2,
                            clip_norm=0.5, adaptive_clip=True)
  assert first['clipping_norm'] == pytest.approx(0.5)
  assert last['clipping_norm'] != pytest.approx(0.5)  # adapted after round 1
  assert last['clipped_fraction'] == pytest.approx(last['clipped_count'] / 6)
  assert last['clipping']['num_clients'] == 6
  assert last['clipping']['trimmed_per_side'] == 1  # int(0.2 * 6)
  assert last['clipping']['upload_bytes_per_client'] == 2 * 4  # seed_linear: 2 float32 weights


def test_geometric_median_in_unweighted_fedavg():
  metrics = _run_rounds('fedavg_unweighted', aggregator='geometric_median', gm_passes=3)[-1]
  assert metrics['num_passes'] == 3 and metrics['num_clients'] == 6
  assert np.isfinite(metrics['objective'])
  assert metrics['upload_bytes_per_client'] == 3 * 8 + 3 * 4


def test_krum_over_topk_uploads_in_fedavg():
  metrics = _run_rounds('fedavg', aggregator='krum', krum_f=1, multi_krum_m=2,
                        compression='topk', topk_fraction=0.5)[-1]
  assert metrics['num_selected'] == 2
  assert metrics['upload_bytes_per_client'] == 1 * (4 + 4)  # one of the two weights, and its index
  assert metrics['compression_ratio'] == pytest.approx(1.0)


def test_quantized_mean_with_fixed_clipping_in_fedavg():
  metrics = _run_rounds('fedavg', compression='quantize', bits=4, rotation=True,
                        clip_norm=1.0)[-1]
  assert metrics['clipping_norm'] == pytest.approx(1.0)
  assert 0 <= metrics['clipped_fraction'] <= 1
  communication = metrics['clipping']['mean_value']
  assert communication['upload_bytes_per_client'] == 1 + 8 + 4  # 2 codes x 4 bits, low/high, seed
  assert communication['num_clients'] == 6
  assert communication['download_bytes_per_client'] == 8
  assert communication['compression_ratio'] == pytest.approx(8 / 13)


def test_uncompressed_mean_reports_dense_bytes():
  metrics = _run_rounds('fedavg', rounds=1)[-1]
  assert metrics['upload_bytes_per_client'] == metrics['download_bytes_per_client'] == 8
  assert metrics['num_clients'] == 6 and metrics['compression_ratio'] == 1.0
