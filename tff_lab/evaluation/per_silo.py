"""Per-silo evaluation: what each silo gains from federation over training alone.

In cross-silo federated learning (Kairouz et al., "Advances and Open Problems in Federated
Learning", arXiv:1912.04977, §1.1 and Table 1) each participant is an organisation that could
also train on its own data. Its incentive to join is the difference, on its own test data,
between the federated model and a model trained on its data alone. `evaluate_per_silo` reports
that difference for every silo, with the same loss and the same definition of a correct
prediction as the rest of tff_lab (`tff_lab.metrics.accuracy`).

The comparison is one case of the per-client report (`tff_lab.evaluation.personalization`): its
`global` model and its `local` baseline, on every silo. The local-only model starts from the
task's model initialised under `seed` (the run's initial model for that seed) and runs plain SGD
for `epochs` passes over the silo's training set, in the task's training batches, shuffled under
`seed`: the same local SGD as a federated client's. To give it the federated model's budget, pass
`epochs = rounds * client_epochs` when every silo takes part in every round (the usual
cross-silo setting).
"""

import collections

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_lab.evaluation import personalization
from tff_lab.tasks import task as task_lib


def initial_weights(task: task_lib.Task, seed: int) -> tff.learning.models.ModelWeights:
  """The task's model as Keras initialises it under `seed`."""
  tf.keras.utils.set_random_seed(seed)
  return tff.learning.models.ModelWeights.from_model(task.model_fn())


def evaluate_per_silo(task: task_lib.Task, weights, epochs: int, learning_rate: float,
                      seed: int = 0) -> list['collections.OrderedDict[str, object]']:
  """Compares, on every silo's own test set, the federated model with a local-only model.

  Args:
    task: The task; its train and test data must have the same client ids.
    weights: The federated model's `tff.learning.models.ModelWeights`.
    epochs: Local-only training passes over each silo's data (see the module docstring).
    learning_rate: Local-only SGD learning rate.
    seed: Seed of every local-only model (its initialisation and shuffling).

  Returns:
    One row per silo, in client-id order: `silo`, `num_train`, `num_test`,
    `federated_accuracy`, `local_accuracy`, `gain` (federated minus local),
    `federated_loss`, `local_loss`.

  Raises:
    ValueError: If the clients differ, epochs < 1 or learning_rate <= 0.
  """
  if sorted(task.train_data.client_ids) != sorted(task.test_data.client_ids):
    raise ValueError(f'task {task.name!r}: per-silo evaluation needs the same client ids in '
                     'train_data and test_data')
  silos = sorted(task.train_data.client_ids)
  local = personalization.train_locally(task, initial_weights(task, seed), silos, epochs,
                                        learning_rate, seed)
  federated = personalization.evaluate_each(task, weights, silos)
  sizes = [personalization.federated_size(task.train_data, s) for s in silos]
  rows = []
  for row in personalization.client_rows(silos, sizes,
                                         collections.OrderedDict([('global', federated)]), local):
    rows.append(collections.OrderedDict(
        silo=row['client'], num_train=row['num_train'], num_test=row['num_test'],
        federated_accuracy=row['global_accuracy'], local_accuracy=row['local_accuracy'],
        gain=row['global_gain'], federated_loss=row['global_loss'],
        local_loss=row['local_loss']))
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
