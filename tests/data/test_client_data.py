"""Arrays to ClientData, per-client splits and pooling."""

import numpy as np
import pytest

from tff_lab.data import client_data


def test_from_arrays_roundtrip():
  rng = np.random.default_rng(0)
  arrays = {'a': (rng.normal(size=(3, 2)).astype(np.float32), np.arange(3)),
            'b': (rng.normal(size=(5, 2)).astype(np.float32), np.arange(5))}
  data = client_data.from_arrays(arrays)
  assert sorted(data.client_ids) == ['a', 'b']
  got = list(data.create_tf_dataset_for_client('b').as_numpy_iterator())
  np.testing.assert_array_equal(np.stack([e['x'] for e in got]), arrays['b'][0])
  np.testing.assert_array_equal([e['y'] for e in got], arrays['b'][1])


@pytest.mark.parametrize('arrays, match', [
    ({}, 'at least one client'),
    ({'a': (np.zeros((2, 1)), np.zeros(3))}, 'x has 2 examples but y has 3'),
    ({'a': (np.zeros((0, 1)), np.zeros(0))}, 'no examples'),
])
def test_from_arrays_rejects_bad_input(arrays, match):
  with pytest.raises(ValueError, match=match):
    client_data.from_arrays(arrays)


def test_split_clients_keeps_every_example_once():
  x = np.arange(100, dtype=np.float32)[:, None]
  y = np.arange(100)
  parts = [np.arange(0, 30), np.arange(30, 32), np.arange(32, 100)]
  train, test = client_data.split_clients(x, y, parts, 0.2, seed=0)
  assert list(train) == list(test) == client_data.client_ids_for(3)
  for cid, part in zip(train, parts):
    joined = np.sort(np.concatenate([train[cid][1], test[cid][1]]))
    np.testing.assert_array_equal(joined, part)
    assert len(train[cid][1]) >= 1 and len(test[cid][1]) >= 1
  px, py = client_data.pool(test)
  assert len(px) == len(py) == sum(len(t[1]) for t in test.values())


def test_split_clients_rejects_tiny_clients_and_bad_fraction():
  x, y = np.zeros((3, 1)), np.zeros(3)
  with pytest.raises(ValueError, match='needs 2'):
    client_data.split_clients(x, y, [np.array([0]), np.array([1, 2])], 0.5, 0)
  with pytest.raises(ValueError, match='test_fraction'):
    client_data.split_clients(x, y, [np.array([0, 1, 2])], 1.0, 0)


def test_client_ids_sort_numerically():
  ids = client_data.client_ids_for(12)
  assert ids == sorted(ids) and ids[0] == 'client_00' and ids[-1] == 'client_11'
