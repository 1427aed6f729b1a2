"""Privacy accounting for DP-FedAvg: ε at a given δ after T rounds of the sampled Gaussian mechanism.

McMahan, Ramage, Talwar, Zhang, "Learning Differentially Private Recurrent Language Models",
ICLR 2018 (arXiv:1710.06963); Andrew, Thakkar, McMahan, Ramaswamy, "Differentially Private
Learning with Adaptive Clipping", NeurIPS 2021 (arXiv:1905.03871). The accountants are
dp-accounting's: Rényi DP (Mironov, CSF 2017, arXiv:1702.07476) and privacy loss distributions.

Each DP round clips every sampled client's update to L2 norm C, sums the clipped updates, adds
N(0, (zC)² I) and divides by the number of clients per round (`tff_lab.aggregators.dp`): one
sampled Gaussian mechanism with noise multiplier z. With adaptive clipping z is TFF's *total*
noise multiplier (split between the update noise and the clipped-count noise so that the two
compose to z), so the same accounting applies.

Sampling schemes (`sampling=`):

* `'fixed'` is what tff_lab's training loop does (`training.loop.sample_clients`): exactly m of
  the N clients, uniformly without replacement. dp-accounting's bound for it (Wang, Balle,
  Kasiviswanathan, "Subsampled Rényi Differential Privacy and Analytical Moments Accountant",
  AISTATS 2019, arXiv:1808.00087, Thm. 27) holds for the *replace-one* neighbouring relation (N is
  public). Replacing one client changes the clipped sum by up to ‖Δ − Δ'‖ ≤ 2C, so relative to
  that sensitivity the noise multiplier is z/2: each round is
  `SampledWithoutReplacementDpEvent(N, m, GaussianDpEvent(z / 2))`.
* `'poisson'`: each client joins independently with probability q = m/N, the scheme of
  McMahan et al.'s analysis (add/remove-one relation, sensitivity C):
  `PoissonSampledDpEvent(q, GaussianDpEvent(z))`. The loop does not sample this way; use it to
  compare with papers.

dp-accounting 0.4.3's PLD accountant supports Poisson sampling only, so `accountant='pld'` needs
`sampling='poisson'`; the per-round ε of an experiment comes from RDP.

Andrew et al.'s Table 1 (fixed-size sampling, ε = 5 at δ = N^-1.1) is reproduced by `'fixed'`
only with z doubled: that table takes the replace-one sensitivity to be C, not 2C
(tests/privacy/test_accounting.py).
"""

import math
import numbers

import dp_accounting

SAMPLING = ('fixed', 'poisson')
ACCOUNTANTS = ('rdp', 'pld')
# calibrate_dp_mechanism searches upwards from here; no useful mechanism needs less noise.
_MIN_NOISE_MULTIPLIER = 1e-3


def default_delta(population: int) -> float:
  """δ = N^-1.1, McMahan et al.'s choice: below 1/N, which rules out publishing one client's
  data outright."""
  return float(population) ** -1.1


def _check_mechanism(clients_per_round: int, population: int, sampling: str,
                     accountant: str) -> None:
  if sampling not in SAMPLING:
    raise ValueError(f'sampling must be one of {list(SAMPLING)}; got {sampling!r}')
  if accountant not in ACCOUNTANTS:
    raise ValueError(f'accountant must be one of {list(ACCOUNTANTS)}; got {accountant!r}')
  if accountant == 'pld' and sampling != 'poisson':
    raise ValueError("accountant='pld' supports sampling='poisson' only (dp-accounting 0.4.3 has "
                     "no PLD for sampling without replacement); use accountant='rdp'")
  if not isinstance(population, numbers.Integral) or population < 1:
    raise ValueError(f'population must be a positive integer; got {population!r}')
  if (not isinstance(clients_per_round, numbers.Integral)
      or not 1 <= clients_per_round <= population):
    raise ValueError(f'clients_per_round must be an integer in [1, population={population}]; '
                     f'got {clients_per_round!r}')


def _check_delta(delta: float) -> None:
  if not 0 < delta < 1:
    raise ValueError(f'delta must be in (0, 1); got {delta}')


def round_event(noise_multiplier: float, clients_per_round: int, population: int,
                sampling: str = 'fixed') -> dp_accounting.DpEvent:
  """The DpEvent of one DP-FedAvg round (see the module docstring for the two schemes)."""
  if not math.isfinite(noise_multiplier) or noise_multiplier <= 0:
    raise ValueError(f'noise_multiplier must be positive and finite; got {noise_multiplier}')
  _check_mechanism(clients_per_round, population, sampling, 'rdp')
  if sampling == 'fixed':
    return dp_accounting.SampledWithoutReplacementDpEvent(
        population, clients_per_round, dp_accounting.GaussianDpEvent(noise_multiplier / 2))
  return dp_accounting.PoissonSampledDpEvent(
      clients_per_round / population, dp_accounting.GaussianDpEvent(noise_multiplier))


