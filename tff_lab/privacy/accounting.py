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
  `PoissonSampledDpEvent(q, GaussianDpEvent(z))`. The loop samples this way only with
  `--client_sampling=poisson`; it is also the figure of papers that assume Poisson sampling.

dp-accounting 0.4.3's PLD accountant supports Poisson sampling only, so `accountant='pld'` needs
`sampling='poisson'`; the per-round ε of an experiment comes from RDP. Where both apply (Poisson
sampling), PLD is the tighter, `epsilon_conventions` reports both.

An ε means nothing without its convention, so every figure tff_lab prints or writes comes with an
`Accounting` (`describe(...)`, or `Accounting.to_dict()` for summary.json): the adjacency (which
datasets are neighbours), the sampling scheme, the accountant and δ. A Poisson ε applied to a run
that sampled a fixed number of clients, or an add/remove-one ε read as a replace-one guarantee,
overstates the privacy; the description says which one a figure is. `dp_warnings` returns the
warnings a run should log about its (ε, δ).

Andrew et al.'s Table 1 (fixed-size sampling, ε = 5 at δ = N^-1.1) is reproduced by `'fixed'`
only with z doubled: that table takes the replace-one sensitivity to be C, not 2C
(tests/privacy/test_accounting.py).
"""

import dataclasses
import math
import numbers
from typing import Any

import dp_accounting

SAMPLING = ('fixed', 'poisson')
ACCOUNTANTS = ('rdp', 'pld')
# The neighbouring relation each sampling scheme's bound holds for (module docstring).
ADJACENCY = {'fixed': 'replace-one', 'poisson': 'add/remove-one'}
# dp_warnings: above this ε the guarantee says little (e^10 ≈ 22,000 as a likelihood ratio).
WARN_EPSILON = 10.0
# dp_warnings: above this δ the guarantee may fail outright with a non-negligible probability.
WARN_DELTA = 1e-2
# calibrate_dp_mechanism searches upwards from here; no useful mechanism needs less noise.
_MIN_NOISE_MULTIPLIER = 1e-3
# The same for PLD, whose discretisation at small z is too large to compute (see the calibration).
_MIN_PLD_NOISE_MULTIPLIER = 0.05


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
  if epsilon(_MIN_NOISE_MULTIPLIER, clients_per_round, population, rounds, delta, 'rdp',
             sampling) <= target_epsilon:
    raise ValueError(f'target_epsilon={target_epsilon} is met even with noise_multiplier='
                     f'{_MIN_NOISE_MULTIPLIER}; no calibration needed')

  def calibrate(name, bracket):
    return float(dp_accounting.calibrate_dp_mechanism(
        lambda: make_accountant(sampling, name),
        lambda z: dp_accounting.SelfComposedDpEvent(
            round_event(z, clients_per_round, population, sampling), rounds),
        target_epsilon, delta, bracket_interval=bracket))

  z_rdp = calibrate('rdp', dp_accounting.LowerEndpointAndGuess(_MIN_NOISE_MULTIPLIER, 1.0))
  if accountant == 'rdp':
    return z_rdp
  # PLD's discretisation needs memory and time that grow fast as z shrinks (38 GB at z=1e-3),
  # so bracket PLD's z below RDP's (PLD is the tighter bound), halving down to a floor.
  lower = z_rdp / 2
  while lower > _MIN_PLD_NOISE_MULTIPLIER and epsilon(
      lower, clients_per_round, population, rounds, delta, 'pld', sampling) <= target_epsilon:
    lower /= 2
  if lower <= _MIN_PLD_NOISE_MULTIPLIER:
    raise ValueError(f'target_epsilon={target_epsilon} is met by PLD even with noise_multiplier='
                     f'{_MIN_PLD_NOISE_MULTIPLIER}; no calibration needed')
  upper = z_rdp
  while epsilon(upper, clients_per_round, population, rounds, delta, 'pld',
                sampling) > target_epsilon:  # PLD's pessimistic rounding above RDP: rare
    upper *= 2
  return calibrate('pld', dp_accounting.ExplicitBracketInterval(lower, upper))


@dataclasses.dataclass(frozen=True)
class Mechanism:
  """One DP-FedAvg round as released: noise multiplier z, m of N clients, the sampling scheme."""
  noise_multiplier: float
  clients_per_round: int
  population: int
  sampling: str = 'fixed'

  def __post_init__(self):
    round_event(self.noise_multiplier, self.clients_per_round, self.population, self.sampling)

  def event(self) -> dp_accounting.DpEvent:
    """The round's DpEvent (`round_event`)."""
    return round_event(self.noise_multiplier, self.clients_per_round, self.population,
                       self.sampling)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Accounting:
  """The convention of an ε: adjacency, sampling scheme, accountant and δ.

  Attributes:
    sampling: 'fixed' (m of N without replacement; replace-one adjacency) or 'poisson' (each
      client with probability q = m/N; add/remove-one adjacency).
    accountant: 'rdp' or 'pld' (Poisson only).
    delta: δ of the (ε, δ) guarantee.
    clients_per_round: m.
    population: N.
  """
  sampling: str
  accountant: str
  delta: float
  clients_per_round: int
  population: int

  def __post_init__(self):
    _check_mechanism(self.clients_per_round, self.population, self.sampling, self.accountant)
    _check_delta(self.delta)

  @property
  def adjacency(self) -> str:
    """'replace-one' or 'add/remove-one': the neighbouring relation the ε holds for."""
    return ADJACENCY[self.sampling]

  @property
  def sampling_detail(self) -> str:
    m, n = self.clients_per_round, self.population
    if self.sampling == 'fixed':
      return f'fixed-size sampling without replacement, {m} of {n} clients per round'
    return f'Poisson sampling, each of {n} clients independently with rate q={m / n:.4g}'

  def text(self) -> str:
    """One line naming the adjacency, sampling, accountant and δ."""
    relation = ('neighbouring datasets differ in one client\'s data, N public'
                if self.sampling == 'fixed' else
                'neighbouring datasets differ by the presence of one client')
    return (f'delta={self.delta:.3g}; {self.adjacency} adjacency ({relation}); '
            f'{self.sampling_detail}; {self.accountant.upper()} accountant (dp-accounting)')

  def to_dict(self) -> dict[str, Any]:
    """The description as data (summary.json, the privacy ledger), its `text` included."""
    return dict(adjacency=self.adjacency, sampling=self.sampling,
                sampling_detail=self.sampling_detail, accountant=self.accountant,
                delta=self.delta, clients_per_round=self.clients_per_round,
                population=self.population, description=self.text())


