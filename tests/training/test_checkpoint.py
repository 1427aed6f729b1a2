"""Exact, atomic, checksummed checkpoints of the full server state and of named extra parts."""

import collections
import os
import zipfile

from absl import logging
import numpy as np
import pytest
import tensorflow as tf

from tff_lab import algorithms
from tff_lab import tasks
from tff_lab.training import checkpoint


@pytest.fixture(scope='module')
def process():
  task = tasks.create_task('seed_linear')
  return algorithms.build_fedavg(task, algorithms.create_optimizer('sgd', 0.1),
                                 algorithms.create_optimizer('adam', 0.01))


def _state(process, shift):
  """A state whose weights are distinct per `shift`, so rounds can be told apart."""
  state = process.initialize()
  weights = process.get_model_weights(state)
  return process.set_model_weights(state, type(weights)(
      trainable=[np.asarray(w) + shift for w in weights.trainable],
      non_trainable=list(weights.non_trainable)))


def _first_weight(process, state):
  return np.asarray(process.get_model_weights(state).trainable[0])


@pytest.fixture
def warnings(monkeypatch):
  """The absl warnings logged, one string each."""
  logged = []
  monkeypatch.setattr(logging, 'warning', lambda msg, *args: logged.append(msg % args))
  return logged


def test_roundtrip_is_exact_and_keeps_structure(process, tmp_path):
  state = process.initialize()
  checkpoint.save_checkpoint(str(tmp_path), 4, state)
  with np.load(tmp_path / 'ckpt_000004.npz') as data:  # only the state's arrays are listed
    assert sorted(data.files) == sorted(
        ['round_num', 'num_leaves'] + [f'leaf_{i:05d}' for i in range(len(tf.nest.flatten(state)))])
  restored = checkpoint.load_checkpoint(str(tmp_path), 4, process.initialize())
  assert type(restored) is type(state)
  np.testing.assert_array_equal(process.get_model_weights(restored).trainable[0],
                                process.get_model_weights(state).trainable[0])
  assert restored.finalizer['step'] == state.finalizer['step']  # Adam's step count survives
  assert restored.finalizer.keys() == state.finalizer.keys()


def test_extra_parts_roundtrip_exactly(process, tmp_path):
  rng = np.random.default_rng(0)
  store = collections.OrderedDict(
      (f'client_{i}', collections.OrderedDict(c=rng.normal(size=(3, 2)).astype(np.float32),
                                              steps=np.int64(i)))
      for i in (7, 2, 5))  # insertion order, not sorted order, must survive
  queue = [(3, 'client_2', rng.normal(size=4)), (4, 'client_5', rng.normal(size=4))]
  extra = collections.OrderedDict(client_store=store, async_queue=queue,
                                  clock=collections.OrderedDict(time=0.1 + 0.2, ids={1: 'a'}),
                                  empty=None)
  checkpoint.save_checkpoint(str(tmp_path), 3, _state(process, 1.0), extra=extra)
  ckpt = checkpoint.read_checkpoint(str(tmp_path), 3, process.initialize())
  assert ckpt.round_num == 3
  np.testing.assert_array_equal(_first_weight(process, ckpt.state),
                                _first_weight(process, _state(process, 1.0)))
  assert isinstance(ckpt.extra, collections.OrderedDict)
  assert list(ckpt.extra) == list(extra)
  assert list(ckpt.extra['client_store']) == ['client_7', 'client_2', 'client_5']
  for cid, part in store.items():
    got = ckpt.extra['client_store'][cid]
    assert got['c'].dtype == np.float32 and got['c'].tobytes() == part['c'].tobytes()
    assert got['steps'] == part['steps'] and isinstance(got['steps'], np.int64)
  assert isinstance(ckpt.extra['async_queue'], list)
  for (r, cid, update), got in zip(queue, ckpt.extra['async_queue']):
    assert isinstance(got, tuple) and got[:2] == (r, cid)
    np.testing.assert_array_equal(got[2], update)
  assert ckpt.extra['clock']['time'] == 0.1 + 0.2  # Python floats exactly
  assert ckpt.extra['clock']['ids'] == {1: 'a'} and ckpt.extra['empty'] is None
  # A checkpoint without extra parts reads back an empty OrderedDict.
  checkpoint.save_checkpoint(str(tmp_path), 4, process.initialize())
  assert checkpoint.read_checkpoint(str(tmp_path), 4, process.initialize()).extra == {}


