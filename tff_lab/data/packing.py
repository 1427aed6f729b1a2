"""Sampled clients' training batches packed into padded arrays, for in-graph simulation.

The in-graph simulation paths (`tff_lab.algorithms.vectorized`) train every sampled client of a
round in one TensorFlow program, which takes the round's data as arrays

    x [C, S, B, ...], y [C, S, B, ...], example_mask [C, S, B]

(C clients, S the most local steps any client takes, B the batch size; `example_mask` is 1 for
real examples, so padding never changes a result). The batches must be exactly those the TFF path
trains on, i.e. what `Task.preprocess_train(dataset, seed)` yields for each client:

    shuffle(buffer, seed) -> repeat(num_epochs) -> take(max_elements) -> batch(batch_size)

Two ways to get them:

* `pack_client_datasets` reads the finished tf.data datasets. General (any preprocessing), but it
  moves every example through tf.data every round: 0.5 s of a 1.4 s round for McMahan et al.'s 2NN
  with 100 clients (BUILD.md, "Where a round's time goes").
* `ClientBatchPacker` runs the same pipeline on example *indices* (`range(n)`) for all clients in
  one traced tf.data program, with each client's shuffle seeds, and gathers the examples from the
  clients' arrays, loaded once per client (`tff_lab.data.cache.CachedClientData`). tf.data's
  shuffle order depends only on its seeds, buffer size and the number of elements, never on the
  elements, so the batches are identical (tested in tests/data/test_packing.py for several
  specs, stragglers and label flipping). Needs fixed-shape examples and no per-round example
  preprocessing (`Task.example_preprocess`).
"""

import functools
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from tensorflow.python.data.ops import dataset_ops  # pylint: disable=g-direct-tensorflow-import
from tensorflow.python.framework import random_seed  # pylint: disable=g-direct-tensorflow-import
from tensorflow.python.ops import gen_dataset_ops  # pylint: disable=g-direct-tensorflow-import

from tff_lab.data import cache as cache_lib
from tff_lab.faults import simulation as faults_lib
from tff_lab.tasks import task as task_lib


def _client_batches(datasets: list[tf.data.Dataset]) -> list[list[tuple[np.ndarray, np.ndarray]]]:
  """Every client's batches as NumPy, in order, read through a single tf.data iterator.

  One iterator per client costs milliseconds each in eager mode, which dominated a round; when
  the batch counts are known statically (they are for TFF's in-memory ClientData through the
  ClientSpec pipeline) the datasets are read in sequence with `choose_from_datasets`.
  """
  counts = [int(ds.cardinality()) for ds in datasets]
  if min(counts, default=0) < 0:  # unknown or infinite cardinality: read one by one
    return [[(b['x'], b['y']) for b in ds.as_numpy_iterator()] for ds in datasets]
  choice = tf.data.Dataset.from_tensor_slices(
      np.repeat(np.arange(len(datasets), dtype=np.int64), counts))
  merged = tf.data.Dataset.choose_from_datasets(datasets, choice)
  batches = iter(merged.as_numpy_iterator())
  return [[(b['x'], b['y']) for b in (next(batches) for _ in range(n))] for n in counts]


def _zeros(example: np.ndarray, clients: int, steps: int, batch: int) -> np.ndarray:
  """Zeros [clients, steps, batch, ...] of `example`'s per-example shape and dtype."""
  return np.zeros((clients, steps, batch) + example.shape[1:], example.dtype)


def pack_client_datasets(datasets: list[tf.data.Dataset]) -> dict[str, np.ndarray]:
  """Stacks batched client datasets into padded arrays with masks.

  Returns:
    `x` [C, S, B, ...], `y` [C, S, B, ...], `example_mask` [C, S, B] (1 for real examples),
    where S is the most batches any client has and B the largest batch size.
  """
  clients = _client_batches(datasets)
  steps = max(1, max(len(c) for c in clients))
  batch = max([len(y) for c in clients for _, y in c] or [1])
  first = next((c[0] for c in clients if c), None)
  if first is None:
    raise ValueError('every sampled client has an empty dataset')
  x, y = (_zeros(a, len(clients), steps, batch) for a in first)
  mask = np.zeros((len(clients), steps, batch), np.float32)
  for k, batches in enumerate(clients):
    for s, (xb, yb) in enumerate(batches):
      x[k, s, :len(yb)] = xb
      y[k, s, :len(yb)] = yb
      mask[k, s, :len(yb)] = 1.0
  return {'x': x, 'y': y, 'example_mask': mask}


class _SeededShuffle(dataset_ops.UnaryUnchangedStructureDataset):
  """`Dataset.shuffle` with its two op seeds given as tensors.

  `Dataset.shuffle(seed=...)` derives its op seeds in Python (`random_seed.get_seed`, combining
  the global seed), which cannot take a per-client tensor inside a traced `flat_map`; this
  creates the same kernel (`ShuffleDatasetV3`, reshuffled each epoch) from seeds computed
  beforehand with that same function.
  """

  def __init__(self, input_dataset, buffer_size, seed, seed2):
    self._input_dataset = input_dataset
    self._name = None
    variant = gen_dataset_ops.shuffle_dataset_v3(
        input_dataset._variant_tensor,  # pylint: disable=protected-access
        buffer_size=tf.cast(buffer_size, tf.int64), seed=seed, seed2=seed2,
        seed_generator=gen_dataset_ops.dummy_seed_generator(),
        reshuffle_each_iteration=True, **self._common_args)
    super().__init__(input_dataset, variant)


