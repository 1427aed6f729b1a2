"""Partitioning a centralized dataset over simulated federated clients.

Five schemes are provided, all pure NumPy, seeded and deterministic:

* `partition_iid`: a uniformly random, (almost) equal-sized split.
* `partition_shards`: the "pathological non-IID" split of McMahan et al.,
  "Communication-Efficient Learning of Deep Networks from Decentralized Data",
  AISTATS 2017 (arXiv:1602.05629): sort the examples by label, cut them into
  equal shards and give every client a few shards, so that each client sees
  only a few labels.
* `partition_dirichlet`: Dirichlet label skew as popularised by Hsu et al.,
  "Measuring the Effects of Non-Identical Data Distribution for Federated
  Visual Classification", 2019 (arXiv:1909.06335). Smaller `alpha` means
  more skew. We use the common per-class formulation (Yurochkin et al. 2019,
  arXiv:1905.12022): for every class, draw the share of that class held by
  each client from Dir(alpha * 1). Hsu et al. instead draw, for every client,
  a class distribution q ~ Dir(alpha * p); both are controlled the same way by
  `alpha`.
* `partition_quantity_skew`: examples are assigned uniformly at random (labels stay IID), but
  client *sizes* are skewed: drawn from a lognormal or a power law (Pareto) and scaled to the
  dataset size. Li et al., "Federated Optimization in Heterogeneous Networks", MLSys 2020
  (arXiv:1812.06127) draw their Synthetic device sizes from `lognormal(4, 2)`, and their
  natural datasets are heavy-tailed (Shakespeare: 3,616 ± 6,808 samples per device, Table 1).
* `partition_natural`: one client per distinct value of an id column (writer, speaker, silo),
  the natural partition of LEAF (Caldas et al., arXiv:1812.01097).

Every function except `partition_natural` returns one `int64` array of example indices per
client, sorted ascending. Together the arrays form a partition of `range(num_examples)`: each
example belongs to exactly one client. Each takes a `min_size` and either guarantees that every
client gets at least `min_size` examples or raises a `ValueError`; `partition_natural` instead
leaves out the groups smaller than its `min_size`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _check_num_clients(num_clients: int) -> None:
  if num_clients < 1:
    raise ValueError(f'num_clients must be >= 1, got {num_clients}')


def _check_labels(labels: np.ndarray) -> np.ndarray:
  labels = np.asarray(labels)
  if labels.ndim != 1:
    raise ValueError(
        f'labels must be a 1-D array, got shape {labels.shape}')
  return labels


def _finalize(parts: Sequence[np.ndarray]) -> list[np.ndarray]:
  """Sorts every client's indices and casts them to int64."""
  return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def _check_min_size(min_size: int) -> None:
  if min_size < 0:
    raise ValueError(f'min_size must be >= 0, got {min_size}')


def partition_iid(num_examples: int, num_clients: int, seed: int,
                  min_size: int = 1) -> list[np.ndarray]:
  """Splits examples uniformly at random over clients.

  Args:
    num_examples: Number of examples N; indices are `range(N)`.
    num_clients: Number of clients M.
    seed: Seed for `np.random.default_rng`.
    min_size: Minimum number of examples every client must hold.

  Returns:
    `M` sorted int64 index arrays whose sizes differ by at most one (so the smallest holds
    `N // M` examples).

  Raises:
    ValueError: If `num_clients < 1`, `min_size < 0` or `N // M < min_size` (in particular
      when there are more clients than examples).
  """
  _check_num_clients(num_clients)
  _check_min_size(min_size)
  if num_examples < num_clients * max(min_size, 1):
    raise ValueError(
        f'cannot split {num_examples} examples over {num_clients} clients with at least '
        f'min_size={max(min_size, 1)} each (num_examples must be >= num_clients * min_size)')
  rng = np.random.default_rng(seed)
  permutation = rng.permutation(num_examples)
  return _finalize(np.array_split(permutation, num_clients))


