"""Federated evaluation with the distribution of per-client accuracy.

Each test client evaluates the broadcast global model on its own data (client-placed work). The
server only receives sums: total loss, correct predictions and examples (for the example-weighted
loss and accuracy), the sum of per-client accuracies (for their unweighted mean, the "average
client" view used by q-FFL, Li et al. ICLR 2020, arXiv:1905.10497), and a histogram of per-client
accuracy over `NUM_BINS` equal bins of [0, 1]. The 10th and 90th percentiles are read off that
histogram, so they are exact to within 1/NUM_BINS while no single client's accuracy reaches the
server.

`evaluate_federated` runs the computation on `CHUNK_CLIENTS` clients at a time and adds the sums
up, calling back after each chunk: the training loop's evaluation bar (tff_lab.training.loop).
"""

import collections
from typing import Callable, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_lab.evaluation import centralized
from tff_lab.metrics import accuracy as accuracy_lib
from tff_lab.tasks import task as task_lib

NUM_BINS = 1000


def _assign(model: tf.keras.Model, weights) -> None:
  for var, value in zip(model.trainable_variables, weights.trainable):
    var.assign(value)
  for var, value in zip(model.non_trainable_variables, weights.non_trainable):
    var.assign(value)


def build_client_evaluation(task: task_lib.Task) -> tff.Computation:
  """A TF computation: (model weights, one client's batched dataset) -> its evaluation sums."""
  weights_type = tff.learning.models.weights_type_from_model(task.tff_model_fn)
  dataset_type = tff.SequenceType(tff.types.tensorflow_to_type(task.batch_spec))

  # TFF traces TF computations as graphs without automatic control dependencies; the tf.function
  # orders the weight assignment before the reads, as TFF's own client work does.
  @tf.function
  def _evaluate(model, loss_fn, weights, dataset):
    _assign(model, weights)

    def reduce_fn(acc, batch):
      preds = model(batch['x'], training=False)
      n = tf.cast(tf.shape(batch['y'])[0], tf.float32)
      # One entry per prediction: per example, or per non-padding token for next_token tasks.
      hits = accuracy_lib.correct_predictions(task.prediction_kind, batch['y'], preds)
      return (acc[0] + loss_fn(batch['y'], preds) * n, acc[1] + tf.reduce_sum(hits), acc[2] + n,
              acc[3] + tf.cast(tf.size(hits), tf.float32))

    loss_sum, correct, count, predictions = dataset.reduce((0.0, 0.0, 0.0, 0.0), reduce_fn)
    client_accuracy = tf.math.divide_no_nan(correct, predictions)
    bin_index = tf.minimum(tf.cast(client_accuracy * NUM_BINS, tf.int32), NUM_BINS - 1)
    return collections.OrderedDict(
        loss_sum=loss_sum, correct=correct, num_examples=count, num_predictions=predictions,
        client_accuracy_sum=client_accuracy, num_clients=tf.constant(1.0),
        accuracy_histogram=tf.one_hot(bin_index, NUM_BINS, dtype=tf.float32))


  @tff.tensorflow.computation(weights_type, dataset_type)
  def client_eval(weights, dataset):
    model = task.model_fn()
    loss_fn = task.loss_fn()
    return _evaluate(model, loss_fn, weights, dataset)

  return client_eval


def build_federated_evaluation(task: task_lib.Task) -> tff.Computation:
  """Returns a federated computation (weights@SERVER, datasets@CLIENTS) -> sums@SERVER.

  Pass its result to `summarize` for loss, accuracy and the per-client accuracy distribution.
  """
  client_eval = build_client_evaluation(task)
  weights_type, dataset_type = client_eval.type_signature.parameter

  @tff.federated_computation(tff.FederatedType(weights_type, tff.SERVER),
                             tff.FederatedType(dataset_type, tff.CLIENTS))
  def federated_eval(weights, datasets):
    per_client = tff.federated_map(client_eval, (tff.federated_broadcast(weights), datasets))
    return tff.federated_sum(per_client)

  return federated_eval


def histogram_percentile(histogram: np.ndarray, q: float) -> float:
  """The q-th percentile (q in [0, 100]) of values binned in `histogram` over [0, 1].

  Uses numpy.percentile's default ('linear') rule, interpolating between the order statistics at
  ranks floor and ceil of q/100·(n−1), with each value represented by its bin's midpoint; the
  result is within one bin width (1/len(histogram)) of numpy's on the raw values.
  """
  counts = np.asarray(histogram, dtype=np.int64)
  total = int(counts.sum())
  if total <= 0:
    return float('nan')
  target = q / 100.0 * (total - 1)
  cumulative = np.cumsum(counts)

  def order_statistic(rank: int) -> float:  # 0-based rank -> bin midpoint
    b = int(np.searchsorted(cumulative, rank, side='right'))
    return (b + 0.5) / len(counts)

  lo, hi = int(np.floor(target)), int(np.ceil(target))
  v_lo, v_hi = order_statistic(lo), order_statistic(hi)
  return float(v_lo + (target - lo) * (v_hi - v_lo))


