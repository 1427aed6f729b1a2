"""Training with the real secure aggregation protocol: the TFF path's weights to within the derived
fixed-point bound, exactly the decoded sum of the clients' encoded updates, with and without
dropouts; what the server held looks uniform; too few survivors fail loudly; keys do not matter."""

import collections

import numpy as np
import pytest
from scipy import stats
import tensorflow as tf
import tensorflow_federated as tff

from tff_lab import aggregators
from tff_lab import algorithms
from tff_lab import tasks
from tff_lab.algorithms import client_work as client_work_lib
from tff_lab.algorithms import registry
from tff_lab.algorithms import secure_rounds
from tff_lab.privacy import secagg
from tff_lab.training import loop

N = 5  # clients per round


def _hparams(algorithm, mu):
  return {'mu': mu} if algorithm == 'fedprox' else None


def _build(task, algorithm, server=('sgd', 1.0), mu=0.0, with_attacks=False, **settings):
  """The plain TFF process and the secure runner for the same settings."""
  client_opt = algorithms.create_optimizer('sgd', 0.05)
  server_opt = algorithms.create_optimizer(*server)
  plain = aggregators.create_aggregator(weighted=algorithm != 'fedavg_unweighted',
                                        clients_per_round=N,
                                        **aggregators.without_secure_aggregation(settings))
  process = algorithms.create_learning_process(algorithm, task, client_opt, server_opt,
                                               hparams=_hparams(algorithm, mu),
                                               model_aggregator=plain, with_attacks=with_attacks)
  runner = secure_rounds.SecureAggregationRounds(
      task, algorithm, client_opt, server_opt,
      aggregators.AggregationSettings(secure_aggregation=True, clients_per_round=N, **settings),
      hparams=_hparams(algorithm, mu), with_attacks=with_attacks)
  state = process.set_model_weights(process.initialize(), loop.initial_model_weights(task, 0))
  return process, runner, state


def _inputs(task, round_num, num_dropped=0, attack=None):
  """The round's reporting clients (the last `num_dropped` sampled ones never report)."""
  sampled = loop.sample_clients(task.train_data.client_ids, N, 0, round_num)
  inputs = []
  for position, cid in enumerate(sampled[:N - num_dropped]):
    data = task.preprocess_train(task.train_data.create_tf_dataset_for_client(cid),
                                 seed=loop.client_shuffle_seed(0, round_num, position))
    if attack is not None:
      data = collections.OrderedDict(data=data, attack=client_work_lib.attack_spec(
          attack if position == 0 else 'none', 3.0, position))
    inputs.append(data)
  return inputs


def _flat(weights):
  return np.concatenate([np.ravel(w) for w in weights.trainable])


@pytest.fixture(scope='module')
def seed_linear_runner():
  """(task, runner, initial state) of FedAvg with a fixed clip on seed_linear."""
  task = tasks.create_task('seed_linear')
  _, runner, state = _build(task, 'fedavg', clip_norm=0.5)
  return task, runner, state


@pytest.fixture
def protocol_runs(monkeypatch):
  """Every `secagg.run_protocol` call of the runner: (inputs, result)."""
  runs = []
  original = secagg.run_protocol

  def recording(inputs, *args, **kwargs):
    result = original(inputs, *args, **kwargs)
    runs.append((inputs, result))
    return result

  monkeypatch.setattr(secagg, 'run_protocol', recording)
  return runs


def test_client_phase_returns_each_clients_result_as_a_python_list_in_input_order():
  task = tasks.create_task('seed_linear')
  work = registry.create_client_work('fedavg', task, algorithms.create_optimizer('sgd', 0.05))
  weights_type = work.next.type_signature.parameter[1].member
  phase = secure_rounds.build_client_phase(tff.learning.templates.build_broadcast_process(
      weights_type), work)
  sizes = [3, 9, 5, 12]
  datasets = [task.preprocess_train(task.train_data.create_tf_dataset_for_client(cid).take(k),
                                    seed=0) for cid, k in zip(task.train_data.client_ids, sizes)]
  weights = loop.initial_model_weights(task, 0)
  out = phase((), weights, work.initialize(), datasets)
  clients = out['clients']
  assert isinstance(clients, list) and len(clients) == len(sizes)
  assert [float(c['weight']) for c in clients] == sizes  # example counts, in input order
  assert all(c['update'].shape == (2,) and c['norm_clipped'] == 0 for c in clients)
  assert out['client_work']['train']['num_examples'] == sum(sizes)


