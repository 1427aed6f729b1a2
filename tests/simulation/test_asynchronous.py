"""FedBuff (Nguyen et al., AISTATS 2022) on the simulated clock: its schedule, built by hand; its
arithmetic, against NumPy; synchronous FedAvg as its special case; exact resume; bad input."""

import collections
import os
import signal
import subprocess
import sys
import time
import types

from absl import flags
import numpy as np
import pytest

from tff_lab import algorithms
from tff_lab import cli
from tff_lab import tasks
from tff_lab.algorithms import client_phase as client_phase_lib
from tff_lab.algorithms import fedavg
from tff_lab.algorithms import spec as spec_lib
from tff_lab.simulation import asynchronous
from tff_lab.simulation import latency
from tff_lab.simulation import plan as plan_lib
from tff_lab.training import checkpoint
from tff_lab.training import loop

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARY = os.path.join(REPO, 'experiments', 'run_experiment.py')


# Staleness weighting and the buffered update, against NumPy.

def test_staleness_weights_are_inverse_sqrt_or_constant():
  tau = np.array([0, 1, 3, 8, 24])
  np.testing.assert_allclose(asynchronous.staleness_weights(tau, 'inverse_sqrt'),
                             [1.0, 1 / np.sqrt(2), 0.5, 1 / 3, 0.2], rtol=1e-15)
  np.testing.assert_array_equal(asynchronous.staleness_weights(tau, 'constant'), np.ones(5))
  with pytest.raises(ValueError, match="unknown staleness 'linear'"):
    asynchronous.staleness_weights(tau, 'linear')


@pytest.mark.parametrize('kind', asynchronous.STALENESS)
def test_the_buffered_update_is_the_staleness_weighted_sum_over_the_total_weight(kind):
  rng = np.random.default_rng(0)
  deltas = [[rng.normal(size=(3, 2)).astype(np.float32), rng.normal(size=2).astype(np.float32)]
            for _ in range(4)]
  weights, taus = [5.0, 0.0, 2.0, 1.0], [0, 3, 2, 7]  # the second update is left out (weight 0)
  s = {'inverse_sqrt': lambda t: 1 / np.sqrt(1 + t), 'constant': lambda t: 1.0}[kind]
  for v in range(2):
    expected = sum(s(t) * w * d[v].astype(np.float64) for d, w, t in zip(deltas, weights, taus)
                   ) / sum(weights)
    got = asynchronous.buffered_update(deltas, weights, taus, kind)[v]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6)
  zero = asynchronous.buffered_update(deltas, [0, 0, 0, 0], taus, kind)
  assert all(np.all(z == 0) for z in zero)


# The schedule, built by hand.

def _latency_file(tmp_path, rows):
  path = tmp_path / 'latency.csv'
  path.write_text('client_id,latency\n' + ''.join(f'{c},{v}\n' for c, v in rows))
  return str(path)


def _schedule(client_ids, latencies, concurrency, buffer_size, seed=0):
  fake_task = types.SimpleNamespace(train_data=types.SimpleNamespace(client_ids=client_ids))
  model = latency.LatencyModel(collections.OrderedDict(zip(client_ids, latencies)), 0.0, seed)
  return asynchronous.FedBuffRounds(fake_task, None, None, concurrency=concurrency,
                                    buffer_size=buffer_size, staleness='inverse_sqrt',
                                    weighted=True, latency_model=model, seed=seed)


# Clients a, b, c take 1, 2 and 3 time units; all three always train (concurrency 3), so each
# runs back to back and the schedule is deterministic; K = 2. By hand (v = model version):
#   t=0  dispatch a, b, c (v0)
#   t=1  a(v0) arrives; refill a (v0)
#   t=2  b(v0), then a(v0) (dispatched later) arrive: b fills the buffer -> aggregation 1
#        [a(v0), b(v0)], tau (0, 0); a(v0) waits in the next buffer; refill a, b (v1)
#   t=3  c(v0) -> aggregation 2 [a(v0), c(v0)], tau (1, 1); a(v1) arrives; refill a, c (v2)
#   t=4  b(v1) -> aggregation 3 [a(v1), b(v1)], tau (1, 1); a(v2) arrives; refill a, b (v3)
#   t=5  a(v3) -> aggregation 4 [a(v2), a(v3)], tau (1, 0); refill a (v4)
#   t=6  c(v2), b(v3) -> aggregation 5, tau (2, 1); then a(v4) waits
HAND_SCHEDULE = [  # (time, [(client, version it started from)], staleness)
    (2.0, [('a', 0), ('b', 0)], [0, 0]),
    (3.0, [('a', 0), ('c', 0)], [1, 1]),
    (4.0, [('a', 1), ('b', 1)], [1, 1]),
    (5.0, [('a', 2), ('a', 3)], [1, 0]),
    (6.0, [('c', 2), ('b', 3)], [2, 1]),
]


