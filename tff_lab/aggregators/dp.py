"""Differentially private aggregation (DP-FedAvg): clip each update, sum, add Gaussian noise.

McMahan, Ramage, Talwar, Zhang, "Learning Differentially Private Recurrent Language Models",
ICLR 2018 (arXiv:1710.06963), with a fixed clip; Andrew, Thakkar, McMahan, Ramaswamy,
"Differentially Private Learning with Adaptive Clipping", NeurIPS 2021 (arXiv:1905.03871), with
the clip adapted to a quantile of the client update norms.

Each round every client's update is clipped to global L2 norm C, the clipped updates are summed
(by `record_aggregation_factory`: a plain sum, or compression below it), the server
adds N(0, (zC)² I) and divides by `clients_per_round` (a fixed denominator: McMahan et al.'s f̃_f
with unit weights). With `--secure_aggregation` the same clip, noise and denominator are applied
around the masking protocol by `tff_lab.algorithms.secure_rounds` (dp='fixed' only). The mean
thus carries noise of std zC/m per coordinate. Adaptive clipping updates C ← C·exp(−η(b̃ − γ))
after each round, b̃ being the noised fraction of clients that were not clipped; z is then the
*total* noise multiplier, split between the update noise z_Δ = (z⁻² − (2σ_b)⁻²)^(−1/2) and the
noise σ_b (default 0.05·m) on the unclipped count.

The queries are exactly those of TFF's `DifferentiallyPrivateFactory.gaussian_fixed` and
`.gaussian_adaptive` (same tensorflow-privacy queries and defaults: initial clip 0.1, γ = 0.5,
η = 0.2, σ_b = 0.05·m). They are built here rather than by those class methods only so that the
record sum can be another factory.

Weighting: the guarantee needs every sampled client to count equally, so the factory is
unweighted. Use it with `fedavg_unweighted`. For processes that exist only weighted (tff_lab's
`fedsgd` and `fedprox`), `weighted=True` wraps it in TFF's `as_weighted_aggregator`, which
ignores the example-count weights: those runs then average uniformly.

ε for these rounds comes from `tff_lab.privacy.accounting`, with the same z, m and population.
Only the mechanism that adds the noise may claim it: `create_dp_factory` attaches a
`GaussianMechanism` holding its own z, C and m to the factory it returns (`mechanism_of`), the
aggregator stack carries it to the factory it composes, and the training loop reports ε only
for a factory (or round runner) that declares one. A factory that adds no noise declares none,
so no ε is reported for it, whatever the experiment's settings say.
"""

import dataclasses
import math
import numbers
from typing import Any, Optional, Union

import tensorflow_federated as tff
import tensorflow_privacy as tfp

DP_MODES = ('none', 'fixed', 'adaptive')
# Andrew et al.'s defaults, as in TFF's gaussian_adaptive.
DEFAULT_INITIAL_CLIP = 0.1
DEFAULT_TARGET_QUANTILE = 0.5
DEFAULT_CLIP_LEARNING_RATE = 0.2
DEFAULT_CLIPPED_COUNT_STDDEV_PER_CLIENT = 0.05


@dataclasses.dataclass(frozen=True)
class GaussianMechanism:
  """The Gaussian mechanism one DP aggregator applies each round, as the aggregator built it.

  Attributes:
    noise_multiplier: z: the noise std on the sum of clipped updates over the clip norm (TFF's
      total noise multiplier with adaptive clipping).
    clients_per_round: m: the mean's fixed denominator and the expected clients per round.
    clip_norm: The L2 clip C (fixed), or the initial clip (adaptive).
    adaptive: Whether the clip adapts (Andrew et al. 2021).
  """

  noise_multiplier: float
  clients_per_round: int
  clip_norm: float
  adaptive: bool


# The attribute under which a factory or a round runner declares the mechanism it applies.
MECHANISM_ATTRIBUTE = 'dp_mechanism'