@pytest.mark.parametrize('extra, match', [
    ([1, 2], 'mapping of named parts'),
    ({'x': object()}, 'extra/x is a object'),
    ({'x': {(1, 2): np.zeros(1)}}, 'keys must be str or int'),
    ({'x': np.array([object()])}, 'no pickled objects'),
])
def test_bad_extra_is_refused_before_writing(process, tmp_path, extra, match):
  with pytest.raises(TypeError, match=match):
    checkpoint.save_checkpoint(str(tmp_path), 1, process.initialize(), extra=extra)
  assert not os.path.exists(tmp_path / 'ckpt_000001.npz')


def test_keeps_newest_and_ignores_partial_files(process, tmp_path):
  state = process.initialize()
  for r in range(1, 6):
    checkpoint.save_checkpoint(str(tmp_path), r, state, keep=2)
  (tmp_path / 'ckpt_000009.npz.tmp').write_bytes(b'torn write')
  assert checkpoint.list_checkpoints(str(tmp_path)) == [4, 5]
  assert checkpoint.latest_checkpoint(str(tmp_path)) == 5
  assert checkpoint.latest_checkpoint(str(tmp_path / 'missing')) is None
  checkpoint.save_checkpoint(str(tmp_path), 6, state, keep=2)  # cleans up the torn temp file
  assert sorted(os.listdir(tmp_path)) == ['ckpt_000005.npz', 'ckpt_000006.npz']


def test_mismatched_structure_is_refused(process, tmp_path):
  checkpoint.save_checkpoint(str(tmp_path), 1, process.initialize())
  other = algorithms.build_fedavg(tasks.create_task('seed_linear'),
                                  algorithms.create_optimizer('sgd', 0.1))
  with pytest.raises(ValueError, match='different configuration'):
    checkpoint.load_checkpoint(str(tmp_path), 1, other.initialize())
  with pytest.raises(ValueError, match='different configuration'):  # not taken for damage
    checkpoint.restore_latest(str(tmp_path), other.initialize())
  assert os.path.exists(tmp_path / 'ckpt_000001.npz')


def _truncate(path):
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])


def _overwrite_start(path):
  data = path.read_bytes()
  path.write_bytes(b'garbage!' * 8 + data[64:])  # no longer a zip: NumPy tries to unpickle it