def test_the_schedule_matches_one_built_by_hand():
  rounds = _schedule(['a', 'b', 'c'], [1.0, 2.0, 3.0], concurrency=3, buffer_size=2)
  for k, (when, updates, staleness) in enumerate(HAND_SCHEDULE):
    rounds.collect()
    assert rounds.clock == when, k
    assert [(t.client_id, t.version) for t in rounds.buffer] == updates, k
    assert [rounds.version - t.version for t in rounds.buffer] == staleness, k
    assert len(rounds.in_flight) + rounds.free_slots == 3  # concurrency, once slots refill
    rounds.buffer = []
    rounds.version += 1  # what an aggregation does to the schedule
  assert [(t.client_id, t.version) for t in rounds.in_flight][:1] == [('a', 4)]


def test_every_dispatch_wave_samples_idle_clients_and_keeps_concurrency():
  ids = [f'c{i}' for i in range(12)]
  rng = np.random.default_rng(1)
  rounds = _schedule(ids, rng.lognormal(0, 1, 12), concurrency=5, buffer_size=3, seed=4)
  for _ in range(30):
    rounds.collect()
    training = [t.client_id for t in rounds.in_flight]
    assert len(set(training)) == len(training)  # nobody trains twice at once
    assert len(training) + rounds.free_slots == 5
    assert all(t.arrives_at > rounds.clock or t.arrives_at == rounds.clock
               for t in rounds.in_flight)
    rounds.buffer = []
    rounds.version += 1
  assert rounds.wave > 10


# FedBuff step by step against NumPy, on the hand schedule.

def _full_batch_task(num_clients, epochs=2):
  task = tasks.create_task('seed_linear', {'num_clients': num_clients, 'iid': False, 'seed': 2})
  return task.with_train_spec(batch_size=40, num_epochs=epochs, shuffle_buffer_size=1)


def _client_arrays(task):
  out = {}
  for cid in task.train_data.client_ids:
    batch = next(iter(task.train_data.create_tf_dataset_for_client(cid).batch(10_000)))
    out[cid] = (batch['x'].numpy().astype(np.float64), batch['y'].numpy().astype(np.float64))
  return out


def _runner(task, settings, *, lr=0.05, server_lr=0.7, seed=0, weighted=True,
            local_step=spec_lib.PLAIN_SGD):
  concurrency, buffer_size = settings.resolve(3)
  model = latency.create_latency_model(settings, list(task.train_data.client_ids), seed)
  return asynchronous.FedBuffRounds(
      task, client_phase_lib.build_client_phase(task, lr, local_step),
      algorithms.create_optimizer('sgd', server_lr), concurrency=concurrency,
      buffer_size=buffer_size, staleness=settings.staleness, weighted=weighted,
      latency_model=model, seed=seed)


def _plan(round_num):
  return types.SimpleNamespace(round_num=round_num)


def test_fedbuff_equals_numpy_on_the_hand_schedule(tmp_path):
  task = _full_batch_task(3)
  ids = list(task.train_data.client_ids)
  names = dict(zip('abc', ids))
  settings = asynchronous.AsyncSettings(
      concurrency=3, buffer_size=2, latency_model='file', latency_jitter=0.0,
      latency_file=_latency_file(tmp_path, zip(ids, [1, 2, 3])))
  rounds = _runner(task, settings)
  process = fedavg.build_fedavg(task, algorithms.create_optimizer('sgd', 0.05),
                                algorithms.create_optimizer('sgd', 0.7))
  theta0 = plan_lib.initial_model_weights(task, 0)
  state = process.set_model_weights(process.initialize(), theta0)

  arrays = _client_arrays(task)
  versions = [theta0.trainable[0].astype(np.float64)]  # x_v, the model of each version

  def local(cid, x):  # two full-batch GD epochs on MSE; returns x − y and the examples seen
    xs, ys = arrays[cid]
    y = x.copy()
    for _ in range(2):
      y = y - 0.05 * 2.0 / len(ys) * xs.T @ (xs @ y - ys.reshape(-1, 1))
    return x - y, 2 * len(ys)

  for k, (when, updates, staleness) in enumerate(HAND_SCHEDULE, 1):
    output = rounds.next(state, _plan(k))
    state = output.state
    parts = [local(names[c], versions[v]) for c, v in updates]
    s = 1 / np.sqrt(1 + np.asarray(staleness, np.float64))
    mean = sum(si * n * d for si, (d, n) in zip(s, parts)) / sum(n for _, n in parts)
    versions.append(versions[-1] - 0.7 * mean)
    np.testing.assert_allclose(state.global_model_weights.trainable[0], versions[-1],
                               rtol=2e-5, atol=1e-6, err_msg=f'aggregation {k}')
    m = output.metrics
    assert m['simulated_time'] == when
    assert m['async']['staleness_max'] == max(staleness)
    assert m['async']['staleness_mean'] == np.mean(staleness)
    assert m['async']['staleness_p90'] == np.percentile(staleness, 90)
    assert m['async']['model_version'] == k
    assert m['client_work']['train']['num_examples'] == sum(n for _, n in parts)


