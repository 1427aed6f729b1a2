"""State an algorithm keeps between rounds outside TFF's server state: per client, and its own.

Algorithms with control variates (SCAFFOLD) or personal models (Ditto, FedRep) keep arrays per
client that persist from one participation to the next. A `ClientStore` holds them, keyed by
client id and initialised lazily (a client that never took part holds nothing: `get` returns a
fresh initial state without storing it), plus one server-side part (`server`, e.g. SCAFFOLD's
server control variate) that the algorithm keeps beside TFF's `LearningAlgorithmState`.

Checkpoints carry the store (`to_checkpoint` / `from_checkpoint`, through
`tff_lab.training.checkpoint`'s extra parts), so a resumed run continues bit for bit. The state
lives in memory: float32 arrays of the shapes the algorithm's initializer gives, `nbytes` bytes in
all (for SCAFFOLD, one model-sized control variate per client that has taken part: 10,000
clients of McMahan's 2NN, 199,210 parameters, hold 7.97 GB; see BUILD.md for the measurement and
for how a disk-backed store would work).
"""

import collections
from typing import Any, Callable

import numpy as np

State = 'collections.OrderedDict[str, list[np.ndarray]]'


def _copy(state) -> 'collections.OrderedDict[str, list[np.ndarray]]':
  return collections.OrderedDict((k, [np.array(a, copy=True) for a in v]) for k, v in state.items())


class ClientStore:
  """Per-client state keyed by client id, lazily initialised, plus the algorithm's server part."""

  def __init__(self, initial_client_state: Callable[[], Any], initial_server_state: Any = None):
    """Describes the state.

    Args:
      initial_client_state: `() -> OrderedDict[name, list of arrays]`, the state of a client
        before its first participation.
      initial_server_state: The algorithm's server-side part at round 0 (an OrderedDict of lists
        of arrays), or None.
    """
    self._initial = initial_client_state
    self._clients: 'collections.OrderedDict[str, Any]' = collections.OrderedDict()
    self.server = None if initial_server_state is None else _copy(initial_server_state)

  def get(self, client_id: str) -> 'collections.OrderedDict[str, list[np.ndarray]]':
    """The client's state (a copy; the initial state if it never took part)."""
    state = self._clients.get(client_id)
    return _copy(self._initial() if state is None else state)

  def set(self, client_id: str, state) -> None:
    """Stores the client's new state (copied)."""
    self._clients[client_id] = _copy(state)

  def __contains__(self, client_id: str) -> bool:
    return client_id in self._clients

  def __len__(self) -> int:
    """Clients holding state (those that took part)."""
    return len(self._clients)

  @property
  def nbytes(self) -> int:
    """Bytes of array data held, clients and server part."""
    parts = list(self._clients.values()) + ([self.server] if self.server is not None else [])
    return sum(a.nbytes for state in parts for arrays in state.values() for a in arrays)

  def to_checkpoint(self) -> 'collections.OrderedDict[str, Any]':
    """The store as a checkpoint extra part (nested OrderedDicts of arrays)."""
    return collections.OrderedDict(
        client_ids=list(self._clients),
        clients=[self._clients[c] for c in self._clients],
        server=self.server if self.server is not None else collections.OrderedDict())

  def restore(self, saved) -> None:
    """Replaces the contents with a `to_checkpoint()` value."""
    self._clients = collections.OrderedDict(
        (cid, _copy(state)) for cid, state in zip(saved['client_ids'], saved['clients']))
    self.server = _copy(saved['server']) if saved['server'] else None
