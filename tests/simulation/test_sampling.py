"""Client samplers: fixed-size sampling bit-identical to the historical one for the public seed;
Poisson inclusion at rate q; both pure functions of (entropy, round)."""

import math

import numpy as np
import pytest

from tff_lab.simulation import sampling


@pytest.mark.parametrize('seed,round_num,n,m', [(0, 1, 20, 5), (123, 7, 100, 10), (9, 3, 8, 8)])
def test_fixed_size_equals_the_historical_public_seed_sampling(seed, round_num, n, m):
  # The expression tff_lab has sampled with since its first release (training.loop.sample_clients).
  historical = np.random.default_rng([seed, round_num]).choice(n, size=m, replace=False)
  assert sampling.fixed_size_sample(n, m, seed, round_num) == historical.tolist()


def test_the_planners_sample_clients_keeps_the_historical_stream():
  try:
    from tff_lab.simulation.plan import sample_clients  # pylint: disable=g-import-not-at-top
  except ImportError:
    from tff_lab.training.loop import sample_clients  # pylint: disable=g-import-not-at-top
  ids = [f'client_{i:03d}' for i in range(50)]
  for round_num in range(1, 6):
    historical = np.random.default_rng([42, round_num]).choice(50, size=7, replace=False)
    assert sample_clients(ids, 7, 42, round_num) == [ids[i] for i in historical]


def test_fixed_size_is_distinct_and_a_function_of_entropy_and_round():
  a = sampling.fixed_size_sample(100, 10, 5, 1)
  assert len(set(a)) == 10 and all(0 <= i < 100 for i in a)
  assert sampling.fixed_size_sample(100, 10, 5, 1) == a
  assert sampling.fixed_size_sample(100, 10, 5, 2) != a
  assert sampling.fixed_size_sample(100, 10, 2**255 + 5, 1) != a  # 256-bit entropy is accepted


def test_poisson_inclusion_rate_matches_q():
  n, q, rounds = 200, 0.05, 400
  included = np.zeros(n)
  sizes = []
  for round_num in range(1, rounds + 1):
    sample = sampling.poisson_sample(n, q, 17, round_num)
    assert sample == sorted(set(sample))
    included[sample] += 1
    sizes.append(len(sample))
  # Every inclusion is Bernoulli(q): the total is Binomial(n·rounds, q), each client's count
  # Binomial(rounds, q). 5 standard deviations: a false failure has probability < 1e-6 per check.
  total_std = math.sqrt(n * rounds * q * (1 - q))
  assert abs(included.sum() - n * rounds * q) < 5 * total_std
  client_std = math.sqrt(rounds * q * (1 - q))
  assert np.all(np.abs(included - rounds * q) < 5 * client_std + 1)
  assert np.var(sizes) == pytest.approx(n * q * (1 - q), rel=0.3)  # sizes vary as a binomial


def test_poisson_is_reproducible_and_can_be_empty():
  assert sampling.poisson_sample(50, 0.2, 3, 4) == sampling.poisson_sample(50, 0.2, 3, 4)
  assert sampling.poisson_sample(50, 0.2, 3, 4) != sampling.poisson_sample(50, 0.2, 3, 5)
  assert sampling.poisson_sample(10, 1.0, 3, 4) == list(range(10))
  assert any(not sampling.poisson_sample(5, 0.01, 3, r) for r in range(1, 20))


@pytest.mark.parametrize('fn,args,match', [
    (sampling.fixed_size_sample, (10, 11, 0, 1), 'num_sampled'),
    (sampling.fixed_size_sample, (10, 0, 0, 1), 'num_sampled'),
    (sampling.fixed_size_sample, (0, 1, 0, 1), 'num_total'),
    (sampling.fixed_size_sample, (10, 2, -1, 1), 'entropy'),
    (sampling.fixed_size_sample, (10, 2, 0, -1), 'round_num'),
    (sampling.poisson_sample, (10, 0.0, 0, 1), 'rate'),
    (sampling.poisson_sample, (10, 1.5, 0, 1), 'rate'),
    (sampling.poisson_sample, (0, 0.5, 0, 1), 'num_total'),
    (sampling.poisson_sample, (10, 0.5, 1.5, 1), 'entropy'),
])
def test_bad_arguments_are_refused(fn, args, match):
  with pytest.raises(ValueError, match=match):
    fn(*args)
