"""ε of DP-FedAvg: equal to dp-accounting on independently written events, monotone, calibrated,
valid for the replace-one sensitivity 2C, and matching the published tables."""

import math

import dp_accounting
import numpy as np
import pytest
from scipy import stats

from tff_lab.privacy import accounting


def _direct_fixed(z, m, n, rounds, delta):
  """Fixed-size sampling: replace-one relation, sensitivity 2C, so noise multiplier z/2."""
  acc = dp_accounting.rdp.RdpAccountant(
      neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
  acc.compose(dp_accounting.SampledWithoutReplacementDpEvent(
      n, m, dp_accounting.GaussianDpEvent(z / 2)), rounds)
  return acc.get_epsilon(delta)


def _direct_poisson(z, m, n, rounds, delta, pld=False):
  acc = dp_accounting.pld.PLDAccountant() if pld else dp_accounting.rdp.RdpAccountant()
  acc.compose(dp_accounting.PoissonSampledDpEvent(m / n, dp_accounting.GaussianDpEvent(z)), rounds)
  return acc.get_epsilon(delta)


@pytest.mark.parametrize('z,m,n,rounds', [(1.0, 10, 100, 60), (0.7, 5, 20, 1)])
def test_epsilon_equals_direct_dp_accounting(z, m, n, rounds):
  delta = 1e-5
  assert accounting.epsilon(z, m, n, rounds, delta) == pytest.approx(
      _direct_fixed(z, m, n, rounds, delta), rel=1e-12)
  assert accounting.epsilon(z, m, n, rounds, delta, sampling='poisson') == pytest.approx(
      _direct_poisson(z, m, n, rounds, delta), rel=1e-12)


def test_pld_equals_direct_dp_accounting_and_is_tighter_than_rdp():
  z, m, n, rounds, delta = 1.0, 10, 1000, 100, 1e-5
  pld = accounting.epsilon(z, m, n, rounds, delta, accountant='pld', sampling='poisson')
  assert pld == pytest.approx(_direct_poisson(z, m, n, rounds, delta, pld=True), rel=1e-9)
  assert pld < accounting.epsilon(z, m, n, rounds, delta, sampling='poisson')


def test_tracker_is_epsilon_every_round_and_cheap():
  z, m, n, delta = 1.0, 10, 100, 1e-5
  tracker = accounting.EpsilonTracker(z, m, n, delta)
  assert tracker.epsilon_after(0) == 0.0
  for rounds in (1, 7, 60):
    assert tracker.epsilon_after(rounds) == pytest.approx(_direct_fixed(z, m, n, rounds, delta),
                                                          rel=1e-12)
  eps = [tracker.epsilon_after(t) for t in range(1, 301)]  # one per round, as the loop calls it
  assert all(np.diff(eps) > 0)


def test_epsilon_grows_with_sampling_rate_and_shrinks_with_noise():
  delta = 1e-5
  base = accounting.epsilon(1.0, 20, 200, 50, delta)
  assert accounting.epsilon(1.0, 40, 200, 50, delta) > base
  assert accounting.epsilon(1.5, 20, 200, 50, delta) < base


def test_fixed_sampling_is_valid_for_replace_one_sensitivity_2c():
  """With m = N the round is a plain Gaussian mechanism; its exact ε (Balle & Wang, ICML 2018)
  for sensitivity 2C is below our RDP bound, and above the RDP bound for sensitivity C."""
  z, n, delta = 2.0, 10, 1e-5

  def exact_delta(eps, sensitivity_over_std):
    a = sensitivity_over_std
    return stats.norm.cdf(a / 2 - eps / a) - math.exp(eps) * stats.norm.cdf(-a / 2 - eps / a)

  ours = accounting.epsilon(z, n, n, 1, delta)
  assert exact_delta(ours, 2 / z) <= delta  # our ε holds for a 2C change...
  undoubled = dp_accounting.rdp.RdpAccountant().compose(dp_accounting.GaussianDpEvent(z))
  assert exact_delta(undoubled.get_epsilon(delta), 2 / z) > delta  # ...accounting C would not.


@pytest.mark.parametrize('sampling', ['poisson', 'fixed'])
def test_noise_for_epsilon_round_trip(sampling):
  m, n, rounds, delta = 10, 100, 60, 1e-5
  z = accounting.noise_multiplier_for_epsilon(5.0, m, n, rounds, delta, sampling=sampling)
  eps = accounting.epsilon(z, m, n, rounds, delta, sampling=sampling)
  assert eps <= 5.0
  assert eps == pytest.approx(5.0, rel=1e-3)


# McMahan et al. 2018, Table 1 (Poisson sampling, δ = K^-1.1), as recomputed with the 2020
# RDP→(ε, δ) conversion (baselines.md §6.1). Different RDP order grids move the third decimal.
@pytest.mark.parametrize('population,clients,z,rounds,expected', [
    (10**5, 10**2, 1.0, 10**3, 0.774),
    (10**6, 10**4, 1.0, 10**2, 1.685),
    (10**6, 10**3, 3.0, 10**4, 0.200),
    (10**9, 10**3, 1.0, 10**5, 0.712),
])
def test_mcmahan_2018_table_1(population, clients, z, rounds, expected):
  eps = accounting.epsilon(z, clients, population, rounds, accounting.default_delta(population),
                           sampling='poisson')
  assert eps == pytest.approx(expected, abs=0.005)


# Andrew et al. 2021, Table 1: z for ε = 5 at δ = N^-1.1, N = 10^6, fixed-size sampling.
@pytest.mark.parametrize('rounds,clients,z', [(1500, 513, 0.513), (1200, 510, 0.510)])
def test_andrew_2021_table_1_takes_replace_one_sensitivity_as_c(rounds, clients, z):
  population = 10**6
  delta = accounting.default_delta(population)
  # Reproduced only with z doubled, i.e. with noise z·C against a sensitivity of C, not 2C.
  assert accounting.epsilon(2 * z, clients, population, rounds, delta) == pytest.approx(5.0,
                                                                                       abs=0.1)
  assert accounting.epsilon(z, clients, population, rounds, delta) > 50


@pytest.mark.parametrize('kwargs,match', [
    (dict(noise_multiplier=0.0), 'noise_multiplier'),
    (dict(noise_multiplier=-1.0), 'noise_multiplier'),
    (dict(clients_per_round=101), 'clients_per_round'),
    (dict(clients_per_round=0), 'clients_per_round'),
    (dict(population=0), 'population'),
    (dict(delta=0.0), 'delta'),
    (dict(delta=1.0), 'delta'),
    (dict(rounds=-1), 'rounds'),
    (dict(accountant='pld'), 'pld'),
    (dict(sampling='shuffle'), 'sampling'),
])
def test_bad_arguments_are_refused(kwargs, match):
  args = dict(noise_multiplier=1.0, clients_per_round=10, population=100, rounds=10, delta=1e-5)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    accounting.epsilon(**args)


@pytest.mark.parametrize('sampling,adjacency,detail', [
    ('fixed', 'replace-one', 'fixed-size sampling without replacement, 10 of 100'),
    ('poisson', 'add/remove-one', 'Poisson sampling, each of 100 clients independently with '
                                  'rate q=0.1'),
])
def test_accounting_description_names_adjacency_sampling_accountant_and_delta(
    sampling, adjacency, detail):
  conv = accounting.Accounting(sampling, 'rdp', 1e-5, 10, 100)
  assert conv.adjacency == adjacency
  text = accounting.describe(sampling, 'rdp', 1e-5, 10, 100)
  assert text == conv.text()
  for part in (f'{adjacency} adjacency', detail, 'RDP accountant', 'delta=1e-05'):
    assert part in text
  as_dict = conv.to_dict()
  assert as_dict['adjacency'] == adjacency and as_dict['sampling'] == sampling
  assert as_dict['accountant'] == 'rdp' and as_dict['delta'] == 1e-5
  assert as_dict['description'] == text


def test_accounting_description_refuses_pld_for_fixed_sampling():
  with pytest.raises(ValueError, match='pld'):
    accounting.Accounting('fixed', 'pld', 1e-5, 10, 100)
  with pytest.raises(ValueError, match='delta'):
    accounting.Accounting('poisson', 'pld', 1.5, 10, 100)


def test_mechanism_event_is_round_event():
  mech = accounting.Mechanism(1.1, 10, 100, 'poisson')
  assert mech.event() == accounting.round_event(1.1, 10, 100, 'poisson')
  assert mech.to_dict() == dict(noise_multiplier=1.1, clients_per_round=10, population=100,
                                sampling='poisson')
  with pytest.raises(ValueError, match='noise_multiplier'):
    accounting.Mechanism(0.0, 10, 100)


def test_conventions_are_each_accountant_and_pld_is_tighter_under_poisson():
  z, m, n, rounds, delta = 1.0, 10, 1000, 50, 1e-5
  got = accounting.epsilon_conventions(z, m, n, rounds, delta)
  assert [(c.sampling, c.accountant) for c, _ in got] == [
      ('fixed', 'rdp'), ('poisson', 'rdp'), ('poisson', 'pld')]
  (_, fixed), (_, rdp), (_, pld) = got
  assert fixed == pytest.approx(_direct_fixed(z, m, n, rounds, delta), rel=1e-12)
  assert rdp == pytest.approx(_direct_poisson(z, m, n, rounds, delta), rel=1e-12)
  assert pld == pytest.approx(_direct_poisson(z, m, n, rounds, delta, pld=True), rel=1e-9)
  assert pld < rdp < fixed


def test_pld_calibration_round_trip_and_below_rdp():
  target, m, n, rounds, delta = 0.5, 10, 1000, 5, 1e-5
  z_pld = accounting.noise_multiplier_for_epsilon(target, m, n, rounds, delta, accountant='pld',
                                                  sampling='poisson')
  z_rdp = accounting.noise_multiplier_for_epsilon(target, m, n, rounds, delta, sampling='poisson')
  eps = _direct_poisson(z_pld, m, n, rounds, delta, pld=True)
  assert eps <= target + 1e-9
  assert eps == pytest.approx(target, rel=1e-3)
  assert z_pld < z_rdp


@pytest.mark.parametrize('eps,delta,population,expected', [
    (1.0, 1e-5, 100, []),
    (1.0, 0.05, 20, ['1/N']),  # δ = 1/N exactly
    (1.0, 20**-1.1, 20, ['above 0.01']),  # digits' default δ: below 1/N, still large
    (12.0, 1e-5, 100, ['epsilon=12']),
    (12.0, 0.5, 10, ['1/N', 'epsilon=12']),
])
def test_dp_warnings(eps, delta, population, expected):
  got = accounting.dp_warnings(eps, delta, population)
  assert len(got) == len(expected)
  for warning, part in zip(got, expected):
    assert part in warning and '\n' not in warning
