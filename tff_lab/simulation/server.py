"""The server step every backend shares: the TFF state after a round, from the round's mean update.

TFF's learning processes end a round with `build_apply_optimizer_finalizer`: the server optimiser
takes the aggregated model delta as a pseudo-gradient, and an update with a non-finite value is
rejected (the weights and the optimiser state stay, and `update_non_finite` is 1). Backends that
aggregate outside `process.next` (the in-graph rounds, rounds of algorithms with client state)
apply the same step here, eagerly, and assemble the `LearningAlgorithmState` with the structure
of the process's own, so checkpoints, resume, `get_model_weights` and evaluation work unchanged.
"""

import collections
from typing import Any, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff


def like(template: Any, values: Any) -> Any:
  """`values` in the container types of `template` (TFF keeps lists where TF returns tuples)."""
  return tf.nest.pack_sequence_as(template, tf.nest.flatten(values))


def apply_server_update(server_optimizer: tff.learning.optimizers.Optimizer, state: Any,
                        mean_delta: Sequence[np.ndarray], *, client_work: Any = None,
                        aggregator: Any = None
                        ) -> tuple[tff.learning.templates.LearningAlgorithmState, int]:
  """The state after applying `mean_delta` with the server optimiser, as TFF's finalizer does.

  Args:
    server_optimizer: The process's server optimiser.
    state: The `LearningAlgorithmState` before the round.
    mean_delta: The aggregated model delta (wᵗ − w convention), one array per trainable variable.
    client_work: The client work's new state (default: unchanged).
    aggregator: The aggregator's new state (default: unchanged).

  Returns:
    The new state, and `update_non_finite` (1 if the update was rejected).
  """
  weights = state.global_model_weights
  as_tensors = lambda structure: tf.nest.map_structure(tf.convert_to_tensor, structure)
  non_finite = int(not all(np.all(np.isfinite(d)) for d in mean_delta))
  if non_finite:
    optimizer_state, new_trainable = state.finalizer, list(weights.trainable)
  else:
    optimizer_state, new_trainable = server_optimizer.next(
        as_tensors(state.finalizer), as_tensors(list(weights.trainable)), as_tensors(mean_delta))
  new_weights = tff.learning.models.ModelWeights(
      trainable=[np.asarray(w) for w in new_trainable], non_trainable=list(weights.non_trainable))
  new_state = tff.learning.templates.LearningAlgorithmState(
      global_model_weights=new_weights, distributor=state.distributor,
      client_work=state.client_work if client_work is None else client_work,
      aggregator=state.aggregator if aggregator is None else aggregator,
      finalizer=like(state.finalizer, tf.nest.map_structure(np.asarray, optimizer_state)))
  return new_state, non_finite


def train_metrics(loss_sum: float, correct: float, num_examples: float, num_batches: float,
                  extra: Optional[dict] = None, num_predictions: Optional[float] = None) -> dict:
  """`client_work/train` metrics with the layout TFF's `sum_then_finalize` gives.

  The accuracy is `correct` over `num_predictions` (None: over the examples; a sequence model
  makes one prediction per non-padding target, `tff_lab.metrics.accuracy`).
  """
  n = float(num_examples)
  p = n if num_predictions is None else float(num_predictions)
  out = collections.OrderedDict(
      accuracy=float(correct) / p if p else float('nan'),
      loss=float(loss_sum) / n if n else float('nan'),
      num_examples=int(n), num_batches=int(num_batches))
  out.update(extra or {})
  return out


def round_output(new_state: Any, non_finite: int, train: dict,
                 algorithm_metrics: Optional[dict] = None, name: str = '',
                 aggregator_metrics: Optional[dict] = None
                 ) -> tff.learning.templates.LearningProcessOutput:
  """A round's output with `process.next`'s metrics layout.

  Args:
    new_state: The state after the round (`apply_server_update`).
    non_finite: `update_non_finite` of the server step.
    train: `client_work/train` (`train_metrics`).
    algorithm_metrics: The algorithm's own diagnostics, reported as `client_work/<name>/...`.
    name: The algorithm's name, for those.
    aggregator_metrics: The aggregation's measurements (`aggregator/...`), e.g.
      `dense_communication_metrics`.
  """
  client_work = collections.OrderedDict(train=train)
  if algorithm_metrics:
    client_work[name] = collections.OrderedDict(algorithm_metrics)
  metrics = collections.OrderedDict(
      distributor=(), client_work=client_work,
      aggregator=collections.OrderedDict(aggregator_metrics or {}),
      finalizer=collections.OrderedDict(update_non_finite=non_finite))
  return tff.learning.templates.LearningProcessOutput(new_state, metrics)


def dense_communication_metrics(num_clients: int, weights: Sequence[np.ndarray]
                                ) -> 'collections.OrderedDict[str, Any]':
  """The communication measurements the TFF path's mean reports for an uncompressed float32
  update of `weights`' shapes (`tff_lab.aggregators.compression.dense_communication`): the model
  down, the update up, each the same number of float32 bytes."""
  dense = int(sum(np.size(w) for w in weights)) * 4
  return collections.OrderedDict(
      num_clients=np.int32(num_clients), upload_bytes_per_client=np.int64(dense),
      download_bytes_per_client=np.int64(dense), float32_upload_bytes_per_client=np.int64(dense),
      compression_ratio=np.float32(1.0))
