"""Partitioning a centralized dataset over simulated federated clients.

Three classic schemes are provided, all pure NumPy and seeded:

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

Every function returns one `int64` array of example indices per client,
sorted ascending. Together the arrays form a partition of
`range(num_examples)`: each example belongs to exactly one client.
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


def partition_iid(num_examples: int, num_clients: int,
                  seed: int) -> list[np.ndarray]:
  """Splits examples uniformly at random over clients.

  Args:
    num_examples: Number of examples N; indices are `range(N)`.
    num_clients: Number of clients M.
    seed: Seed for `np.random.default_rng`.

  Returns:
    `M` sorted int64 index arrays whose sizes differ by at most one.

  Raises:
    ValueError: If `num_clients < 1` or `num_examples < num_clients`.
  """
  _check_num_clients(num_clients)
  if num_examples < num_clients:
    raise ValueError(
        f'cannot split {num_examples} examples over {num_clients} clients: '
        'each client needs at least one example (num_examples must be >= '
        'num_clients)')
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
  if min_size < 0:
    raise ValueError(f'min_size must be >= 0, got {min_size}')
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


def partition_shards(labels: np.ndarray, num_clients: int,
                     shards_per_client: int, seed: int) -> list[np.ndarray]:
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

  Returns:
    `M` sorted int64 index arrays partitioning `range(len(labels))`.

  Raises:
    ValueError: On invalid arguments, or if there are fewer examples than
      shards.
  """
  labels = _check_labels(labels)
  _check_num_clients(num_clients)
  if shards_per_client < 1:
    raise ValueError(
        f'shards_per_client must be >= 1, got {shards_per_client}')
  num_shards = num_clients * shards_per_client
  if num_shards > len(labels):
    raise ValueError(
        f'num_clients * shards_per_client = {num_shards} shards exceeds the '
        f'number of examples len(labels) = {len(labels)}')

  rng = np.random.default_rng(seed)
  # Shuffle first, then stable-sort by label: equal labels keep random order.
  permutation = rng.permutation(len(labels))
  by_label = permutation[np.argsort(labels[permutation], kind='stable')]
  shards = np.array_split(by_label, num_shards)
  shard_order = rng.permutation(num_shards).reshape(num_clients,
                                                    shards_per_client)
  return _finalize(
      [np.concatenate([shards[s] for s in row]) for row in shard_order])


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