def make_accountant(sampling: str = 'fixed', accountant: str = 'rdp'
                    ) -> dp_accounting.PrivacyAccountant:
  """A fresh dp-accounting accountant with the neighbouring relation `sampling` requires."""
  if accountant == 'pld':
    return dp_accounting.pld.PLDAccountant(dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE)
  relation = (dp_accounting.NeighboringRelation.REPLACE_ONE if sampling == 'fixed'
              else dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE)
  return dp_accounting.rdp.RdpAccountant(neighboring_relation=relation)


class EpsilonTracker:
  """ε after each round of one experiment; cheap enough to call every round.

  RDP composes additively, so the RDP curve of one round is computed once (about a second for
  fixed-size sampling) and ε after T rounds is the RDP→(ε, δ) conversion of T times it
  (microseconds). PLD results are computed by dp-accounting per T and cached.
  """

  def __init__(self, noise_multiplier: float, clients_per_round: int, population: int,
               delta: float, sampling: str = 'fixed', accountant: str = 'rdp'):
    """Describes the mechanism; see `epsilon` for the arguments."""
    _check_mechanism(clients_per_round, population, sampling, accountant)
    _check_delta(delta)
    self.delta = delta
    self._event = round_event(noise_multiplier, clients_per_round, population, sampling)
    self._sampling = sampling
    self._accountant = accountant
    self._cache: dict[int, float] = {0: 0.0}
    if accountant == 'rdp':
      one_round = make_accountant(sampling, accountant).compose(self._event)
      self._orders, self._rdp_per_round = one_round.orders, one_round.rdp

  def epsilon_after(self, rounds: int) -> float:
    """ε at `self.delta` after `rounds` rounds (0 rounds: 0)."""
    if not isinstance(rounds, numbers.Integral) or rounds < 0:
      raise ValueError(f'rounds must be a non-negative integer; got {rounds!r}')
    if rounds not in self._cache:
      if self._accountant == 'rdp':
        eps, _ = dp_accounting.rdp.compute_epsilon(
            self._orders, rounds * self._rdp_per_round, self.delta)
      else:
        eps = make_accountant(self._sampling, 'pld').compose(
            self._event, rounds).get_epsilon(self.delta)
      self._cache[rounds] = float(eps)
    return self._cache[rounds]


def epsilon(noise_multiplier: float, clients_per_round: int, population: int, rounds: int,
            delta: float, accountant: str = 'rdp', sampling: str = 'fixed') -> float:
  """ε at `delta` after `rounds` rounds of DP-FedAvg.

  Args:
    noise_multiplier: z, the Gaussian noise std divided by the clip norm C (TFF's total noise
      multiplier with adaptive clipping).
    clients_per_round: m, clients sampled per round.
    population: N, clients sampled from.
    rounds: T, rounds run.
    delta: δ of the (ε, δ) guarantee; `default_delta(N)` is N^-1.1.
    accountant: 'rdp' or 'pld' (Poisson sampling only).
    sampling: 'fixed' (m of N without replacement, what the loop does) or 'poisson' (rate m/N).
  """
  return EpsilonTracker(noise_multiplier, clients_per_round, population, delta, sampling,
                        accountant).epsilon_after(rounds)


def noise_multiplier_for_epsilon(target_epsilon: float, clients_per_round: int, population: int,
                                 rounds: int, delta: float, accountant: str = 'rdp',
                                 sampling: str = 'fixed') -> float:
  """The smallest noise multiplier z whose ε after `rounds` rounds is at most `target_epsilon`.

  Calibrated with dp-accounting's `calibrate_dp_mechanism` (Brent's method on z, to 1e-6, and
  never on the unsafe side of the target). Arguments as in `epsilon`.
  """
  _check_mechanism(clients_per_round, population, sampling, accountant)
  _check_delta(delta)
  if not target_epsilon > 0:
    raise ValueError(f'target_epsilon must be positive; got {target_epsilon}')
  if not isinstance(rounds, numbers.Integral) or rounds < 1:
    raise ValueError(f'rounds must be a positive integer; got {rounds!r}')
  if epsilon(_MIN_NOISE_MULTIPLIER, clients_per_round, population, rounds, delta, accountant,
             sampling) <= target_epsilon:
    raise ValueError(f'target_epsilon={target_epsilon} is met even with noise_multiplier='
                     f'{_MIN_NOISE_MULTIPLIER}; no calibration needed')
  return float(dp_accounting.calibrate_dp_mechanism(
      lambda: make_accountant(sampling, accountant),
      lambda z: dp_accounting.SelfComposedDpEvent(
          round_event(z, clients_per_round, population, sampling), rounds),
      target_epsilon, delta,
      bracket_interval=dp_accounting.LowerEndpointAndGuess(_MIN_NOISE_MULTIPLIER, 1.0)))