# With zero latency spread and K = concurrency = clients per round: synchronous FedAvg.

@pytest.mark.parametrize('weighted', [True, False])
def test_zero_spread_and_full_buffer_equals_synchronous_fedavg(weighted):
  task = tasks.create_task('seed_linear', {'num_clients': 10, 'iid': False, 'seed': 2})
  task = task.with_train_spec(batch_size=7, num_epochs=2, shuffle_buffer_size=100)
  m, seed = 4, 3
  settings = asynchronous.AsyncSettings(concurrency=m, buffer_size=m, latency_sigma=0.0,
                                        latency_jitter=0.0)
  rounds = _runner(task, settings, seed=seed, weighted=weighted, lr=0.1, server_lr=1.0)
  process = fedavg.build_fedavg(task, algorithms.create_optimizer('sgd', 0.1),
                                algorithms.create_optimizer('sgd', 1.0), weighted=weighted)
  theta0 = plan_lib.initial_model_weights(task, seed)
  sync_state = async_state = process.set_model_weights(process.initialize(), theta0)
  planner = plan_lib.RoundPlanner(task, m, seed=seed)
  datasets = plan_lib.PlanDatasets(task)
  for r in range(1, 5):
    plan = planner.plan(r)
    sync = process.next(sync_state, datasets(plan))
    sync_state = sync.state
    out = rounds.next(async_state, plan)
    async_state = out.state
    assert rounds.last_arrivals == [(c, r - 1) for c in plan.sampled]  # same clients, staleness 0
    assert out.metrics['async']['staleness_max'] == 0
    assert out.metrics['simulated_time'] == r * 1.0  # one median latency per round
    np.testing.assert_allclose(async_state.global_model_weights.trainable[0],
                               sync_state.global_model_weights.trainable[0], rtol=1e-5, atol=1e-6)
    train_a, train_s = out.metrics['client_work']['train'], sync.metrics['client_work']['train']
    assert train_a['num_examples'] == train_s['num_examples']
    np.testing.assert_allclose(train_a['loss'], train_s['loss'], rtol=1e-5)


# Exact resume, clients in flight included (no kill: checkpoint, new runner, restore).

def test_resumed_from_a_checkpoint_it_continues_bit_for_bit(tmp_path):
  task = tasks.create_task('seed_linear', {'num_clients': 10, 'iid': False, 'seed': 2})
  task = task.with_train_spec(batch_size=7, num_epochs=1, shuffle_buffer_size=100)
  settings = asynchronous.AsyncSettings(concurrency=6, buffer_size=2, latency_sigma=0.8,
                                        latency_jitter=0.3, staleness='inverse_sqrt')
  process = fedavg.build_fedavg(task, algorithms.create_optimizer('sgd', 0.1),
                                algorithms.create_optimizer('sgd', 1.0))
  initial = process.set_model_weights(process.initialize(), plan_lib.initial_model_weights(task, 1))

  def run(rounds, state, first, last):
    metrics = []
    for r in range(first, last + 1):
      out = rounds.next(state, _plan(r))
      state = out.state
      metrics.append(loop.round_metrics(out.metrics))
    return state, metrics

  straight = _runner(task, settings, seed=1, lr=0.1, server_lr=1.0)
  state_a, metrics_a = run(straight, initial, 1, 8)
  first = _runner(task, settings, seed=1, lr=0.1, server_lr=1.0)
  state_b, metrics_b = run(first, initial, 1, 4)
  assert first.in_flight and any(t.result is not None for t in first.in_flight)
  checkpoint.save_checkpoint(str(tmp_path), 4, state_b, extra=first.checkpoint_parts())
  restored = checkpoint.read_checkpoint(str(tmp_path), 4, process.initialize())
  second = _runner(task, settings, seed=1, lr=0.1, server_lr=1.0)
  second.restore_parts(restored.extra)
  state_b, more = run(second, restored.state, 5, 8)
  metrics_b += more
  assert max(m['async/staleness_max'] for m in metrics_a) > 0  # it is asynchronous
  assert metrics_a == metrics_b
  for a, b in zip(process.get_model_weights(state_a).trainable,
                  process.get_model_weights(state_b).trainable):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match='holds no asynchronous queue'):
    second.restore_parts({})