def attach_mechanism(factory: Any, mechanism: Optional[GaussianMechanism]) -> Any:
  """Declares that `factory` applies `mechanism` (nothing for None); returns `factory`."""
  if mechanism is not None:
    setattr(factory, MECHANISM_ATTRIBUTE, mechanism)
  return factory


def mechanism_of(aggregator: Any) -> Optional[GaussianMechanism]:
  """The `GaussianMechanism` that `aggregator` (a factory or a round runner) declares, or None.

  None means that no tff_lab DP mechanism is known to run in it, so no ε may be reported.
  """
  mechanism = getattr(aggregator, MECHANISM_ATTRIBUTE, None)
  if mechanism is not None and not isinstance(mechanism, GaussianMechanism):
    raise TypeError(f'{type(aggregator).__name__}.{MECHANISM_ATTRIBUTE} must be a '
                    f'GaussianMechanism, got {type(mechanism).__name__}')
  return mechanism


def check_dp_args(dp: str, noise_multiplier: float, clients_per_round: int,
                  clip_norm: Optional[float] = None, adaptive_clip: bool = False,
                  target_quantile: float = DEFAULT_TARGET_QUANTILE,
                  clip_learning_rate: float = DEFAULT_CLIP_LEARNING_RATE,
                  clipped_count_stddev: Optional[float] = None) -> None:
  """Raises a one-line ValueError naming the first bad argument; no TFF tracing.

  Arguments as in `create_dp_factory`. With `dp='none'` the other arguments are not checked.
  """
  if dp not in DP_MODES:
    raise ValueError(f'dp must be one of {list(DP_MODES)}; got {dp!r}')
  if dp == 'none':
    return
  if noise_multiplier is None or not math.isfinite(noise_multiplier) or noise_multiplier <= 0:
    raise ValueError(f'noise_multiplier must be positive and finite with dp={dp}; '
                     f'got {noise_multiplier}')
  if not isinstance(clients_per_round, numbers.Integral) or clients_per_round < 1:
    raise ValueError(f'clients_per_round must be a positive integer; got {clients_per_round!r}')
  if clip_norm is not None and not (math.isfinite(clip_norm) and clip_norm > 0):
    raise ValueError(f'clip_norm must be positive and finite; got {clip_norm}')
  if dp == 'fixed':
    if clip_norm is None:
      raise ValueError('dp=fixed needs clip_norm (DP without clipping has unbounded sensitivity)')
    if adaptive_clip:
      raise ValueError('adaptive_clip=True contradicts dp=fixed; use dp=adaptive')
    return
  if not 0 < target_quantile < 1:
    raise ValueError(f'target_quantile must be in (0, 1); got {target_quantile}')
  if not clip_learning_rate > 0:
    raise ValueError(f'clip_learning_rate must be positive; got {clip_learning_rate}')
  stddev = (DEFAULT_CLIPPED_COUNT_STDDEV_PER_CLIENT * clients_per_round
            if clipped_count_stddev is None else clipped_count_stddev)
  if not stddev > 0:
    raise ValueError(f'clipped_count_stddev must be positive; got {clipped_count_stddev}')
  if noise_multiplier >= 2 * stddev:
    # Name the flags a user has: the clipped-count noise is derived, not a flag.
    raise ValueError(
        f'--noise_multiplier={noise_multiplier:g} is too large for --dp=adaptive with '
        f'--clients_per_round={clients_per_round}: adaptive clipping also noises the count of '
        f'clipped updates (std {stddev:g}, 0.05 per client), and the multiplier must stay below '
        f'twice that ({2 * stddev:g}); lower --noise_multiplier, raise --clients_per_round, or '
        f'use --dp=fixed')


