"""Federated and centralised evaluation on the fast path: every test example through one TF graph.

`tff_lab.evaluation.federated` evaluates each test client in TFF's runtime (a `federated_map` of a
per-client `dataset.reduce`, then `federated_sum`), and `tff_lab.evaluation.centralized` runs a
Keras model eagerly, batch by batch. Both are the reference. With an in-graph backend
(`--simulation=fused|vectorized`) the training loop evaluates with `FusedEvaluation` instead,
which computes the same sums:

* The task's Keras model runs in one `tf.function` (the weights assigned, then the forward pass)
  on the examples of many clients at once: the test clients' examples are read once,
  concatenated, and run in chunks of `CHUNK_EXAMPLES`. It returns each example's loss (the
  task's loss with no reduction) and whether it is predicted correctly
  (`tff_lab.metrics.accuracy.correct_predictions`). Inside a `tf.function`, as inside TFF's, a
  softmax output keeps its logits (`_keras_logits`), so the cross-entropy is computed from the
  logits there too, not from probabilities clipped at 1e-7.
* Per client, NumPy adds up the examples' losses, hits, examples and predictions
  (`np.bincount` over the client index), in float64. The per-client accuracy and its histogram
  bin are computed in float32 exactly as the TFF computation computes them, so the histogram
  (and the 10th and 90th percentiles read off it, `federated.summarize`) is the same.

A sum over examples does not depend on how they are batched, so only float round-off separates
the two paths (`tests/evaluation/test_fused.py` checks them against each other). That holds for
losses that are a mean of per-example terms and one prediction per example; `next_token` tasks
(a per-batch mean over tokens), `multi_label` ones and models with non-trainable weights (batch
norm) keep the TFF evaluation (`supports`).
"""

import collections
from typing import Any, Callable, Optional, Sequence

import numpy as np
import tensorflow as tf

from tff_lab.evaluation import federated
from tff_lab.metrics import accuracy as accuracy_lib
from tff_lab.tasks import task as task_lib

# Examples per run of the graph (memory-bound: activations of this many examples at once).
CHUNK_EXAMPLES = 4096
# Prediction kinds with one prediction per example (next_token and multi_label count a variable
# number per example: tokens that are not padding, true labels).
_PER_EXAMPLE_KINDS = ('sign', 'binary', 'sparse_categorical')


def supports(task: task_lib.Task) -> bool:
  """Whether `FusedEvaluation` computes `task`'s evaluation sums (else: the TFF evaluation)."""
  if task.prediction_kind not in _PER_EXAMPLE_KINDS:
    return False
  model = task.model_fn()
  return not model.non_trainable_weights


def _client_arrays(client_data, client_id: str) -> tuple[np.ndarray, np.ndarray]:
  """One test client's examples `(x, y)` as NumPy arrays."""
  if hasattr(client_data, 'client_arrays'):  # tff_lab.data.cache.CachedClientData
    arrays = client_data.client_arrays(client_id)
    return np.asarray(arrays['x']), np.asarray(arrays['y'])
  xs, ys = [], []
  for batch in client_data.create_tf_dataset_for_client(client_id).batch(
      CHUNK_EXAMPLES).as_numpy_iterator():
    xs.append(batch['x'])
    ys.append(batch['y'])
  spec = client_data.element_type_structure
  if not xs:
    return tuple(np.zeros([0] + spec[k].shape.as_list(), spec[k].dtype.as_numpy_dtype)
                 for k in ('x', 'y'))
  return np.concatenate(xs), np.concatenate(ys)


