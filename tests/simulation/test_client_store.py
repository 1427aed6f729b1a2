"""The client store: lazy per-client state, a server part, and an exact checkpoint round trip."""

import collections

import numpy as np

from tff_lab.simulation import client_store
from tff_lab.training import checkpoint


def _store():
  return client_store.ClientStore(
      lambda: collections.OrderedDict(v=[np.zeros((2, 3), np.float32), np.zeros(4, np.float32)]),
      initial_server_state=collections.OrderedDict(c=[np.ones(3, np.float32)]))


def test_state_is_lazy_and_copied():
  store = _store()
  fresh = store.get('a')
  assert 'a' not in store and len(store) == 0  # reading stores nothing
  fresh['v'][0][0, 0] = 5.0
  assert store.get('a')['v'][0][0, 0] == 0.0  # a copy, not the initial state itself
  store.set('a', fresh)
  fresh['v'][0][0, 0] = 7.0
  assert store.get('a')['v'][0][0, 0] == 5.0 and 'a' in store and len(store) == 1
  assert store.nbytes == (6 + 4) * 4 + 3 * 4


def test_checkpoint_round_trip_after_changes(tmp_path):
  rng = np.random.default_rng(0)
  store = _store()
  for cid in ('c1', 'c7', 'c3'):
    store.set(cid, collections.OrderedDict(v=[rng.normal(size=(2, 3)).astype(np.float32),
                                              rng.normal(size=4).astype(np.float32)]))
  store.server = collections.OrderedDict(c=[rng.normal(size=3).astype(np.float32)])
  checkpoint.save_checkpoint(str(tmp_path), 4, [np.zeros(1)],
                             extra={'client_store': store.to_checkpoint()})
  saved = checkpoint.read_checkpoint(str(tmp_path), 4, [np.zeros(1)]).extra['client_store']
  restored = _store()
  restored.restore(saved)
  assert len(restored) == 3 and 'c7' in restored
  for cid in ('c1', 'c7', 'c3', 'never'):
    for a, b in zip(store.get(cid)['v'], restored.get(cid)['v']):
      np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(store.server['c'][0], restored.server['c'][0])
