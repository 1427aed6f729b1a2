"""Per-client caching of preprocessed data: preprocess a client once, not every round.

TFF's baselines preprocess with `ClientData.preprocess(fn)`, which re-runs `fn` (tokenisation,
windowing, cropping, parsing serialized examples out of SQLite) every time a client's dataset is
built, i.e. every round the client is sampled. `CachedClientData` runs the wrapped ClientData's
pipeline once per client, keeps the resulting examples in memory as NumPy arrays, and serves them
with `from_tensor_slices` afterwards. The examples are identical; only when they are computed
changes. A bounded LRU keeps memory flat over long runs with large populations.

Only for deterministic preprocessing: a pipeline with random augmentation (e.g. CIFAR's random
crops) would replay the first draw every round, so tasks leave those uncached.
"""

import collections
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff


class CachedClientData(tff.simulation.datasets.ClientData):
  """A ClientData whose clients' (preprocessed) examples are computed once and kept in memory."""

  def __init__(self, client_data: tff.simulation.datasets.ClientData,
               max_clients: Optional[int] = 10_000):
    """Wraps `client_data`.

    Args:
      client_data: The ClientData to cache (usually the result of `.preprocess(fn)`).
      max_clients: At most this many clients are kept (least recently used are dropped);
        None: no bound.
    """
    self._data = client_data
    self._max_clients = max_clients
    self._cache: 'collections.OrderedDict[str, dict]' = collections.OrderedDict()
    self.hits = 0
    self.misses = 0

  @property
  def client_ids(self) -> list[str]:
    return self._data.client_ids

  @property
  def serializable_dataset_fn(self):
    return self._data.serializable_dataset_fn

  @property
  def element_type_structure(self):
    return self._data.element_type_structure

  def client_arrays(self, client_id: str):
    """The client's examples as NumPy arrays (the element structure, a leading example axis)."""
    arrays = self._cache.get(client_id)
    if arrays is None:
      self.misses += 1
      arrays = _dataset_to_arrays(self._data.create_tf_dataset_for_client(client_id),
                                 self.element_type_structure)
      self._cache[client_id] = arrays
      if self._max_clients is not None and len(self._cache) > self._max_clients:
        self._cache.popitem(last=False)
    else:
      self.hits += 1
      self._cache.move_to_end(client_id)
    return arrays

  def create_tf_dataset_for_client(self, client_id: str) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices(self.client_arrays(client_id))


def _dataset_to_arrays(dataset: tf.data.Dataset, element_spec):
  """All elements of a finite dataset of fixed-shape elements, stacked into NumPy arrays."""
  examples = list(dataset.as_numpy_iterator())
  return tf.nest.map_structure(
      lambda s, *values: np.stack(values) if values else np.zeros([0] + s.shape.as_list(),
                                                                   s.dtype.as_numpy_dtype),
      element_spec, *examples)
