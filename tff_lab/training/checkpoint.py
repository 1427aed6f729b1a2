"""Checkpoints of a learning process's full server state, and of whatever else a round keeps.

A checkpoint is one `.npz` file per round. It holds:
- every leaf of the server state (model weights, optimiser moments and step counts, aggregator
  state) as a NumPy array, restored by packing the leaves into the structure of
  `process.initialize()`, so it is exact: a resumed run continues bit for bit;
- optional named `extra` parts (e.g. a per-client state store, an asynchronous queue): nested
  OrderedDicts, lists and tuples of arrays and Python scalars, self-describing, so they are restored
  without a template;
- a SHA-256 checksum over all of the above, in the zip archive's comment (so the arrays a reader
  lists with `np.load` are only the state's and the extra parts').

Writes are atomic (temp file, fsync, rename, fsync of the directory), so a SIGKILL at any moment
leaves either the previous or the new checkpoint, never a torn one. Damage that happens after the
write (a truncated or overwritten file) is caught by the checksum: `restore_latest` skips a damaged
checkpoint, moves it aside as `<name>.damaged`, says so in one warning line, and returns the newest
good one.
"""

import collections
import hashlib
import json
import os
import re
import zipfile
from collections.abc import Mapping
from typing import Any, NamedTuple, Optional

from absl import logging
import numpy as np
import tensorflow as tf

from tff_lab import files

_NAME = re.compile(r'^ckpt_(\d{6,})\.npz$')
_TMP = re.compile(r'^ckpt_(\d{6,})\.npz\.tmp$')
_EXTRA_STRUCTURE_KEY = 'extra_structure'
# The archive comment of a checksummed checkpoint, before the hex digest. Files without it (format
# 1: server state only) are read as before; the zip CRC of each array is still checked then.
_CHECKSUM_PREFIX = 'tff_lab checkpoint v2 sha256='


class CorruptCheckpointError(ValueError):
  """A checkpoint file cannot be read or fails its checksum (damaged after it was written)."""


class Checkpoint(NamedTuple):
  """One restored checkpoint."""
  round_num: int
  state: Any
  extra: 'collections.OrderedDict[str, Any]'


def _path(directory: str, round_num: int) -> str:
  return os.path.join(directory, f'ckpt_{round_num:06d}.npz')


def _digest(arrays: Mapping[str, np.ndarray]) -> str:
  """SHA-256 over each array's name, dtype, shape and bytes, in name order."""
  h = hashlib.sha256()
  for name in sorted(arrays):
    a = np.asarray(arrays[name])
    h.update(f'{name}\0{a.dtype.str}\0{a.shape}\0'.encode())
    h.update(a.tobytes())
  return h.hexdigest()


def _as_array(value: Any, what: str) -> np.ndarray:
  array = np.asarray(value)
  if array.dtype.kind == 'O':
    raise TypeError(f'{what} is not a numeric or string array ({type(value).__name__}); '
                    'checkpoints store no pickled objects')
  return array


def _encode_extra(value: Any, leaves: list, where: str) -> Any:
  """A JSON description of the nested `value`; its arrays are appended to `leaves`."""
  if isinstance(value, Mapping):
    items = []
    for key, item in value.items():
      if isinstance(key, bool) or not isinstance(key, (str, int)):
        raise TypeError(f'checkpoint extra {where}: keys must be str or int, got {key!r}')
      items.append(['s' if isinstance(key, str) else 'i', key,
                    _encode_extra(item, leaves, f'{where}/{key}')])
    return {'dict': items}
  if isinstance(value, (list, tuple)) and not hasattr(value, '_fields'):
    kind = 'list' if isinstance(value, list) else 'tuple'
    return {kind: [_encode_extra(v, leaves, f'{where}/{i}') for i, v in enumerate(value)]}
  if value is None:
    return {'none': 0}
  if isinstance(value, (bool, int, float, str)):
    return {'py': value}  # JSON keeps Python ints and floats exactly (repr round-trips)
  if isinstance(value, (np.ndarray, np.generic, tf.Tensor, tf.Variable)):
    leaves.append(_as_array(value, f'checkpoint extra {where}'))
    return {'array': len(leaves) - 1, 'scalar': isinstance(value, np.generic)}
  raise TypeError(f'checkpoint extra {where} is a {type(value).__name__}; use (Ordered)dicts, '
                  'lists, tuples, NumPy arrays and Python scalars')