def partition_dirichlet(labels: np.ndarray,
                        num_clients: int,
                        alpha: float,
                        seed: int,
                        min_size: int = 1,
                        max_attempts: int = 1000) -> list[np.ndarray]:
  """Splits examples with Dirichlet label skew.

  For every class `c`, proportions `p ~ Dir(alpha * 1_M)` are drawn and
  the (shuffled) examples of class `c` are cut at `cumsum(p) * n_c`, so
  client `k` receives about `p_k * n_c` of them. If some client ends up
  with fewer than `min_size` examples, the whole draw is repeated, up to
  `max_attempts` times.

  Args:
    labels: 1-D array of (integer or other hashable-sortable) labels.
    num_clients: Number of clients M.
    alpha: Dirichlet concentration, > 0. Small values (e.g. 0.1) give very
      skewed clients; large values (e.g. 100) approach an IID split.
    seed: Seed for `np.random.default_rng`.
    min_size: Minimum number of examples every client must hold.
    max_attempts: Maximum number of full redraws before giving up.

  Returns:
    `M` sorted int64 index arrays partitioning `range(len(labels))`.

  Raises:
    ValueError: On invalid arguments, or if no draw within `max_attempts`
      gives every client at least `min_size` examples.
  """
  labels = _check_labels(labels)
  _check_num_clients(num_clients)
  if not alpha > 0:
    raise ValueError(f'alpha must be > 0, got {alpha}')
  _check_min_size(min_size)
  if max_attempts < 1:
    raise ValueError(f'max_attempts must be >= 1, got {max_attempts}')
  if num_clients * min_size > len(labels):
    raise ValueError(
        f'num_clients * min_size = {num_clients} * {min_size} exceeds the '
        f'number of examples len(labels) = {len(labels)}')

  rng = np.random.default_rng(seed)
  class_indices = [np.flatnonzero(labels == c) for c in np.unique(labels)]
  concentration = np.full(num_clients, float(alpha))

  for _ in range(max_attempts):
    parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for indices in class_indices:
      indices = rng.permutation(indices)
      proportions = rng.dirichlet(concentration)
      # Cut positions: client k gets indices[cuts[k-1]:cuts[k]].
      cuts = (np.cumsum(proportions) * len(indices)).astype(int)[:-1]
      for k, chunk in enumerate(np.split(indices, cuts)):
        parts[k].append(chunk)
    sizes = [sum(len(chunk) for chunk in part) for part in parts]
    if min(sizes) >= min_size:
      return _finalize(
          [np.concatenate(part) if part else np.empty(0, np.int64)
           for part in parts])
  raise ValueError(
      f'could not give every client >= min_size={min_size} examples in '
      f'max_attempts={max_attempts} draws (alpha={alpha}, '
      f'num_clients={num_clients}); increase alpha or max_attempts, or lower '
      'min_size')


