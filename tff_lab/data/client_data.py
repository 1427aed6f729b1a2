"""Turning in-memory arrays into `tff.simulation.datasets.ClientData`.

Every embedded task keeps its clients' examples as NumPy arrays and exposes them through TFF's own
`ClientData` interface, so the training loop, the evaluation and TFF's dataset utilities treat an
embedded task exactly like a downloaded TFF dataset. Each element is an
`OrderedDict(x=..., y=...)`.
"""

import collections
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow_federated as tff

ClientArrays = Mapping[str, tuple[np.ndarray, np.ndarray]]


def client_ids_for(num_clients: int, prefix: str = 'client') -> list[str]:
  """Zero-padded ids, so lexicographic and numeric order agree (`client_007`)."""
  width = max(1, len(str(num_clients - 1)))
  return [f'{prefix}_{i:0{width}d}' for i in range(num_clients)]


def from_arrays(clients: ClientArrays) -> tff.simulation.datasets.ClientData:
  """Builds a ClientData whose client `cid` yields `OrderedDict(x=x[i], y=y[i])` for each i.

  Args:
    clients: Maps client id to its `(x, y)` arrays (same first dimension, at least one example).

  Returns:
    An in-memory `tff.simulation.datasets.ClientData` (TFF's `TestClientData`, which despite its
    name is TFF's in-memory ClientData built from tensor slices).

  Raises:
    ValueError: If there are no clients, or a client's arrays are empty or of different lengths.
  """
  if not clients:
    raise ValueError('from_arrays needs at least one client')
  slices = collections.OrderedDict()
  for cid, (x, y) in clients.items():
    if len(x) != len(y):
      raise ValueError(f'client {cid!r}: x has {len(x)} examples but y has {len(y)}')
    if len(x) == 0:
      raise ValueError(f'client {cid!r} has no examples')
    slices[cid] = collections.OrderedDict(x=np.asarray(x), y=np.asarray(y))
  return tff.simulation.datasets.TestClientData(slices)


def split_clients(x: np.ndarray, y: np.ndarray, partitions: Sequence[np.ndarray],
                  test_fraction: float, seed: int, prefix: str = 'client'
                  ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]],
                             dict[str, tuple[np.ndarray, np.ndarray]]]:
  """Gives each client a train/test split of its own examples (LEAF style).

  Each client keeps at least one training and one test example, so federated evaluation sees the
  same clients as training, each with its own distribution.

  Args:
    x: Features, first dimension indexes examples.
    y: Labels.
    partitions: One array of example indices per client.
    test_fraction: Fraction of each client's examples held out, in (0, 1).
    seed: Seed of the per-client shuffle.
    prefix: Client id prefix.

  Returns:
    `(train, test)` dicts mapping client id to `(x, y)`.

  Raises:
    ValueError: If test_fraction is outside (0, 1) or a client has fewer than 2 examples.
  """
  if not 0.0 < test_fraction < 1.0:
    raise ValueError(f'test_fraction must be in (0, 1), got {test_fraction}')
  rng = np.random.default_rng(seed)
  train, test = {}, {}
  for cid, idx in zip(client_ids_for(len(partitions), prefix), partitions):
    if len(idx) < 2:
      raise ValueError(f'client {cid} has {len(idx)} example(s); a train/test split needs 2')
    idx = rng.permutation(idx)
    n_test = min(len(idx) - 1, max(1, int(round(test_fraction * len(idx)))))
    test[cid] = (x[idx[:n_test]], y[idx[:n_test]])
    train[cid] = (x[idx[n_test:]], y[idx[n_test:]])
  return train, test


def pool(clients: ClientArrays) -> tuple[np.ndarray, np.ndarray]:
  """Concatenates all clients' arrays (in client-id order) into one centralised set."""
  ids = sorted(clients)
  return (np.concatenate([clients[c][0] for c in ids]),
          np.concatenate([clients[c][1] for c in ids]))
