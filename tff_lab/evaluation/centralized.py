"""Centralised evaluation: the global model on the pooled test set, in plain Keras.

The same loss and the same definition of a correct prediction as training and federated
evaluation (`tff_lab.metrics.accuracy`), so the numbers are comparable.
"""

import collections

import numpy as np
import tensorflow as tf

from tff_lab.metrics import accuracy as accuracy_lib
from tff_lab.tasks import task as task_lib


def keras_model_with_weights(task: task_lib.Task, weights) -> tf.keras.Model:
  """A new Keras model of the task holding `weights` (a `tff.learning.models.ModelWeights`)."""
  model = task.model_fn()
  weights.assign_weights_to(model)
  return model


def evaluate_centralized(task: task_lib.Task, weights, model: tf.keras.Model = None
                         ) -> 'collections.OrderedDict[str, float]':
  """Loss and accuracy of `weights` over `task.centralized_test_data`.

  Args:
    task: The task.
    weights: `tff.learning.models.ModelWeights` of the global model.
    model: Optional Keras model to reuse (its weights are overwritten).
  """
  if model is None:
    model = task.model_fn()
  weights.assign_weights_to(model)
  x, y = task.centralized_test_data
  loss_fn = task.loss_fn()
  loss_sum, correct, predictions = 0.0, 0.0, 0
  for start in range(0, len(y), task.eval_batch_size):
    xb, yb = x[start:start + task.eval_batch_size], y[start:start + task.eval_batch_size]
    preds = model(xb, training=False)
    loss_sum += float(loss_fn(yb, preds)) * len(yb)
    # One entry per prediction: per example, or per non-padding token for next_token tasks.
    hits = accuracy_lib.correct_predictions(task.prediction_kind, yb, preds)
    correct += float(tf.reduce_sum(hits))
    predictions += int(tf.size(hits))
  n = len(y)
  return collections.OrderedDict(loss=loss_sum / n, accuracy=correct / predictions,
                                 num_examples=int(n))