def _decode_extra(spec: Any, arrays: Mapping[str, np.ndarray]) -> Any:
  if 'dict' in spec:
    return collections.OrderedDict(
        (key if kind == 's' else int(key), _decode_extra(item, arrays))
        for kind, key, item in spec['dict'])
  if 'list' in spec:
    return [_decode_extra(v, arrays) for v in spec['list']]
  if 'tuple' in spec:
    return tuple(_decode_extra(v, arrays) for v in spec['tuple'])
  if 'none' in spec:
    return None
  if 'py' in spec:
    return spec['py']
  value = arrays[f'extra_{spec["array"]:05d}']
  return value[()] if spec['scalar'] else value


def save_checkpoint(directory: str, round_num: int, state: Any, keep: int = 3, *,
                    extra: Optional[Mapping[str, Any]] = None) -> str:
  """Atomically writes `state` (and `extra`) after round `round_num`; keeps the newest `keep`.

  Args:
    directory: The checkpoint directory (created if missing).
    round_num: The round just completed (0: the initial state).
    state: The learning process's state (any `tf.nest` structure of arrays).
    keep: How many of the newest checkpoints to keep; older ones are deleted.
    extra: Named parts saved in the same file, e.g. `OrderedDict(client_store=...,
      async_queue=...)`: nested (Ordered)dicts with str or int keys, lists and tuples of NumPy
      arrays and Python scalars. `read_checkpoint` and `restore_latest` return them.

  Returns:
    The checkpoint's path.

  Raises:
    TypeError: If `extra` holds something other than the types above.
  """
  leaves = tf.nest.flatten(state)
  arrays = collections.OrderedDict(
      (f'leaf_{i:05d}', _as_array(leaf, f'state leaf {i}')) for i, leaf in enumerate(leaves))
  arrays['round_num'] = np.int64(round_num)
  arrays['num_leaves'] = np.int64(len(leaves))
  if extra is not None and not isinstance(extra, Mapping):
    raise TypeError(f'checkpoint extra must be a mapping of named parts, got '
                    f'{type(extra).__name__}')
  if extra:
    extra_leaves = []
    structure = _encode_extra(extra, extra_leaves, 'extra')
    arrays[_EXTRA_STRUCTURE_KEY] = np.frombuffer(json.dumps(structure).encode(), dtype=np.uint8)
    for i, leaf in enumerate(extra_leaves):
      arrays[f'extra_{i:05d}'] = leaf
  digest = _digest(arrays)
  os.makedirs(directory, exist_ok=True)
  path = _path(directory, round_num)
  tmp = path + '.tmp'
  with open(tmp, 'w+b') as f:
    np.savez(f, **arrays)
    with zipfile.ZipFile(f, 'a') as archive:
      archive.comment = (_CHECKSUM_PREFIX + digest).encode('ascii')
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)
  files.fsync_dir(directory)
  for old in list_checkpoints(directory)[:-keep]:
    os.remove(_path(directory, old))
  for name in os.listdir(directory):  # temp files of writes that a kill interrupted
    if _TMP.match(name) and name != os.path.basename(tmp):
      os.remove(os.path.join(directory, name))
  return path


def list_checkpoints(directory: str) -> list[int]:
  """Rounds that have a checkpoint file in `directory`, ascending (not yet verified)."""
  if not os.path.isdir(directory):
    return []
  rounds = [int(m.group(1)) for m in map(_NAME.match, os.listdir(directory)) if m]
  return sorted(rounds)


def latest_checkpoint(directory: str) -> Optional[int]:
  """The newest round with a checkpoint file, or None (see `restore_latest` to verify it)."""
  rounds = list_checkpoints(directory)
  return rounds[-1] if rounds else None