@pytest.mark.parametrize('algorithm, settings, extra', [
    ('fedavg', {}, {}),
    ('fedavg_unweighted', {}, {}),
    ('fedprox', dict(clip_norm=0.05), dict(mu=0.5, server=('sgdm', 0.5))),
    ('fedsgd', {}, {}),
    # Byzantine updates under DP: the DP mean weighs clients equally and divides by N.
    ('fedavg', dict(dp='fixed', clip_norm=0.05, noise_multiplier=1e-6), dict(with_attacks=True)),
], ids=['fedavg', 'unweighted', 'fedprox-clip', 'fedsgd', 'sign_flip-dp_fixed'])
def test_rounds_equal_the_tff_path_within_the_fixed_point_bound(algorithm, settings, extra):
  task = tasks.create_task('seed_linear')
  process, runner, state = _build(task, algorithm, **settings, **extra)
  attack = 'sign_flip' if extra.get('with_attacks') else None
  lr = extra.get('server', ('sgd', 1.0))[1]
  for round_num, dropped in ((1, 0), (2, 2), (3, 1)):
    plain = process.next(state, _inputs(task, round_num, dropped, attack))
    secure = runner.next(state, _inputs(task, round_num, dropped, attack), num_dropped=dropped)
    assert secure.metrics['client_work'] == plain.metrics['client_work']  # same client work
    survivors = N - dropped
    if 'dp' in settings:  # the DP mean divides by clients_per_round; its noise std is 1e-8 here
      bound = runner.codec.error_bound(survivors) / N + 1e-7
    elif algorithm == 'fedavg_unweighted':
      bound = runner.codec.error_bound(survivors) / survivors
    else:  # weighted by example counts
      bound = runner.codec.error_bound(survivors) / plain.metrics['client_work']['train'][
          'num_examples']
    np.testing.assert_allclose(_flat(secure.state.global_model_weights),
                               _flat(plain.state.global_model_weights),
                               atol=lr * bound + 2e-7, rtol=1e-6)
    aggregator = secure.metrics['aggregator']
    assert aggregator['num_clients'] == survivors
    assert aggregator['secagg']['recovered_masks'] == dropped
    assert aggregator['secagg']['masked_vectors_held'] == survivors
    assert aggregator['clipped_coordinates'] == 0
    if 'clip_norm' in settings and 'dp' not in settings:
      assert aggregator['clipped_count'] == plain.metrics['aggregator']['clipped_count'] > 0
    tf.nest.assert_same_structure(secure.state, plain.state)
    for a, b in zip(tf.nest.flatten(secure.state), tf.nest.flatten(plain.state)):
      assert np.asarray(a).dtype == np.asarray(b).dtype and np.shape(a) == np.shape(b)
    # The aggregator state evolves as TFF's (constant; DP's records that a round ran).
    assert tf.nest.flatten(secure.state.aggregator) == tf.nest.flatten(plain.state.aggregator)
    state = secure.state