def partition_shards(labels: np.ndarray, num_clients: int, shards_per_client: int, seed: int,
                     min_size: int = 1) -> list[np.ndarray]:
  """McMahan et al.'s pathological non-IID split into label-sorted shards.

  The examples are sorted by label (ties broken by a seeded random
  permutation), cut into `num_clients * shards_per_client` contiguous shards
  whose sizes differ by at most one, and each client receives
  `shards_per_client` shards chosen by a seeded permutation. With MNIST,
  200 shards of 300 and 2 shards per client reproduce the paper's setup.

  Args:
    labels: 1-D array of labels.
    num_clients: Number of clients M.
    shards_per_client: Shards given to every client, >= 1.
    seed: Seed for `np.random.default_rng`.
    min_size: Minimum number of examples every client must hold; every client holds at least
      `shards_per_client * (N // num_shards)`.

  Returns:
    `M` sorted int64 index arrays partitioning `range(len(labels))`.

  Raises:
    ValueError: On invalid arguments, if there are fewer examples than
      shards, or if the shards are too small for `min_size`.
  """
  labels = _check_labels(labels)
  _check_num_clients(num_clients)
  _check_min_size(min_size)
  if shards_per_client < 1:
    raise ValueError(
        f'shards_per_client must be >= 1, got {shards_per_client}')
  num_shards = num_clients * shards_per_client
  if num_shards > len(labels):
    raise ValueError(
        f'num_clients * shards_per_client = {num_shards} shards exceeds the '
        f'number of examples len(labels) = {len(labels)}')
  if shards_per_client * (len(labels) // num_shards) < min_size:
    raise ValueError(
        f'min_size={min_size} cannot be guaranteed: {num_shards} shards of '
        f'{len(labels) // num_shards} examples give a client only '
        f'{shards_per_client * (len(labels) // num_shards)}')

  rng = np.random.default_rng(seed)
  # Shuffle first, then stable-sort by label: equal labels keep random order.
  permutation = rng.permutation(len(labels))
  by_label = permutation[np.argsort(labels[permutation], kind='stable')]
  shards = np.array_split(by_label, num_shards)
  shard_order = rng.permutation(num_shards).reshape(num_clients,
                                                    shards_per_client)
  return _finalize(
      [np.concatenate([shards[s] for s in row]) for row in shard_order])


QUANTITY_DISTRIBUTIONS = ('lognormal', 'powerlaw')


def quantity_skew_sizes(num_examples: int, num_clients: int, seed: int,
                        distribution: str = 'lognormal', sigma: float = 1.0,
                        exponent: float = 1.5, min_size: int = 1) -> np.ndarray:
  """Draws skewed client sizes that sum to `num_examples`, each at least `min_size`.

  Every client first gets `min_size` examples; the remaining `N - M * min_size` are shared in
  proportion to weights `w_k` (largest-remainder rounding, so the sizes sum exactly to N):

  * `lognormal`: `w_k ~ LogNormal(0, sigma)`; `sigma = 0` gives equal sizes, larger `sigma`
    more skew.
  * `powerlaw`: `w_k ~ Pareto(exponent)` with `P(w > x) = x^-exponent` for `x >= 1`; smaller
    `exponent` gives a heavier tail.

  Args:
    num_examples: Number of examples N.
    num_clients: Number of clients M.
    seed: Seed for `np.random.default_rng`.
    distribution: `lognormal` or `powerlaw`.
    sigma: Lognormal shape (standard deviation of log w), >= 0.
    exponent: Pareto tail index, > 0.
    min_size: Minimum size of every client, >= 0.

  Returns:
    An int64 array of `M` sizes.

  Raises:
    ValueError: On invalid arguments, or if `N < M * min_size`.
  """
  _check_num_clients(num_clients)
  _check_min_size(min_size)
  if distribution not in QUANTITY_DISTRIBUTIONS:
    raise ValueError(
        f'distribution must be one of {QUANTITY_DISTRIBUTIONS}, got {distribution!r}')
  if not sigma >= 0:
    raise ValueError(f'sigma must be >= 0, got {sigma}')
  if not exponent > 0:
    raise ValueError(f'exponent must be > 0, got {exponent}')
  if num_examples < num_clients * min_size:
    raise ValueError(
        f'cannot give {num_clients} clients min_size={min_size} examples each from '
        f'num_examples={num_examples}')
  rng = np.random.default_rng(seed)
  if distribution == 'lognormal':
    weights = rng.lognormal(0.0, sigma, num_clients)
  else:
    weights = 1.0 + rng.pareto(exponent, num_clients)
  spare = num_examples - num_clients * min_size
  shares = weights / weights.sum() * spare
  extra = np.floor(shares).astype(np.int64)
  # Largest remainders get the examples lost to flooring (stable sort: ties by client index).
  leftover = spare - int(extra.sum())
  extra[np.argsort(-(shares - extra), kind='stable')[:leftover]] += 1
  return min_size + extra


def partition_quantity_skew(num_examples: int, num_clients: int, seed: int,
                            distribution: str = 'lognormal', sigma: float = 1.0,
                            exponent: float = 1.5, min_size: int = 1) -> list[np.ndarray]:
  """Splits examples uniformly at random into clients of skewed sizes.

  Sizes come from `quantity_skew_sizes` (same arguments); the examples are then dealt out by a
  seeded random permutation, so every client's label distribution is IID.

  Returns:
    `M` sorted int64 index arrays partitioning `range(num_examples)`.

  Raises:
    ValueError: As `quantity_skew_sizes`.
  """
  sizes = quantity_skew_sizes(num_examples, num_clients, seed, distribution, sigma, exponent,
                              min_size)
  # A random stream independent of the size draws.
  permutation = np.random.default_rng([seed, 1]).permutation(num_examples)
  return _finalize(np.split(permutation, np.cumsum(sizes)[:-1]))


def partition_natural(ids: np.ndarray,
                      min_size: int = 1) -> tuple[np.ndarray, list[np.ndarray]]:
  """One client per distinct value of `ids` (LEAF's natural partition).

  Args:
    ids: 1-D array holding each example's group (writer, speaker, silo, ...).
    min_size: Groups with fewer examples are left out (their examples belong to no client).

  Returns:
    `(keys, parts)`: the kept distinct ids in ascending order, and for each the sorted int64
    indices of its examples.

  Raises:
    ValueError: If `ids` is not 1-D or empty, `min_size < 0`, or no group has `min_size`
      examples.
  """
  ids = np.asarray(ids)
  if ids.ndim != 1 or ids.size == 0:
    raise ValueError(f'ids must be a non-empty 1-D array, got shape {ids.shape}')
  _check_min_size(min_size)
  keys, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
  order = np.argsort(inverse, kind='stable')  # Example indices grouped by key, ascending.
  groups = np.split(order, np.cumsum(counts)[:-1])
  kept = [k for k in range(len(keys)) if counts[k] >= min_size]
  if not kept:
    raise ValueError(
        f'no id has min_size={min_size} examples (largest group: {counts.max()})')
  return keys[kept], _finalize([groups[k] for k in kept])


def partition_labels(kind: str, labels: np.ndarray, num_clients: int, seed: int, *,
                     alpha: float = 0.5, shards_per_client: int = 2,
                     min_size: int = 1) -> list[np.ndarray]:
  """The label-based partition named `kind` (`iid`, `dirichlet` or `shards`), for task builders.

  Raises:
    ValueError: For an unknown kind, or arguments the chosen partitioner refuses.
  """
  if kind == 'iid':
    return partition_iid(len(labels), num_clients, seed, min_size=min_size)
  if kind == 'dirichlet':
    return partition_dirichlet(labels, num_clients, alpha, seed, min_size=min_size)
  if kind == 'shards':
    return partition_shards(labels, num_clients, shards_per_client, seed, min_size=min_size)
  raise ValueError(f"unknown partition {kind!r}; choose one of ['iid', 'dirichlet', 'shards']")


def label_histograms(labels: np.ndarray, partitions: Sequence[np.ndarray],
                     num_classes: int) -> np.ndarray:
  """Counts the examples of every class held by every client.

  Args:
    labels: 1-D array of integer labels in `[0, num_classes)`.
    partitions: One index array per client, e.g. from a `partition_*`
      function.
    num_classes: Number of classes.

  Returns:
    An int64 array of shape `(num_clients, num_classes)`; entry `[k, c]`
    is the number of examples of class `c` held by client `k`.

  Raises:
    ValueError: If `labels` is not 1-D or not in `[0, num_classes)`.
  """
  labels = _check_labels(labels)
  if num_classes < 1:
    raise ValueError(f'num_classes must be >= 1, got {num_classes}')
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(
        f'labels must lie in [0, num_classes={num_classes}), got range '
        f'[{labels.min()}, {labels.max()}]')
  histograms = np.zeros((len(partitions), num_classes), dtype=np.int64)
  for k, indices in enumerate(partitions):
    histograms[k] = np.bincount(
        labels[np.asarray(indices, dtype=np.int64)].astype(np.int64),
        minlength=num_classes)
  return histograms
