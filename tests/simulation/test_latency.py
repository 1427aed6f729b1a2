"""Simulated latencies: the seeded models' distributions, the CSV file, the synchronous clock."""

import collections
import math
import types

import numpy as np
import pytest
import tensorflow_federated as tff

from tff_lab.simulation import latency
from tff_lab.training import checkpoint

IDS = [f'c{i:04d}' for i in range(4000)]


def test_lognormal_medians_have_the_median_and_spread_asked_for():
  medians = latency.client_medians('lognormal', IDS, seed=3, median=2.0, sigma=0.7)
  assert list(medians) == IDS
  logs = np.log(np.array(list(medians.values())))
  # log median(i) ~ N(log 2, 0.7²): 4000 draws put the sample moments within a few SE.
  assert abs(np.mean(logs) - math.log(2.0)) < 4 * 0.7 / math.sqrt(len(IDS))
  assert abs(np.std(logs) - 0.7) < 0.05
  assert abs(np.median(list(medians.values())) - 2.0) < 0.1


def test_zero_spread_gives_every_client_exactly_the_median():
  medians = latency.client_medians('lognormal', IDS[:50], seed=3, median=1.5, sigma=0.0)
  assert set(medians.values()) == {1.5}
  model = latency.LatencyModel(medians, jitter=0.0, seed=3)
  assert {model.task_latency(c, w, p) for c in IDS[:5] for w in (1, 7) for p in (0, 3)} == {1.5}


def test_medians_are_a_function_of_the_seed():
  a = latency.client_medians('lognormal', IDS[:100], seed=1)
  assert a == latency.client_medians('lognormal', IDS[:100], seed=1)
  assert a != latency.client_medians('lognormal', IDS[:100], seed=2)


def test_heavy_tail_slows_a_fraction_of_clients_by_a_pareto_factor():
  base = latency.client_medians('lognormal', IDS, seed=4, sigma=0.3)
  heavy = latency.client_medians('heavy_tail', IDS, seed=4, sigma=0.3, tail_fraction=0.25,
                                 tail_alpha=1.2)
  ratio = np.array([heavy[c] / base[c] for c in IDS])  # the same lognormal draws underneath
  assert np.all(ratio >= 1.0)
  slowed = ratio[ratio > 1.0]
  assert abs(len(slowed) / len(IDS) - 0.25) < 0.03
  # Pareto(α): P[x > s] = s^-α, for s = 2 and 4.
  for s in (2.0, 4.0):
    assert abs(np.mean(slowed > s) - s ** -1.2) < 0.04


def test_task_jitter_is_lognormal_around_the_client_median_and_pure():
  model = latency.LatencyModel(collections.OrderedDict(a=3.0), jitter=0.2, seed=9)
  draws = np.array([model.task_latency('a', w, p) for w in range(1, 201) for p in range(10)])
  logs = np.log(draws / 3.0)
  assert abs(np.mean(logs)) < 4 * 0.2 / math.sqrt(len(draws))
  assert abs(np.std(logs) - 0.2) < 0.02
  assert model.task_latency('a', 5, 2) == model.task_latency('a', 5, 2)
  assert model.task_latency('a', 5, 2) != model.task_latency('a', 5, 3)


def _plan(round_num, sampled, reporting):
  return types.SimpleNamespace(round_num=round_num, sampled=tuple(sampled),
                               client_ids=tuple(reporting))


def test_a_synchronous_round_lasts_as_long_as_its_slowest_reporting_client():
  model = latency.LatencyModel(collections.OrderedDict(a=1.0, b=5.0, c=2.0), 0.0, seed=0)
  assert model.round_duration(_plan(1, 'abc', 'abc')) == 5.0
  assert model.round_duration(_plan(1, 'abc', 'ac')) == 2.0  # b dropped out: never reports
  assert model.round_duration(_plan(1, 'abc', '')) == 0.0
  jittered = latency.LatencyModel(model.medians, 0.3, seed=0)
  assert jittered.round_duration(_plan(4, 'cab', 'cab')) == max(
      jittered.task_latency('c', 4, 0), jittered.task_latency('a', 4, 1),
      jittered.task_latency('b', 4, 2))


