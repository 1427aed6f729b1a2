"""CachedClientData serves the wrapped ClientData's examples, computing each client once."""

import collections

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_lab.data import cache


def _data():
  base = tff.simulation.datasets.TestClientData({
      'a': collections.OrderedDict(x=np.arange(6, dtype=np.float32).reshape(3, 2),
                                   y=np.array([0, 1, 2], np.int32)),
      'b': collections.OrderedDict(x=np.ones((2, 2), np.float32), y=np.array([5, 6], np.int32)),
      'c': collections.OrderedDict(x=np.zeros((1, 2), np.float32), y=np.array([9], np.int32)),
  })
  calls = []

  def expensive(dataset):
    calls.append(1)
    return dataset.map(lambda e: collections.OrderedDict(x=e['x'] * 2.0, y=e['y'] + 1))

  return base.preprocess(expensive), calls


def test_same_examples_computed_once():
  data, calls = _data()
  cached = cache.CachedClientData(data)
  for _ in range(3):
    for cid in ('a', 'b'):
      got = list(cached.create_tf_dataset_for_client(cid).as_numpy_iterator())
      want = list(data.create_tf_dataset_for_client(cid).as_numpy_iterator())
      assert len(got) == len(want)
      for g, w in zip(got, want):
        np.testing.assert_array_equal(g['x'], w['x'])
        assert g['y'] == w['y']
  assert (cached.misses, cached.hits) == (2, 4)
  assert cached.client_ids == data.client_ids
  assert cached.create_tf_dataset_for_client('a').element_spec == data.element_type_structure


def test_lru_bound():
  data, _ = _data()
  cached = cache.CachedClientData(data, max_clients=2)
  for cid in ('a', 'b', 'c', 'a'):
    cached.create_tf_dataset_for_client(cid)
  assert cached.misses == 4  # 'a' was evicted by 'c'
  assert isinstance(cached.create_tf_dataset_for_client('c'), tf.data.Dataset)
  assert cached.hits == 1