def _read_arrays(path: str, round_num: int) -> dict[str, np.ndarray]:
  """Every array of the checkpoint at `path`, checked; raises CorruptCheckpointError."""
  try:
    with zipfile.ZipFile(path) as archive:  # not a zip: np.load would try to unpickle it
      comment = archive.comment.decode('ascii')
    with np.load(path, allow_pickle=False) as data:
      arrays = {name: data[name] for name in data.files}
  except FileNotFoundError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (zip, npy and zlib errors alike)
    raise CorruptCheckpointError(f'{path} cannot be read ({type(e).__name__}: {e})') from None
  if comment or _EXTRA_STRUCTURE_KEY in arrays:  # written with a checksum
    if not comment.startswith(_CHECKSUM_PREFIX):
      raise CorruptCheckpointError(f'{path} has no valid checksum')
    if comment[len(_CHECKSUM_PREFIX):] != _digest(arrays):
      raise CorruptCheckpointError(f'{path} fails its SHA-256 checksum')
  missing = [k for k in ('round_num', 'num_leaves') if k not in arrays]
  if missing:
    raise CorruptCheckpointError(f'{path} has no {missing}')
  if int(arrays['round_num']) != round_num:
    raise CorruptCheckpointError(f'{path} holds round {int(arrays["round_num"])}')
  return arrays


def read_checkpoint(directory: str, round_num: int, template: Any) -> Checkpoint:
  """Reads and verifies round `round_num`'s checkpoint; the state takes `template`'s structure.

  Args:
    directory: The checkpoint directory.
    round_num: The round to read.
    template: A state of the same structure, e.g. `process.initialize()`.

  Returns:
    The round, the state and the extra parts (an empty OrderedDict if none were saved).

  Raises:
    FileNotFoundError: If there is no checkpoint of that round.
    CorruptCheckpointError: If the file is damaged (unreadable, or fails its checksum).
    ValueError: If the checkpoint does not match the template's structure, shapes or dtypes (a
      checkpoint from a different model or optimiser).
  """
  path = _path(directory, round_num)
  arrays = _read_arrays(path, round_num)
  template_leaves = tf.nest.flatten(template)
  n = int(arrays['num_leaves'])
  if n != len(template_leaves):
    raise ValueError(f'checkpoint {path} has {n} state leaves, the process expects '
                     f'{len(template_leaves)}: it was written by a different configuration')
  leaves = []
  for i, expected in enumerate(template_leaves):
    value = arrays.get(f'leaf_{i:05d}')
    if value is None:
      raise CorruptCheckpointError(f'{path} has no state leaf {i}')
    expected = np.asarray(expected)
    if value.shape != expected.shape or value.dtype != expected.dtype:
      raise ValueError(f'checkpoint {path} leaf {i} is {value.dtype}{list(value.shape)}, the '
                       f'process expects {expected.dtype}{list(expected.shape)}')
    leaves.append(value if value.ndim else value[()])
  extra = collections.OrderedDict()
  if _EXTRA_STRUCTURE_KEY in arrays:
    try:
      structure = json.loads(arrays[_EXTRA_STRUCTURE_KEY].tobytes().decode())
      extra = _decode_extra(structure, arrays)
    except (ValueError, KeyError, TypeError) as e:  # defensive: the checksum has passed
      raise CorruptCheckpointError(f'{path} has unreadable extra parts ({e})') from None
  return Checkpoint(round_num, tf.nest.pack_sequence_as(template, leaves), extra)


def load_checkpoint(directory: str, round_num: int, template: Any) -> Any:
  """Loads round `round_num`'s state into the structure of `template` (e.g. `initialize()`).

  Raises:
    CorruptCheckpointError: If the file is damaged (a subclass of ValueError).
    ValueError: If the checkpoint does not match the template's structure, shapes or dtypes (a
      checkpoint from a different model or optimiser).
  """
  return read_checkpoint(directory, round_num, template).state


def restore_latest(directory: str, template: Any) -> Optional[Checkpoint]:
  """The newest good checkpoint in `directory`, or None if there is none.

  Newer checkpoints that are damaged are renamed to `<name>.damaged` (kept, but no longer listed)
  and reported in one warning line naming them and the round restored instead.

  Raises:
    ValueError: If the newest good checkpoint does not match the template (other settings).
  """
  damaged = []
  restored = None
  for round_num in reversed(list_checkpoints(directory)):
    try:
      restored = read_checkpoint(directory, round_num, template)
      break
    except CorruptCheckpointError as e:
      damaged.append((round_num, str(e)))
  if damaged:
    for round_num, _ in damaged:
      path = _path(directory, round_num)
      os.replace(path, path + '.damaged')
    files.fsync_dir(directory)
    fallback = (f'resuming from round {restored.round_num}' if restored is not None
                else 'no good checkpoint is left, starting from round 0')
    logging.warning('damaged checkpoint(s) skipped (moved aside as *.damaged): %s; %s',
                    '; '.join(reason for _, reason in damaged), fallback)
  return restored
