"""Exact, atomic checkpoints of the full server state."""

import os

import numpy as np
import pytest

from tff_lab import algorithms
from tff_lab import tasks
from tff_lab.training import checkpoint


@pytest.fixture(scope='module')
def process():
  task = tasks.create_task('seed_linear')
  return algorithms.build_fedavg(task, algorithms.create_optimizer('sgd', 0.1),
                                 algorithms.create_optimizer('adam', 0.01))


def test_roundtrip_is_exact_and_keeps_structure(process, tmp_path):
  state = process.initialize()
  checkpoint.save_checkpoint(str(tmp_path), 4, state)
  restored = checkpoint.load_checkpoint(str(tmp_path), 4, process.initialize())
  assert type(restored) is type(state)
  np.testing.assert_array_equal(process.get_model_weights(restored).trainable[0],
                                process.get_model_weights(state).trainable[0])
  assert restored.finalizer['step'] == state.finalizer['step']  # Adam's step count survives
  assert restored.finalizer.keys() == state.finalizer.keys()


def test_keeps_newest_and_ignores_partial_files(process, tmp_path):
  state = process.initialize()
  for r in range(1, 6):
    checkpoint.save_checkpoint(str(tmp_path), r, state, keep=2)
  (tmp_path / 'ckpt_000009.npz.tmp').write_bytes(b'torn write')
  assert checkpoint.list_checkpoints(str(tmp_path)) == [4, 5]
  assert checkpoint.latest_checkpoint(str(tmp_path)) == 5
  assert checkpoint.latest_checkpoint(str(tmp_path / 'missing')) is None


def test_mismatched_structure_is_refused(process, tmp_path):
  checkpoint.save_checkpoint(str(tmp_path), 1, process.initialize())
  other = algorithms.build_fedavg(tasks.create_task('seed_linear'),
                                  algorithms.create_optimizer('sgd', 0.1))
  with pytest.raises(ValueError, match='different configuration'):
    checkpoint.load_checkpoint(str(tmp_path), 1, other.initialize())
  assert os.path.exists(tmp_path / 'ckpt_000001.npz')
