"""Per-silo evaluation: what each silo gains from federation over training alone.

In cross-silo federated learning (Kairouz et al., "Advances and Open Problems in Federated
Learning", arXiv:1912.04977, §1.1 and Table 1) each participant is an organisation that could
also train on its own data. Its incentive to join is the difference, on its own test data,
between the federated model and a model trained on its data alone. `evaluate_per_silo` reports
that difference for every silo, with the same loss and the same definition of a correct
prediction as the rest of tff_lab (`tff_lab.metrics.accuracy`).

The local-only model is the task's model trained with centralised Keras on the silo's training
set: plain SGD, `epochs` passes with the task's training batch size. To give it the federated
model's budget, pass `epochs = rounds * client_epochs` when every silo takes part in every round
(the usual cross-silo setting).
"""

import collections

import numpy as np
import tensorflow as tf

from tff_lab.evaluation import centralized
from tff_lab.metrics import accuracy as accuracy_lib
from tff_lab.tasks import task as task_lib


def _as_tuple(element):
  return element['x'], element['y']


def train_local_model(task: task_lib.Task, client_id: str, epochs: int, learning_rate: float,
                      seed: int = 0) -> tf.keras.Model:
  """Trains a fresh model of `task` on one client's training data alone.

  Args:
    task: The task.
    client_id: One of `task.train_data.client_ids`.
    epochs: Passes over the client's data, >= 1.
    learning_rate: SGD learning rate, > 0.
    seed: Seeds the initial weights and the shuffle order (the result is deterministic).

  Returns:
    The trained Keras model, compiled with the task's loss and accuracy.
  """
  if epochs < 1:
    raise ValueError(f'epochs must be >= 1, got {epochs}')
  if not learning_rate > 0:
    raise ValueError(f'learning_rate must be > 0, got {learning_rate}')
  tf.keras.utils.set_random_seed(seed)
  model = task.model_fn()
  model.compile(optimizer=tf.keras.optimizers.SGD(learning_rate), loss=task.loss_fn(),
                metrics=task.metrics_fn())
  dataset = task.with_train_spec(num_epochs=1, max_elements=None).preprocess_train(
      task.train_data.create_tf_dataset_for_client(client_id), seed=seed)
  model.fit(dataset.map(_as_tuple), epochs=epochs, verbose=0)
  return model


def evaluate_on_client(model: tf.keras.Model, task: task_lib.Task, client_id: str
                       ) -> 'collections.OrderedDict[str, float]':
  """Loss and accuracy of `model` on one client's test data."""
  dataset = task.preprocess_eval(task.test_data.create_tf_dataset_for_client(client_id))
  loss_fn = task.loss_fn()
  loss_sum, correct, num_predictions, num_examples = 0.0, 0.0, 0, 0
  for x, y in dataset.map(_as_tuple):
    preds = model(x, training=False)
    n = int(tf.shape(y)[0])
    loss_sum += float(loss_fn(y, preds)) * n
    hits = accuracy_lib.correct_predictions(task.prediction_kind, y, preds)
    correct += float(tf.reduce_sum(hits))
    num_predictions += int(tf.size(hits))
    num_examples += n
  return collections.OrderedDict(loss=loss_sum / num_examples,
                                 accuracy=correct / num_predictions, num_examples=num_examples)


def evaluate_per_silo(task: task_lib.Task, weights, epochs: int, learning_rate: float,
                      seed: int = 0) -> list['collections.OrderedDict[str, object]']:
  """Compares, on every silo's own test set, the federated model with a local-only model.

  Args:
    task: The task; its train and test data must have the same client ids.
    weights: The federated model's `tff.learning.models.ModelWeights`.
    epochs: Local-only training passes over each silo's data (see the module docstring).
    learning_rate: Local-only SGD learning rate.
    seed: Seed of every local-only model (`train_local_model`).

  Returns:
    One row per silo, in client-id order: `silo`, `num_train`, `num_test`,
    `federated_accuracy`, `local_accuracy`, `gain` (federated minus local),
    `federated_loss`, `local_loss`.
  """
  if sorted(task.train_data.client_ids) != sorted(task.test_data.client_ids):
    raise ValueError(f'task {task.name!r}: per-silo evaluation needs the same client ids in '
                     'train_data and test_data')
  federated_model = centralized.keras_model_with_weights(task, weights)
  rows = []
  for silo in sorted(task.train_data.client_ids):
    federated = evaluate_on_client(federated_model, task, silo)
    local = evaluate_on_client(train_local_model(task, silo, epochs, learning_rate, seed), task,
                               silo)
    rows.append(collections.OrderedDict(
        silo=silo,
        num_train=len(task.train_data.create_tf_dataset_for_client(silo)),
        num_test=federated['num_examples'],
        federated_accuracy=federated['accuracy'], local_accuracy=local['accuracy'],
        gain=federated['accuracy'] - local['accuracy'],
        federated_loss=federated['loss'], local_loss=local['loss']))
  return rows


def format_table(rows) -> str:
  """Renders `evaluate_per_silo`'s rows as a fixed-width text table, with a mean row."""
  columns = list(rows[0])
  means = collections.OrderedDict(
      (c, 'mean' if c == 'silo' else float(np.mean([r[c] for r in rows]))) for c in columns)
  lines = ['  '.join(f'{c:>18}' for c in columns)]
  for row in list(rows) + [means]:
    lines.append('  '.join(f'{v:>18.4f}' if isinstance(v, float) else f'{v!s:>18}'
                           for v in row.values()))
  return '\n'.join(lines)
