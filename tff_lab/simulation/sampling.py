"""Client sampling: m of N without replacement, or Poisson with rate q, seeded per round.

The two schemes whose DP accounting `tff_lab.privacy.accounting` implements:

* `fixed_size_sample`: exactly m of the N clients, uniformly without replacement (replace-one
  adjacency; Wang, Balle, Kasiviswanathan, AISTATS 2019, arXiv:1808.00087). With the public seed
  as entropy it is bit-identical to the sampling tff_lab has always done
  (`np.random.default_rng([seed, round]).choice(N, m, replace=False)`), so existing runs resume
  with the same clients.
* `poisson_sample`: each client independently with probability q (add/remove-one adjacency;
  Abadi et al., CCS 2016, arXiv:1607.00133; McMahan et al., ICLR 2018, arXiv:1710.06963). The
  sample size varies from round to round and can be 0; under DP it is itself private (one client
  more or less changes it), so it must not be released.

Both are pure functions of (entropy, round): `entropy` is the public seed without DP and
`tff_lab.privacy.secret.sampling_entropy(secret)` with it, so that the sample cannot be
recomputed from config.json. They return client *indices* (into the sorted client ids the loop
samples from).
"""

import numbers

import numpy as np

SCHEMES = ('fixed', 'poisson')

# Poisson draws come from their own stream, so that no prefix of it is shared with fixed-size
# sampling under the same entropy.
_POISSON_STREAM = 1


def _check_entropy(entropy: int, round_num: int) -> None:
  if not isinstance(entropy, numbers.Integral) or entropy < 0:
    raise ValueError(f'entropy must be a non-negative integer; got {entropy!r}')
  if not isinstance(round_num, numbers.Integral) or round_num < 0:
    raise ValueError(f'round_num must be a non-negative integer; got {round_num!r}')


def fixed_size_sample(num_total: int, num_sampled: int, entropy: int, round_num: int
                      ) -> list[int]:
  """`num_sampled` distinct indices of range(`num_total`), in sampling order.

  Args:
    num_total: N, the clients sampled from.
    num_sampled: m, in [1, N].
    entropy: The public seed, or `sampling_entropy(secret)` under DP.
    round_num: The round.
  """
  _check_entropy(entropy, round_num)
  if not isinstance(num_total, numbers.Integral) or num_total < 1:
    raise ValueError(f'num_total must be a positive integer; got {num_total!r}')
  if not isinstance(num_sampled, numbers.Integral) or not 1 <= num_sampled <= num_total:
    raise ValueError(f'num_sampled must be an integer in [1, {num_total}]; got {num_sampled!r}')
  rng = np.random.default_rng([int(entropy), int(round_num)])
  return [int(i) for i in rng.choice(num_total, size=num_sampled, replace=False)]


def poisson_sample(num_total: int, rate: float, entropy: int, round_num: int) -> list[int]:
  """The indices of range(`num_total`) included, each independently with probability `rate`.

  Args:
    num_total: N, the clients sampled from.
    rate: q in (0, 1]; m/N for an expected m clients per round.
    entropy: The public seed, or `sampling_entropy(secret)` under DP.
    round_num: The round.

  Returns:
    Sorted indices; possibly none.
  """
  _check_entropy(entropy, round_num)
  if not isinstance(num_total, numbers.Integral) or num_total < 1:
    raise ValueError(f'num_total must be a positive integer; got {num_total!r}')
  if not (isinstance(rate, numbers.Real) and 0 < rate <= 1):
    raise ValueError(f'rate must be in (0, 1]; got {rate!r}')
  rng = np.random.default_rng([int(entropy), int(round_num), _POISSON_STREAM])
  return [int(i) for i in np.flatnonzero(rng.random(num_total) < rate)]