class FusedEvaluation:
  """The evaluation sums of `federated.evaluate_federated` and `centralized.evaluate_centralized`,
  computed in one `tf.function` (see the module docstring)."""

  def __init__(self, task: task_lib.Task):
    """Checks the task; the model and its `tf.function` are made at the first evaluation,
    after the run's TFF tracing (a Keras model made inside TFF's graphs invalidates the models
    made before).

    Args:
      task: The task (`supports(task)` must hold).

    Raises:
      ValueError: For a task `supports` refuses.
    """
    if not supports(task):
      raise ValueError(f'task {task.name!r}: the fused evaluation needs one prediction per '
                       'example and no non-trainable weights (next_token and multi_label tasks '
                       'and batch norm use TFF)')
    self._task = task
    self._per_example_fn = None  # made at the first evaluation (see above)
    self._test_examples = None  # (x, y, sizes), read at the first evaluation

  def _build(self):
    """The per-example `tf.function` on a new Keras model of the task."""
    model = self._task.model_fn()
    loss = self._task.loss_fn(reduction=tf.keras.losses.Reduction.NONE)
    kind = self._task.prediction_kind

    @tf.function(reduce_retracing=True)  # one trace for every chunk size
    def per_example(weights, x, y):
      for var, value in zip(model.trainable_variables, weights):
        var.assign(value)
      preds = model(x, training=False)
      return tf.reshape(loss(y, preds), [-1]), accuracy_lib.correct_predictions(kind, y, preds)

    return per_example

  def _per_example(self, weights, x: np.ndarray, y: np.ndarray):
    """Each example's loss and whether it is predicted correctly (float64)."""
    if self._per_example_fn is None:
      self._per_example_fn = self._build()
    losses, correct = [], []
    trainable = [tf.constant(w, tf.float32) for w in weights.trainable]
    for start in range(0, len(y), CHUNK_EXAMPLES):
      loss, hits = self._per_example_fn(trainable, x[start:start + CHUNK_EXAMPLES],
                                        y[start:start + CHUNK_EXAMPLES])
      losses.append(loss.numpy())
      correct.append(hits.numpy())
    if not losses:
      return np.zeros(0), np.zeros(0)
    return np.concatenate(losses).astype(np.float64), np.concatenate(correct).astype(np.float64)

  def _load_test_clients(self, client_ids: Sequence[str]):
    arrays = [_client_arrays(self._task.test_data, c) for c in client_ids]
    sizes = np.array([len(y) for _, y in arrays], np.int64)
    x = np.concatenate([a for a, _ in arrays]) if arrays else None
    y = np.concatenate([b for _, b in arrays]) if arrays else None
    return x, y, sizes

  def _client_sums(self, weights, client_ids: Optional[Sequence[str]], chunk_clients: int):
    """Per chunk of `chunk_clients` clients: each client's loss sum, correct predictions and
    examples (float64 arrays). `client_ids` None: every test client, read once and kept."""
    ids = list(client_ids if client_ids is not None else self._task.test_data.client_ids)
    if client_ids is None:
      if self._test_examples is None:
        self._test_examples = self._load_test_clients(ids)
      x, y, sizes = self._test_examples
    else:
      x, y, sizes = self._load_test_clients(ids)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    for first in range(0, len(ids), chunk_clients):
      last = min(first + chunk_clients, len(ids))
      lo, hi = offsets[first], offsets[last]
      losses, correct = self._per_example(weights, x[lo:hi], y[lo:hi])
      client = np.repeat(np.arange(last - first), sizes[first:last])
      yield (np.bincount(client, losses, minlength=last - first),
             np.bincount(client, correct, minlength=last - first),
             sizes[first:last].astype(np.float64))

  def federated(self, weights, client_ids: Optional[Sequence[str]] = None,
                chunk_clients: Optional[int] = None,
                progress: Optional[Callable[[int], None]] = None
                ) -> 'collections.OrderedDict[str, float]':
    """`federated.evaluate_federated(task, weights, ...)`'s metrics, in-graph.

    Args:
      weights: The model's `tff.learning.models.ModelWeights`.
      client_ids: The test clients (default: all; their examples are then read once and kept).
      chunk_clients: Clients per progress update (default `federated.CHUNK_CLIENTS`).
      progress: Called after each chunk of clients with its number of clients.
    """
    sums = collections.OrderedDict(
        (k, np.float64(0)) for k in ('loss_sum', 'correct', 'num_examples', 'num_predictions',
                                     'client_accuracy_sum', 'num_clients'))
    histogram = np.zeros(federated.NUM_BINS, np.float64)
    for loss_sum, correct, count in self._client_sums(
        weights, client_ids, chunk_clients or federated.CHUNK_CLIENTS):
      sums['loss_sum'] += loss_sum.sum()
      sums['correct'] += correct.sum()
      sums['num_examples'] += count.sum()
      sums['num_predictions'] += count.sum()
      # As the TFF computation: float32 accuracy (0 for an empty client), float32 bin index.
      accuracy = np.divide(correct.astype(np.float32), count.astype(np.float32),
                           out=np.zeros(len(count), np.float32), where=count > 0)
      bins = np.minimum((accuracy * np.float32(federated.NUM_BINS)).astype(np.int32),
                        federated.NUM_BINS - 1)
      histogram += np.bincount(bins, minlength=federated.NUM_BINS)
      sums['client_accuracy_sum'] += accuracy.astype(np.float64).sum()
      sums['num_clients'] += len(count)
      if progress is not None:
        progress(len(count))
    sums['accuracy_histogram'] = histogram
    return federated.summarize(sums)

  def each(self, weights, client_ids: Sequence[str]
           ) -> list['collections.OrderedDict[str, float]']:
    """`personalization.evaluate_each(task, weights, client_ids)`, in-graph: each client's
    accuracy, loss and examples, in order (NaN for a client with no test example)."""
    out = []
    all_clients = list(client_ids) == list(self._task.test_data.client_ids)
    for loss_sum, correct, count in self._client_sums(
        weights, None if all_clients else client_ids, federated.CHUNK_CLIENTS):
      for loss, hits, n in zip(loss_sum, correct, count):
        out.append(collections.OrderedDict(
            accuracy=hits / n if n else float('nan'), loss=loss / n if n else float('nan'),
            num_examples=int(n)))
    return out

  def centralized(self, weights) -> 'collections.OrderedDict[str, float]':
    """`centralized.evaluate_centralized(task, weights)`'s metrics, in-graph."""
    x, y = self._task.centralized_test_data
    losses, correct = self._per_example(weights, np.asarray(x), np.asarray(y))
    n = len(y)
    return collections.OrderedDict(loss=float(losses.sum() / n), accuracy=float(correct.sum() / n),
                                   num_examples=int(n))

  def close(self) -> None:
    """Nothing to release (the interface of the loop's other evaluators)."""