def summarize(sums) -> 'collections.OrderedDict[str, float]':
  """Turns `build_federated_evaluation`'s sums into named metrics."""
  n = float(sums['num_examples'])
  predictions = float(sums['num_predictions'])
  clients = float(sums['num_clients'])
  hist = np.asarray(sums['accuracy_histogram'])
  return collections.OrderedDict(
      loss=float(sums['loss_sum']) / n if n else float('nan'),
      accuracy=float(sums['correct']) / predictions if predictions else float('nan'),
      client_accuracy_mean=float(sums['client_accuracy_sum']) / clients if clients else
      float('nan'),
      client_accuracy_p10=histogram_percentile(hist, 10),
      client_accuracy_p90=histogram_percentile(hist, 90),
      num_clients=int(clients), num_examples=int(n))


# Test clients per call of the federated computation: each call's sums are added up, so the
# result does not depend on it, and a caller hears of progress after each chunk.
CHUNK_CLIENTS = 64


def evaluate_federated(task: task_lib.Task, weights, computation=None, client_ids=None,
                       chunk_clients: Optional[int] = None,
                       progress: Optional[Callable[[int], None]] = None
                       ) -> 'collections.OrderedDict[str, float]':
  """Runs federated evaluation of `weights` on the task's test clients (all, or `client_ids`).

  The clients are evaluated `chunk_clients` at a time (one call of the computation each; every
  result is a sum, so the chunks' results are added up), which lets a long evaluation show its
  progress.

  Args:
    task: The task.
    weights: The model's `tff.learning.models.ModelWeights`.
    computation: `build_federated_evaluation(task)`, built once by callers that evaluate often.
    client_ids: The test clients to evaluate (default: all).
    chunk_clients: Clients per call of the computation (default `CHUNK_CLIENTS`).
    progress: Called after each chunk with the number of clients it evaluated.

  Raises:
    ValueError: If `chunk_clients` is not a positive integer.
  """
  chunk_clients = CHUNK_CLIENTS if chunk_clients is None else chunk_clients
  if isinstance(chunk_clients, bool) or not isinstance(chunk_clients, int) or chunk_clients < 1:
    raise ValueError(f'chunk_clients must be a positive integer, got {chunk_clients!r}')
  computation = computation or build_federated_evaluation(task)
  ids = list(client_ids if client_ids is not None else task.test_data.client_ids)
  total = None
  for start in range(0, max(len(ids), 1), chunk_clients):
    chunk = ids[start:start + chunk_clients]
    datasets = [task.preprocess_eval(task.test_data.create_tf_dataset_for_client(c))
                for c in chunk]
    sums = computation(weights, datasets)
    # Added up in float64 (each chunk's sums are TFF's float32).
    sums = collections.OrderedDict((k, np.asarray(v, np.float64)) for k, v in sums.items())
    total = sums if total is None else collections.OrderedDict(
        (k, total[k] + v) for k, v in sums.items())
    if progress is not None:
      progress(len(chunk))
  return summarize(total)


class TFFEvaluation:
  """The training loop's evaluation on TFF's runtime: `evaluate_federated` with its computation
  built once, and `centralized.evaluate_centralized` with one Keras model. The fast path's
  `tff_lab.evaluation.fused.FusedEvaluation` has the same interface and results."""

  def __init__(self, task: task_lib.Task):
    self._task = task
    self._computation = build_federated_evaluation(task)  # TFF tracing
    # Made at the first evaluation, after the run's TFF tracing: a Keras model made inside
    # TFF's graphs invalidates those made before.
    self._keras_model = None

  def federated(self, weights, progress: Optional[Callable[[int], None]] = None
                ) -> 'collections.OrderedDict[str, float]':
    return evaluate_federated(self._task, weights, self._computation, progress=progress)

  def centralized(self, weights) -> 'collections.OrderedDict[str, float]':
    if self._keras_model is None:
      self._keras_model = self._task.model_fn()
    return centralized.evaluate_centralized(self._task, weights, self._keras_model)

  def close(self) -> None:
    """Nothing to release."""