@functools.lru_cache(maxsize=8)
def _index_program(buffer_size: int, batch_size: int):
  """A traced program: per-client ClientSpec pipelines over `range(n_k)`, all clients at once."""

  def client_batches(n, seed, seed2, epochs, max_elements, position):
    indices = tf.data.Dataset.range(n)
    if buffer_size > 1:
      indices = _SeededShuffle(indices, buffer_size, seed, seed2)
    indices = indices.repeat(epochs).take(max_elements).batch(batch_size)
    return indices.map(lambda b: (position, tf.pad(b, [[0, batch_size - tf.shape(b)[0]]],
                                                   constant_values=-1)))

  @tf.function(input_signature=[tf.TensorSpec([None], tf.int64)] * 5)
  def program(sizes, seeds, seeds2, epochs, max_elements):
    clients = tf.data.Dataset.from_tensor_slices(
        (sizes, seeds, seeds2, epochs, max_elements, tf.range(tf.size(sizes, out_type=tf.int64))))
    return clients.flat_map(client_batches).batch(2**62).get_single_element()

  return program


def batch_indices(sizes: Sequence[int], shuffle_seeds: Sequence[int],
                  specs: Sequence[task_lib.ClientSpec], buffer_size: int, batch_size: int
                  ) -> list[np.ndarray]:
  """Each client's training batches as example indices, as `Task.preprocess_train` orders them.

  Args:
    sizes: Each client's number of examples.
    shuffle_seeds: Each client's `preprocess_train` seed (combined with TF's global seed exactly
      as `Dataset.shuffle(seed=...)` combines it, so call this where the datasets would be built).
    specs: Each client's ClientSpec (num_epochs and max_elements may differ between clients).
    buffer_size: The shuffle buffer (`Task.shuffle_buffer_size`; ≤ 1 means no shuffling).
    batch_size: The batch size.

  Returns:
    Per client, an int64 array [steps, batch_size] of example indices, -1 past a short batch.
  """
  seeds = np.array([random_seed.get_seed(int(s)) for s in shuffle_seeds], np.int64).reshape(-1, 2)
  epochs = np.array([s.num_epochs for s in specs], np.int64)
  max_elements = np.array([-1 if s.max_elements is None else s.max_elements for s in specs],
                          np.int64)
  positions, indices = _index_program(int(buffer_size), int(batch_size))(
      np.asarray(sizes, np.int64), seeds[:, 0], seeds[:, 1], epochs, max_elements)
  positions, indices = positions.numpy(), indices.numpy()
  bounds = np.searchsorted(positions, np.arange(len(sizes) + 1))  # positions are sorted
  return [indices[bounds[k]:bounds[k + 1]] for k in range(len(sizes))]


class ClientBatchPacker:
  """Packs `tff_lab.faults.ClientPlan`s into padded arrays without building client datasets.

  Each client's examples are loaded once (an LRU of `max_clients`), then every round costs one
  traced index program and a NumPy gather.
  """

  def __init__(self, task: task_lib.Task, num_classes: int, max_clients: int = 10_000):
    """Packs for `task` (`supports(task)` must hold); `num_classes` serves label flipping."""
    if not self.supports(task):
      raise ValueError(f'task {task.name!r} preprocesses examples every round; pack its '
                       'datasets with pack_client_datasets instead')
    self._task = task
    self._num_classes = num_classes
    data = task.train_data
    self._data = (data if isinstance(data, cache_lib.CachedClientData)
                  else cache_lib.CachedClientData(data, max_clients=max_clients))

  @staticmethod
  def supports(task: task_lib.Task) -> bool:
    """Whether the task's raw client examples are what `preprocess_train` shuffles and batches."""
    return task.example_preprocess is None and all(
        s.shape.is_fully_defined() for s in tf.nest.flatten(task.element_spec))

  def pack(self, plans: Sequence[faults_lib.ClientPlan]) -> dict[str, np.ndarray]:
    """The plans' batches: `x`, `y` [C, S, B, ...] and `example_mask` [C, S, B]."""
    if not plans:
      raise ValueError('no client reports this round')
    task = self._task
    batch = task.train_spec.batch_size
    for plan in plans:
      if plan.train_spec.batch_size != batch or (
          plan.train_spec.shuffle_buffer_size != task.train_spec.shuffle_buffer_size):
        raise ValueError(f'client {plan.client_id}: only num_epochs and max_elements may differ '
                         "from the task's ClientSpec")
    arrays = [self._data.client_arrays(plan.client_id) for plan in plans]
    indices = batch_indices([len(a['y']) for a in arrays], [p.shuffle_seed for p in plans],
                            [p.train_spec for p in plans], task.shuffle_buffer_size, batch)
    steps = max(1, max(len(i) for i in indices))
    x, y = (_zeros(arrays[0][key], len(plans), steps, batch) for key in ('x', 'y'))
    mask = np.zeros((len(plans), steps, batch), np.float32)
    for k, (plan, client, rows) in enumerate(zip(plans, arrays, indices)):
      valid = rows >= 0
      take = np.where(valid, rows, 0)
      steps_k = len(rows)
      np.take(client['x'], take, axis=0, out=x[k, :steps_k])
      np.take(client['y'], take, axis=0, out=y[k, :steps_k])
      x[k, :steps_k][~valid] = 0  # padding past a short batch is zero, as in pack_client_datasets
      y[k, :steps_k][~valid] = 0
      if plan.flip_labels:
        y[k, :steps_k][valid] = faults_lib.flipped_labels(
            y[k, :steps_k][valid], task.prediction_kind, self._num_classes)
      mask[k, :steps_k] = valid
    return {'x': x, 'y': y, 'example_mask': mask}