def _flip_a_stored_bit(path):
  data = bytearray(path.read_bytes())
  data[len(data) // 3] ^= 1  # inside the stored arrays
  path.write_bytes(bytes(data))


def _flip_a_weight_bit_keeping_the_zip_valid(path):
  # Re-save one array with a bit flipped and the original archive comment: a valid zip with
  # valid CRCs, which only the checksum can tell from the original.
  with zipfile.ZipFile(path) as archive:
    comment = archive.comment
  with np.load(path) as data:
    arrays = {k: data[k] for k in data.files}
  leaf = arrays['leaf_00000'].copy()
  leaf.view(np.uint8).flat[0] ^= 1
  arrays['leaf_00000'] = leaf
  with open(path, 'wb') as f:
    np.savez(f, **arrays)
  with zipfile.ZipFile(path, 'a') as archive:
    archive.comment = comment


def _drop_the_checksum(path):
  with zipfile.ZipFile(path, 'a') as archive:
    archive.comment = b''  # a checkpoint with extra parts always has one


@pytest.mark.parametrize('damage', [_truncate, _overwrite_start, _flip_a_stored_bit,
                                    _flip_a_weight_bit_keeping_the_zip_valid, _drop_the_checksum])
def test_damaged_newest_falls_back_with_one_warning(process, tmp_path, warnings, damage):
  for r in (1, 2, 3):
    checkpoint.save_checkpoint(str(tmp_path), r, _state(process, float(r)),
                               extra={'round_tag': np.int64(r)})
  damage(tmp_path / 'ckpt_000003.npz')
  with pytest.raises(checkpoint.CorruptCheckpointError, match='ckpt_000003.npz'):
    checkpoint.load_checkpoint(str(tmp_path), 3, process.initialize())
  assert not warnings
  restored = checkpoint.restore_latest(str(tmp_path), process.initialize())
  assert restored.round_num == 2 and restored.extra['round_tag'] == 2
  np.testing.assert_array_equal(_first_weight(process, restored.state),
                                _first_weight(process, _state(process, 2.0)))
  assert len(warnings) == 1 and '\n' not in warnings[0]
  assert 'ckpt_000003.npz' in warnings[0] and 'resuming from round 2' in warnings[0]
  # The damaged file is kept for inspection but no longer listed.
  assert (tmp_path / 'ckpt_000003.npz.damaged').exists()
  assert checkpoint.list_checkpoints(str(tmp_path)) == [1, 2]
  assert checkpoint.restore_latest(str(tmp_path), process.initialize()).round_num == 2
  assert len(warnings) == 1  # said once


def test_all_damaged_restores_nothing(process, tmp_path, warnings):
  for r in (0, 1):
    checkpoint.save_checkpoint(str(tmp_path), r, process.initialize())
    _truncate(tmp_path / f'ckpt_{r:06d}.npz')
  assert checkpoint.restore_latest(str(tmp_path), process.initialize()) is None
  assert len(warnings) == 1 and 'no good checkpoint is left' in warnings[0]
  assert 'ckpt_000000.npz' in warnings[0] and 'ckpt_000001.npz' in warnings[0]
  assert checkpoint.restore_latest(str(tmp_path / 'missing'), process.initialize()) is None


def test_format_1_checkpoint_without_checksum_still_loads(process, tmp_path):
  # A checkpoint written before checksums existed (server state only).
  state = _state(process, 0.5)
  leaves = tf.nest.flatten(state)
  with open(tmp_path / 'ckpt_000002.npz', 'wb') as f:
    np.savez(f, round_num=np.int64(2), num_leaves=np.int64(len(leaves)),
             **{f'leaf_{i:05d}': np.asarray(leaf) for i, leaf in enumerate(leaves)})
  restored = checkpoint.restore_latest(str(tmp_path), process.initialize())
  assert restored.round_num == 2 and restored.extra == {}
  np.testing.assert_array_equal(_first_weight(process, restored.state),
                                _first_weight(process, state))


class _Killed(BaseException):
  """Stands in for SIGKILL: nothing after it runs."""


@pytest.mark.parametrize('kill_at', ['savez', 'fsync', 'replace'])
def test_kill_during_write_leaves_previous_checkpoint(process, tmp_path, monkeypatch, warnings,
                                                      kill_at):
  checkpoint.save_checkpoint(str(tmp_path), 1, _state(process, 1.0))
  before = (tmp_path / 'ckpt_000001.npz').read_bytes()

  real_savez = np.savez

  def die(*args, **kwargs):
    if kill_at == 'savez':  # half of the archive reaches the disk
      real_savez(*args, **kwargs)
      args[0].truncate(args[0].tell() // 2)
    raise _Killed()

  with monkeypatch.context() as m:
    m.setattr(np if kill_at == 'savez' else os, kill_at, die)
    with pytest.raises(_Killed):
      checkpoint.save_checkpoint(str(tmp_path), 2, _state(process, 2.0))
  assert (tmp_path / 'ckpt_000002.npz.tmp').exists()  # a torn or unsynced write is left ...
  assert checkpoint.list_checkpoints(str(tmp_path)) == [1]  # ... but is not a checkpoint
  assert (tmp_path / 'ckpt_000001.npz').read_bytes() == before
  restored = checkpoint.restore_latest(str(tmp_path), process.initialize())
  assert restored.round_num == 1 and not warnings
  np.testing.assert_array_equal(_first_weight(process, restored.state),
                                _first_weight(process, _state(process, 1.0)))