def test_training_sums_are_exact_and_the_server_holds_only_uniform_vectors(protocol_runs):
  task = tasks.create_task('digits', {'model': 'mlp', 'num_clients': 8, 'seed': 1})
  process, runner, state = _build(task, 'fedavg')
  for round_num, dropped in ((1, 1), (2, 0)):
    inputs = _inputs(task, round_num, dropped)
    plain = process.next(state, inputs)
    secure = runner.next(state, _inputs(task, round_num, dropped), num_dropped=dropped)
    encoded, result = protocol_runs[-1]
    assert sorted(encoded) == list(range(N))  # the dropped client took part, then vanished
    assert result.included == tuple(range(N - dropped))
    assert sorted(result.masked_inputs) == list(result.included)  # the server's whole view
    # The unmasked sum is exactly the sum of the survivors' encoded updates: the masks cancel,
    # the dropped client's are recovered. The new weights are exactly that sum, decoded, applied.
    total = sum(encoded[u] for u in result.included) % np.uint64(2**32)
    np.testing.assert_array_equal(result.sum, total)
    decoded = runner.codec.decode(total, len(result.included))
    assert decoded.weight == plain.metrics['client_work']['train']['num_examples']
    mean = decoded.value / decoded.weight
    old = _flat(state.global_model_weights)
    np.testing.assert_array_equal(_flat(secure.state.global_model_weights),
                                  old - mean.astype(np.float32))
    bound = runner.codec.error_bound(N - dropped) / decoded.weight
    np.testing.assert_allclose(_flat(secure.state.global_model_weights),
                               _flat(plain.state.global_model_weights), atol=bound + 2e-7)
    assert secure.metrics['aggregator']['secagg']['recovered_masks'] == dropped
    # What the server saw: uniform on Z_2^32, unlike the encoded updates, and never one of them.
    for u, masked in result.masked_inputs.items():
      for vector, uniform in ((masked, True), (encoded[u], False)):
        top = np.bincount((vector >> np.uint64(24)).astype(np.int64), minlength=256)
        chi2, ks = stats.chisquare(top).pvalue, stats.kstest(vector / 2.0**32, 'uniform').pvalue
        if uniform:
          assert chi2 > 1e-6 and ks > 1e-6, (round_num, u, chi2, ks)
        else:
          assert chi2 < 1e-12 and ks < 1e-12, (round_num, u, chi2, ks)
      assert np.mean(masked == encoded[u]) < 1e-3
    state = secure.state


def test_too_many_dropouts_fail_loudly_and_return_nothing(seed_linear_runner):
  task, runner, state = seed_linear_runner  # threshold: a majority of 5, 3
  with pytest.raises(secagg.InsufficientSharesError) as error:
    runner.next(state, _inputs(task, 1, num_dropped=3), num_dropped=3)
  message = str(error.value)
  assert '\n' not in message
  assert '2 of 5 clients sent a masked input, fewer than the threshold t=3' in message
  with pytest.raises(ValueError, match='clients_per_round=5'):
    runner.next(state, _inputs(task, 1), num_dropped=1)  # 6 clients: the sum could overflow


def test_key_randomness_does_not_change_the_trajectory(seed_linear_runner, protocol_runs):
  task, runner, state = seed_linear_runner
  ends = []
  for _ in range(2):  # same rounds, fresh os.urandom keys each time
    s = state
    for round_num in (1, 2):
      s = runner.next(s, _inputs(task, round_num, 1), num_dropped=1).state
    ends.append(s)
  for a, b in zip(tf.nest.flatten(ends[0]), tf.nest.flatten(ends[1])):
    np.testing.assert_array_equal(a, b)
  first, second = protocol_runs[0][1], protocol_runs[2][1]  # round 1 of each run
  assert all(np.any(first.masked_inputs[u] != second.masked_inputs[u])
             for u in first.masked_inputs)