def dp_query(dp: str, noise_multiplier: float, clients_per_round: int,
             clip_norm: Optional[float] = None,
             target_quantile: float = DEFAULT_TARGET_QUANTILE,
             clip_learning_rate: float = DEFAULT_CLIP_LEARNING_RATE,
             clipped_count_stddev: Optional[float] = None) -> tfp.DPQuery:
  """The tensorflow-privacy query of TFF's gaussian_fixed / gaussian_adaptive.

  `create_dp_factory` wraps it in TFF's `DifferentiallyPrivateFactory`; the in-graph aggregation
  (`tff_lab.aggregators.in_graph`) runs the same query on stacked updates.
  """
  noise_multiplier = float(noise_multiplier)
  clip_norm = None if clip_norm is None else float(clip_norm)
  if dp == 'fixed':
    sum_query = tfp.GaussianSumQuery(l2_norm_clip=clip_norm, stddev=clip_norm * noise_multiplier)
  else:
    value_noise_multiplier, clipped_count_stddev = (
        tff.aggregators.differential_privacy.adaptive_clip_noise_params(
            noise_multiplier, float(clients_per_round), clipped_count_stddev))
    sum_query = tfp.QuantileAdaptiveClipSumQuery(
        initial_l2_norm_clip=DEFAULT_INITIAL_CLIP if clip_norm is None else clip_norm,
        noise_multiplier=value_noise_multiplier,
        target_unclipped_quantile=target_quantile,
        learning_rate=clip_learning_rate,
        clipped_count_stddev=clipped_count_stddev,
        expected_num_records=float(clients_per_round),
        geometric_update=True)
  return tfp.NormalizedQuery(sum_query, denominator=float(clients_per_round))


def create_dp_factory(
    dp: str,
    noise_multiplier: float,
    clients_per_round: int,
    clip_norm: Optional[float] = None,
    adaptive_clip: bool = False,
    *,
    target_quantile: float = DEFAULT_TARGET_QUANTILE,
    clip_learning_rate: float = DEFAULT_CLIP_LEARNING_RATE,
    clipped_count_stddev: Optional[float] = None,
    record_aggregation_factory: Optional[tff.aggregators.UnweightedAggregationFactory] = None,
    weighted: bool = False,
) -> Optional[Union[tff.aggregators.UnweightedAggregationFactory,
                    tff.aggregators.WeightedAggregationFactory]]:
  """The DP mean aggregator for `--dp`, or None for `dp='none'`.

  Args:
    dp: 'none', 'fixed' (clip at `clip_norm`) or 'adaptive' (clip adapted to `target_quantile`
      of the update norms, starting at `clip_norm`, default 0.1).
    noise_multiplier: z > 0: noise std / clip norm (the total multiplier with adaptive clipping;
      must be below 2·clipped_count_stddev there).
    clients_per_round: m, the denominator of the mean and the expected number of clients.
    clip_norm: The L2 clip of each client update (fixed), or the initial clip (adaptive).
    adaptive_clip: Only a consistency check: True is refused with dp='fixed'.
    target_quantile: γ, the fraction of clients left unclipped (adaptive).
    clip_learning_rate: η of the geometric clip update (adaptive).
    clipped_count_stddev: σ_b, the noise std on the unclipped count (adaptive; default 0.05·m).
    record_aggregation_factory: An unweighted factory that *sums* the clipped records (e.g. a
      compressed sum); TFF's plain `SumFactory` by default. It must not increase their L2 norm.
    weighted: Return a weighted factory that ignores the weights (for weighted-only processes).

  Raises:
    ValueError: As `check_dp_args`.
  """
  check_dp_args(dp, noise_multiplier, clients_per_round, clip_norm, adaptive_clip,
                target_quantile, clip_learning_rate, clipped_count_stddev)
  if dp == 'none':
    return None
  query = dp_query(dp, float(noise_multiplier), clients_per_round,
                    None if clip_norm is None else float(clip_norm), float(target_quantile),
                    float(clip_learning_rate),
                    None if clipped_count_stddev is None else float(clipped_count_stddev))
  factory = tff.aggregators.DifferentiallyPrivateFactory(query, record_aggregation_factory)
  if weighted:
    factory = tff.aggregators.as_weighted_aggregator(factory)
  return attach_mechanism(factory, GaussianMechanism(
      noise_multiplier=float(noise_multiplier), clients_per_round=int(clients_per_round),
      clip_norm=float(DEFAULT_INITIAL_CLIP if clip_norm is None else clip_norm),
      adaptive=dp == 'adaptive'))
