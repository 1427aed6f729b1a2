"""Per-silo evaluation: federated model vs each silo's local-only model, on the silo's test set.

Both columns are checked against NumPy logistic regression: the local-only model is plain SGD from
the seeded initial model, replayed batch by batch (unshuffled task).
"""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_lab import tasks
from tff_lab.evaluation import per_silo

EPOCHS, LEARNING_RATE = 3, 0.1


@pytest.fixture(scope='module', name='task')
def fixture_task():
  return tasks.create_task('breast_cancer_silos', {'num_silos': 4}).with_train_spec(
      shuffle_buffer_size=1)


def _arrays(data, client_id):
  batch = next(iter(data.create_tf_dataset_for_client(client_id).batch(10_000)))
  return batch['x'].numpy(), batch['y'].numpy()


@pytest.fixture(scope='module', name='global_weights')
def fixture_global_weights(task):
  tf.keras.utils.set_random_seed(5)
  return tff.learning.models.ModelWeights.from_model(task.model_fn())


@pytest.fixture(scope='module', name='rows')
def fixture_rows(task, global_weights):
  return per_silo.evaluate_per_silo(task, global_weights, EPOCHS, LEARNING_RATE, seed=0)


def test_one_row_per_silo(task, rows):
  assert [r['silo'] for r in rows] == sorted(task.train_data.client_ids)
  for row in rows:
    assert row['num_train'] == len(_arrays(task.train_data, row['silo'])[1])
    assert row['num_test'] == len(_arrays(task.test_data, row['silo'])[1])
    assert 0.0 <= row['federated_accuracy'] <= 1.0 and 0.0 <= row['local_accuracy'] <= 1.0
    assert row['gain'] == pytest.approx(row['federated_accuracy'] - row['local_accuracy'])
  # Three passes of SGD on a hospital's own tumours already separate them well.
  assert np.mean([r['local_accuracy'] for r in rows]) > 0.8


def test_federated_columns_match_numpy(task, rows, global_weights):
  kernel, bias = global_weights.trainable
  for row in rows:
    x, y = _arrays(task.test_data, row['silo'])
    p = 1.0 / (1.0 + np.exp(-(x @ kernel + bias)))
    assert row['federated_accuracy'] == pytest.approx(np.mean((p > 0.5) == (y == 1)))
    bce = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert row['federated_loss'] == pytest.approx(bce, rel=1e-4)


def test_local_columns_match_numpy_sgd_from_the_seeded_initial_model(task, rows):
  tf.keras.utils.set_random_seed(0)
  kernel, bias = [v.numpy().astype(np.float64) for v in task.model_fn().trainable_variables]
  batch_size = task.train_spec.batch_size
  for row in rows:
    x, y = _arrays(task.train_data, row['silo'])
    k, b = kernel.copy(), bias.copy()
    xs, ys = np.concatenate([x] * EPOCHS), np.concatenate([y] * EPOCHS)
    for start in range(0, len(ys), batch_size):
      xb, yb = xs[start:start + batch_size], ys[start:start + batch_size]
      err = 1.0 / (1.0 + np.exp(-(xb @ k + b))) - yb  # ∇ of the mean binary cross-entropy
      k -= LEARNING_RATE * xb.T @ err / len(yb)
      b -= LEARNING_RATE * err.sum(axis=0) / len(yb)
    x, y = _arrays(task.test_data, row['silo'])
    p = 1.0 / (1.0 + np.exp(-(x @ k + b)))
    assert row['local_accuracy'] == pytest.approx(np.mean((p > 0.5) == (y == 1)))
    bce = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert row['local_loss'] == pytest.approx(bce, rel=1e-4)


def test_format_table(rows):
  table = per_silo.format_table(rows).splitlines()
  assert len(table) == 1 + len(rows) + 1
  assert 'federated_accuracy' in table[0] and table[-1].split()[0] == 'mean'
  mean_gain = float(table[-1].split()[list(rows[0]).index('gain')])
  assert mean_gain == pytest.approx(np.mean([r['gain'] for r in rows]), abs=1e-4)


@pytest.mark.parametrize('epochs, learning_rate, match', [(0, 0.1, 'epochs'),
                                                          (1, 0.0, 'learning_rate')])
def test_bad_arguments(task, global_weights, epochs, learning_rate, match):
  with pytest.raises(ValueError, match=match):
    per_silo.evaluate_per_silo(task, global_weights, epochs, learning_rate)