def test_codec_decodes_integer_weights_exactly_and_counts_clipping():
  codec = secure_rounds.ContributionCodec(4, num_clients=10, value_range=1.0, weighted=True)
  assert codec.weight.scale == 2.0**7  # the largest power of two with 10·(2^20−1)·scale < 2^31
  heaviest = sum(codec.encode(np.zeros(4), secure_rounds.MAX_WEIGHT, 0) for _ in range(10))
  assert codec.decode(heaviest % np.uint64(2**32), 10).weight == 10 * secure_rounds.MAX_WEIGHT
  rng = np.random.default_rng(0)
  updates = [rng.uniform(-0.05, 0.05, 4) for _ in range(10)]
  weights = list(range(1, 11))
  updates[9][2] = 1.0  # 10 × 1.0 is beyond the range ±1: clipped, and counted
  total = sum(codec.encode(u, w, i % 2) for i, (u, w) in enumerate(zip(updates, weights)))
  decoded = codec.decode(total % np.uint64(2**32), 10)
  assert decoded.weight == 55.0
  assert decoded.clipped_coordinates == 1 and decoded.norm_clipped == 5
  exact = sum(np.clip(u * w, -1, 1) for u, w in zip(updates, weights))
  np.testing.assert_allclose(decoded.value, exact, atol=codec.error_bound(10))
  assert not np.allclose(decoded.value, sum(u * w for u, w in zip(updates, weights)))
  with pytest.raises(ValueError, match='overflow'):
    codec.decode(total, 11)


def test_dp_noise_added_after_unmasking_has_std_z_clip_over_m():
  m, clip, z, d = 4, 0.5, 1.0, 40_000
  codec = secure_rounds.ContributionCodec(d, num_clients=m, value_range=clip, weighted=False)
  rng = np.random.default_rng(1)
  updates = [rng.uniform(-clip, clip, d) / np.sqrt(d) for _ in range(m)]
  contributions = [codec.encode(u, 1.0, 0) for u in updates]
  noised = secure_rounds.secure_mean(codec, contributions, num_dropped=1, noise_stddev=z * clip,
                                     denominator=m, rng=np.random.default_rng(2))
  exact = secure_rounds.secure_mean(codec, contributions, num_dropped=1, denominator=m)
  np.testing.assert_allclose(exact.mean, np.sum(updates, axis=0) / m,
                             atol=codec.error_bound(m) / m)
  noise = noised.mean - exact.mean
  assert np.std(noise) == pytest.approx(z * clip / m, rel=0.02)
  assert abs(np.mean(noise)) < 4 * z * clip / m / np.sqrt(d)
  assert exact.protocol.included == (0, 1, 2, 3) and len(exact.protocol.masked_inputs) == 4


def test_counted_bytes_are_the_protocols_closed_form(seed_linear_runner):
  task, runner, state = seed_linear_runner
  metrics = runner.next(state, _inputs(task, 1, 1), num_dropped=1).metrics['aggregator']
  upload, download = secagg.expected_bytes(N, N, N - 1, N - 1, runner.codec.length, 32)
  assert metrics['upload_bytes_per_client'] == upload / N
  assert metrics['download_bytes_per_client'] == 2 * 4 + download / N  # model broadcast + protocol
  assert metrics['float32_upload_bytes_per_client'] == 2 * 4
  assert metrics['compression_ratio'] == pytest.approx(2 * 4 * (N - 1) / upload)
  assert metrics['secagg']['extra_upload_bytes_per_client'] == (upload - 2 * 4 * (N - 1)) / N
  assert metrics['secagg']['extra_download_bytes_per_client'] == download / N
  assert metrics['secagg']['threshold'] == 3 and metrics['secagg']['clients_started'] == N
  assert metrics['secagg']['client_seconds'] > 0 and metrics['secagg']['server_seconds'] > 0


def test_settings_without_secure_aggregation_are_refused():
  task = tasks.create_task('seed_linear')
  with pytest.raises(ValueError, match='secure_aggregation=True'):
    secure_rounds.SecureAggregationRounds(
        task, 'fedavg', algorithms.create_optimizer('sgd', 0.1),
        algorithms.create_optimizer('sgd', 1.0), aggregators.AggregationSettings())