def test_a_latency_file_gives_latencies_or_speeds(tmp_path):
  path = tmp_path / 'lat.csv'
  path.write_text('client_id,latency\nb,2.5\na,0.5\n\n')
  assert latency.read_latency_file(str(path)) == collections.OrderedDict(b=2.5, a=0.5)
  path.write_text('client_id,speed\na,4\nb,0.5\n')
  medians = latency.client_medians('file', ['a', 'b'], seed=0, latency_file=str(path))
  assert medians == collections.OrderedDict(a=0.25, b=2.0)


@pytest.mark.parametrize('content, message', [
    ('', 'is empty'),
    ('client,latency\na,1\n', 'the header must be client_id,latency or client_id,speed'),
    ('client_id,latency,extra\na,1,2\n', 'the header must be'),
    ('client_id,latency\n', 'has a header but no client rows'),
    ('client_id,latency\na\n', 'line 2: expected 2 fields'),
    ('client_id,latency\na,fast\n', "line 2: latency 'fast' is not a number"),
    ('client_id,speed\na,1\nb,0\n', 'line 3: speed must be a positive finite number'),
    ('client_id,latency\na,nan\n', 'must be a positive finite number'),
    ('client_id,latency\na,1\na,2\n', "line 3: client 'a' is listed twice"),
    (b'client_id,latency\n\xff\xfe,1\n', 'does not parse as CSV'),
])
def test_a_bad_latency_file_is_one_line(tmp_path, content, message):
  path = tmp_path / 'lat.csv'
  if isinstance(content, bytes):
    path.write_bytes(content)
  else:
    path.write_text(content)
  with pytest.raises(latency.LatencyFileError) as e:
    latency.read_latency_file(str(path))
  assert message in str(e.value) and '\n' not in str(e.value)
  assert str(path) in str(e.value)


def test_a_missing_latency_file_is_one_line(tmp_path):
  with pytest.raises(latency.LatencyFileError, match='cannot be read'):
    latency.read_latency_file(str(tmp_path / 'nope.csv'))


def test_a_latency_file_must_name_exactly_the_tasks_clients(tmp_path):
  path = tmp_path / 'lat.csv'
  path.write_text('client_id,latency\na,1\nzz,2\n')
  with pytest.raises(latency.LatencyFileError, match="names 1 client.* not have: 'zz'"):
    latency.client_medians('file', ['a', 'b'], 0, latency_file=str(path))
  path.write_text('client_id,latency\na,1\n')
  with pytest.raises(latency.LatencyFileError, match="no latency for 1 of the task's 2 .*'b'"):
    latency.client_medians('file', ['a', 'b'], 0, latency_file=str(path))


class _FakeRunner:
  dp_mechanism = 'mechanism'

  def __init__(self):
    self.closed = False

  def next(self, state, plan):
    del plan
    return tff.learning.templates.LearningProcessOutput(
        state + 1, collections.OrderedDict(client_work=collections.OrderedDict(x=1)))

  def close(self):
    self.closed = True


def test_the_clocked_runner_adds_simulated_time_and_checkpoints_its_clock(tmp_path):
  model = latency.LatencyModel(collections.OrderedDict(a=1.0, b=3.0, c=0.5), 0.1, seed=2)
  runner = latency.ClockedRunner(_FakeRunner(), model)
  assert runner.dp_mechanism == 'mechanism'  # forwarded, so the loop finds the DP mechanism
  plans = [_plan(r, s, s) for r, s in ((1, 'ab'), (2, 'c'), (3, 'ca'))]
  state, times = 0, []
  for plan in plans:
    output = runner.next(state, plan)
    state = output.state
    times.append(output.metrics['simulated_time'])
    assert output.metrics['client_work'] == {'x': 1}
  expected = np.cumsum([max(model.task_latency(c, p.round_num, i) for i, c in enumerate(p.sampled))
                        for p in plans])
  np.testing.assert_array_equal(times, expected)
  checkpoint.save_checkpoint(str(tmp_path), 3, [np.zeros(1)], extra=runner.checkpoint_parts())
  extra = checkpoint.read_checkpoint(str(tmp_path), 3, [np.zeros(1)]).extra
  resumed = latency.ClockedRunner(_FakeRunner(), model)
  resumed.restore_parts(extra)
  assert resumed.clock == runner.clock  # exactly: Python floats round-trip through the checkpoint
  resumed.restore_parts(None)
  assert resumed.clock == 0.0
  runner.close()
  assert runner._runner.closed  # pylint: disable=protected-access