def describe(sampling: str, accountant: str, delta: float, clients_per_round: int,
             population: int) -> str:
  """`Accounting(...).text()`: the convention of an ε, to print beside it."""
  return Accounting(sampling, accountant, delta, clients_per_round, population).text()


def epsilon_conventions(noise_multiplier: float, clients_per_round: int, population: int,
                        rounds: int, delta: float
                        ) -> list[tuple[Accounting, float]]:
  """ε of the same z, m, N, T and δ under every convention dp-accounting supports.

  Returns:
    (Accounting, ε) for fixed-size sampling with RDP, Poisson with RDP, and Poisson with PLD,
    in that order. Only the one matching how a run sampled applies to it.
  """
  out = []
  for sampling, accountant in (('fixed', 'rdp'), ('poisson', 'rdp'), ('poisson', 'pld')):
    conv = Accounting(sampling, accountant, delta, clients_per_round, population)
    out.append((conv, epsilon(noise_multiplier, clients_per_round, population, rounds, delta,
                              accountant, sampling)))
  return out


def delta_warnings(delta: float, population: int) -> list[str]:
  """The δ part of `dp_warnings`: known before the first round, so a run logs it at start."""
  if delta >= 1 / population:
    return [f'delta={delta:.3g} is not below 1/N={1 / population:.3g} (N={population} '
            'clients): publishing one client\'s data outright meets this (ε, δ); use a '
            'smaller delta']
  if delta > WARN_DELTA:
    return [f'delta={delta:.3g} is above {WARN_DELTA:g}: the guarantee may fail outright '
            f'with probability up to {delta:.3g}; use a smaller delta']
  return []


def epsilon_warnings(epsilon_value: float) -> list[str]:
  """The ε part of `dp_warnings`: a run logs it in the round ε first exceeds `WARN_EPSILON`."""
  if epsilon_value > WARN_EPSILON:
    return [f'epsilon={epsilon_value:.3g} is above {WARN_EPSILON:g}: the guarantee says '
            'little at this level; add noise, sample fewer clients or run fewer rounds']
  return []


def dp_warnings(epsilon_value: float, delta: float, population: int) -> list[str]:
  """Warnings a run should log about its (ε, δ); empty when there is nothing to say.

  Warns when δ ≥ 1/N (a mechanism that publishes one random client's data outright meets such a
  δ), when δ > `WARN_DELTA` (the guarantee may fail outright with probability δ), and when
  ε > `WARN_EPSILON`: `delta_warnings` followed by `epsilon_warnings`.
  """
  return delta_warnings(delta, population) + epsilon_warnings(epsilon_value)