def test_private_metrics_go_through_the_protocol_and_equal_tffs(protocol_runs):
  task = tasks.create_task('seed_linear')
  process, runner, state = _build(task, 'fedavg', secagg_private_metrics=True)
  assert runner.codec.metrics.num_leaves == 6  # accuracy and loss (total, count), two counts
  for round_num, dropped in ((1, 0), (2, 1)):
    plain = process.next(state, _inputs(task, round_num, dropped))
    secure = runner.next(state, _inputs(task, round_num, dropped), num_dropped=dropped)
    train, expected = secure.metrics['client_work']['train'], plain.metrics['client_work']['train']
    assert list(train) == list(expected)
    for name in ('num_examples', 'num_batches'):  # integers: exact
      assert train[name] == expected[name] and train[name].dtype == expected[name].dtype
    for name in ('loss', 'accuracy'):
      np.testing.assert_allclose(train[name], expected[name], rtol=1e-6)
      assert train[name].dtype == np.float32
    np.testing.assert_allclose(_flat(secure.state.global_model_weights),
                               _flat(plain.state.global_model_weights), atol=1e-6)
    encoded, result = protocol_runs[-1]
    metrics_sum = runner.codec.decode(result.sum, len(result.included)).metrics
    # The counts came out of the masked sum (tf.nest orders leaves by metric name).
    assert list(metrics_sum[-2:]) == [expected['num_batches'], expected['num_examples']]
    assert len(encoded[0]) == runner.codec.length == 2 + 1 + 2 + 6 * secure_rounds.METRIC_LIMBS
    state = secure.state


def test_metrics_codec_sums_integers_exactly_and_floats_to_float32_resolution():
  codec = secure_rounds.MetricsCodec(num_leaves=3, num_clients=10)
  rng = np.random.default_rng(0)
  leaves = [np.array([rng.integers(0, 10**6), rng.uniform(-1e4, 1e4), rng.uniform(0, 5)])
            for _ in range(10)]
  total = sum(codec.encode(x)[0] for x in leaves) % np.uint64(2**32)
  decoded = codec.decode(total, 10)
  exact = np.sum(leaves, axis=0)
  assert decoded[0] == exact[0]
  np.testing.assert_allclose(decoded[1:], exact[1:], atol=10 * 2.0**-25)
  assert codec.encode(np.array([1e8, 0.0, -1e8]))[1] == 2  # beyond ±2^23: clipped, counted


def test_active_security_rounds_give_the_same_weights_and_cost_the_signatures(seed_linear_runner):
  task, runner, state = seed_linear_runner
  _, active, _ = _build(task, 'fedavg', clip_norm=0.5, secagg_active=True)
  honest = runner.next(state, _inputs(task, 1, 1), num_dropped=1)
  secure = active.next(state, _inputs(task, 1, 1), num_dropped=1)
  for a, b in zip(tf.nest.flatten(secure.state), tf.nest.flatten(honest.state)):
    np.testing.assert_array_equal(a, b)  # the masks cancel exactly in both modes
  upload, _ = secagg.expected_bytes(N, N, N - 1, N - 1, runner.codec.length, 32, active=True)
  assert secure.metrics['aggregator']['upload_bytes_per_client'] == upload / N
  assert (secure.metrics['aggregator']['upload_bytes_per_client']
          - honest.metrics['aggregator']['upload_bytes_per_client']
          == pytest.approx(secagg.SIGNATURE_BYTES + (N - 1) * secagg.CONSISTENCY_MESSAGE_BYTES / N))


class _ExcludingServer(secagg.SecAggServer):
  """A deviating server: it tells the clients that client 0 sent no masked input."""

  def collect_masked_inputs(self, messages):
    return super().collect_masked_inputs(messages)[secagg.ID_BYTES:]


def test_a_deviating_server_fails_the_round_in_one_line_and_returns_no_sum(monkeypatch):
  codec = secure_rounds.ContributionCodec(4, num_clients=5, value_range=1.0, weighted=False)
  contributions = [codec.encode(np.full(4, 0.1), 1.0, 0) for _ in range(5)]
  monkeypatch.setattr(secagg, 'SecAggServer', _ExcludingServer)
  with pytest.raises(secagg.SelfExclusionViolation) as error:
    secure_rounds.secure_mean(codec, contributions)
  message = str(error.value)
  assert '\n' not in message
  assert message.startswith('secure aggregation aborted, no sum was computed: client 0 refuses: '
                            'the survivor list at Unmasking leaves it out')
  assert secagg.SelfExclusionViolation.rule in message
