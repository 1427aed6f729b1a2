"""Checkpoints of a learning process's full server state.

A checkpoint holds every leaf of the state structure (model weights, optimiser moments and step
counts, aggregator state) as NumPy arrays in one `.npz`, plus the round number. It is restored by
packing the leaves into the structure of `process.initialize()`, so it is exact: a resumed run
continues bit for bit. Writes are atomic (temp file, fsync, rename), so a SIGKILL at any moment
leaves either the previous or the new checkpoint, never a torn one.
"""

import os
import re
from typing import Any, Optional

import numpy as np
import tensorflow as tf

_NAME = re.compile(r'^ckpt_(\d{6,})\.npz$')


def _path(directory: str, round_num: int) -> str:
  return os.path.join(directory, f'ckpt_{round_num:06d}.npz')


def save_checkpoint(directory: str, round_num: int, state: Any, keep: int = 3) -> str:
  """Atomically writes `state` after round `round_num`; keeps the newest `keep` checkpoints."""
  os.makedirs(directory, exist_ok=True)
  leaves = tf.nest.flatten(state)
  arrays = {f'leaf_{i:05d}': np.asarray(leaf) for i, leaf in enumerate(leaves)}
  path = _path(directory, round_num)
  tmp = path + '.tmp'
  with open(tmp, 'wb') as f:
    np.savez(f, round_num=np.int64(round_num), num_leaves=np.int64(len(leaves)), **arrays)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)
  for old in list_checkpoints(directory)[:-keep]:
    os.remove(_path(directory, old))
  return path


def list_checkpoints(directory: str) -> list[int]:
  """Rounds that have a complete checkpoint in `directory`, ascending."""
  if not os.path.isdir(directory):
    return []
  rounds = [int(m.group(1)) for m in map(_NAME.match, os.listdir(directory)) if m]
  return sorted(rounds)


def latest_checkpoint(directory: str) -> Optional[int]:
  rounds = list_checkpoints(directory)
  return rounds[-1] if rounds else None


def load_checkpoint(directory: str, round_num: int, template: Any) -> Any:
  """Loads round `round_num`'s state into the structure of `template` (e.g. `initialize()`).

  Raises:
    ValueError: If the checkpoint does not match the template's structure, shapes or dtypes (a
      checkpoint from a different model or optimiser).
  """
  path = _path(directory, round_num)
  template_leaves = tf.nest.flatten(template)
  with np.load(path) as data:
    n = int(data['num_leaves'])
    if n != len(template_leaves):
      raise ValueError(f'checkpoint {path} has {n} state leaves, the process expects '
                       f'{len(template_leaves)}: it was written by a different configuration')
    leaves = []
    for i, expected in enumerate(template_leaves):
      value = data[f'leaf_{i:05d}']
      expected = np.asarray(expected)
      if value.shape != expected.shape or value.dtype != expected.dtype:
        raise ValueError(f'checkpoint {path} leaf {i} is {value.dtype}{list(value.shape)}, the '
                         f'process expects {expected.dtype}{list(expected.shape)}')
      leaves.append(value if value.ndim else value[()])
  return tf.nest.pack_sequence_as(template, leaves)
