"""A task on your own arrays: `tasks.from_arrays(x, y, partition=..., model_fn=..., ...)`.

The examples are split across clients by one of the toolkit's partitioners
(`tff_lab.data.partition`: `iid`; `dirichlet` label skew, Hsu et al. 2019, arXiv:1909.06335;
McMahan et al. 2017's `shards`, arXiv:1602.05629), by a natural grouping (`partition='natural'`
with `groups`, one group id per example: a writer, a hospital, ...; LEAF's partition), or by
index arrays you give. Each client's examples are then split into its own train and test sets
(LEAF style), and the pooled test sets are the centralised test set. The result is a
`tff_lab.tasks.Task` like the built-in ones, so every algorithm, aggregator and backend runs on
it; register a builder that calls this (`tff_lab.tasks.register`) to select it with `--task`.
"""

from typing import Callable, Optional, Sequence, Union

import numpy as np
import tensorflow as tf

from tff_lab.data import client_data
from tff_lab.data import partition as partition_lib
from tff_lab.metrics import accuracy as accuracy_lib
from tff_lab.tasks import task as task_lib

PARTITIONS = ('iid', 'dirichlet', 'shards', 'natural')
# The loss that goes with each kind of prediction, when none is given.
_DEFAULT_LOSSES = {'sparse_categorical': tf.keras.losses.SparseCategoricalCrossentropy,
                   'binary': tf.keras.losses.BinaryCrossentropy,
                   'multi_label': tf.keras.losses.BinaryCrossentropy,
                   'sign': tf.keras.losses.MeanSquaredError}


def from_arrays(x: np.ndarray, y: np.ndarray, *, model_fn: Callable[[], tf.keras.Model],
                prediction_kind: str = 'sparse_categorical',
                partition: Union[str, Sequence[np.ndarray]] = 'iid', num_clients: int = 10,
                alpha: float = 0.5, shards_per_client: int = 2,
                groups: Optional[np.ndarray] = None, test_fraction: float = 0.2,
                loss_fn: Optional[Callable[[], tf.keras.losses.Loss]] = None, seed: int = 0,
                name: str = 'arrays', description: str = '') -> task_lib.Task:
  """A federated task on arrays `x` (features, first axis the examples) and `y` (labels).

  Args:
    x: Features; `x[i]` is example i (any shape the model takes).
    y: Labels, one per example.
    model_fn: Builds a fresh (uncompiled) Keras model taking `x[i]`-shaped inputs.
    prediction_kind: How a prediction counts as correct (`tff_lab.metrics.accuracy.KINDS`).
    partition: `iid`, `dirichlet` (α = `alpha`), `shards` (`shards_per_client` label-sorted
      shards each), `natural` (one client per distinct value of `groups`), or one array of
      example indices per client.
    num_clients: Clients of the `iid`, `dirichlet` and `shards` partitions.
    alpha: Dirichlet concentration (smaller: more skewed).
    shards_per_client: Shards per client of the `shards` partition.
    groups: With `partition='natural'`, each example's group id.
    test_fraction: Fraction of each client's examples held out for its evaluation, in (0, 1).
    loss_fn: Builds the loss; by default the usual one of `prediction_kind` (categorical
      cross-entropy, binary cross-entropy, or squared error for `sign`).
    seed: Seeds the partition and the train/test splits.
    name: The task's name (in summaries).
    description: One line about the data.

  Raises:
    ValueError: One line, for arrays of different lengths, an unknown partition or prediction
      kind, a partition whose arguments are wrong, or a client with fewer than two examples.
  """
  x, y = np.asarray(x), np.asarray(y)
  if x.ndim == 0 or y.ndim == 0 or len(x) != len(y):
    raise ValueError(f'from_arrays needs x and y with one entry per example, got shapes '
                     f'{x.shape} and {y.shape}')
  if prediction_kind not in accuracy_lib.KINDS:
    raise ValueError(f'unknown prediction_kind {prediction_kind!r}; choose one of '
                     f'{list(accuracy_lib.KINDS)}')
  if loss_fn is None:
    if prediction_kind not in _DEFAULT_LOSSES:
      raise ValueError(f'prediction_kind={prediction_kind!r} has no default loss: give loss_fn')
    loss_fn = _DEFAULT_LOSSES[prediction_kind]
  if not callable(model_fn):
    raise ValueError(f'model_fn must build a Keras model, got {model_fn!r}')
  parts = _partition(partition, y, num_clients, alpha, shards_per_client, groups, seed)
  train, test = client_data.split_clients(x, y, parts, test_fraction, seed)
  how = partition if isinstance(partition, str) else 'given indices'
  return task_lib.Task(
      name=name, train_data=client_data.from_arrays(train),
      test_data=client_data.from_arrays(test), centralized_test_data=client_data.pool(test),
      model_fn=model_fn, loss_fn=loss_fn, prediction_kind=prediction_kind,
      description=description or f'{len(x)} examples over {len(parts)} clients ({how})')


def _partition(partition, y, num_clients, alpha, shards_per_client, groups, seed
               ) -> list[np.ndarray]:
  if not isinstance(partition, str):
    parts = [np.asarray(p, np.int64) for p in partition]
    flat = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    if not parts or flat.min(initial=0) < 0 or flat.max(initial=0) >= len(y):
      raise ValueError(f'partition indices must index the {len(y)} examples')
    return parts
  if partition not in PARTITIONS:
    raise ValueError(f'unknown partition {partition!r}; choose one of {list(PARTITIONS)} or give '
                     'one index array per client')
  if partition == 'natural':
    if groups is None or len(groups) != len(y):
      raise ValueError("partition='natural' needs groups: one group id per example")
    return partition_lib.partition_natural(np.asarray(groups), min_size=2)[1]
  if groups is not None:
    raise ValueError(f"groups only applies to partition='natural', not {partition!r}")
  labels = y if y.ndim == 1 else y.reshape(len(y), -1)[:, 0]
  return partition_lib.partition_labels(partition, labels.astype(np.int64), num_clients, seed,
                                        alpha=alpha, shards_per_client=shards_per_client,
                                        min_size=2)
