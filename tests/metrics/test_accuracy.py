"""One definition of a correct prediction per kind."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_lab.metrics import accuracy


@pytest.mark.parametrize('kind, y_true, y_pred, expected', [
    ('sign', [[1.0], [-1.0], [1.0], [-1.0]], [[0.3], [0.2], [-0.1], [-4.0]], [1, 0, 0, 1]),
    ('binary', [[1.0], [0.0], [1.0]], [[0.9], [0.7], [0.2]], [1, 0, 0]),
    ('sparse_categorical', [2, 0, 1], [[0.1, 0.2, 0.7], [0.5, 0.4, 0.1], [0.6, 0.3, 0.1]],
     [1, 1, 0]),
    # Targets [[2, 1, 0], [1, 0, 0]]: the three non-padding ones are predictions.
    ('next_token', [[2, 1, 0], [1, 0, 0]],
     [[[0, 0, 1], [0, 1, 0], [0, 1, 0]], [[0, 0, 1], [1, 0, 0], [0, 0, 1]]], [1, 1, 0]),
])
def test_correct_predictions(kind, y_true, y_pred, expected):
  got = accuracy.correct_predictions(kind, np.array(y_true, np.float32),
                                     np.array(y_pred, np.float32)).numpy()
  np.testing.assert_array_equal(got, expected)
  metric = accuracy.Accuracy(kind)
  metric.update_state(np.array(y_true, np.float32), np.array(y_pred, np.float32))
  assert metric.name == 'accuracy'
  assert metric.result().numpy() == pytest.approx(np.mean(expected))


def test_unknown_kind():
  with pytest.raises(ValueError, match='unknown prediction kind'):
    accuracy.Accuracy('top5')


def _random_sequences(seed, batch=4, time=9, classes=6):
  rng = np.random.default_rng(seed)
  y_true = rng.integers(0, classes, (batch, time))
  y_true[:, rng.integers(1, time):] = 0  # Padding at the end of the windows.
  return y_true, rng.normal(size=(batch, time, classes)).astype(np.float32)


def test_next_token_matches_tff_masked_accuracy_over_batches():
  ours = accuracy.Accuracy('next_token')
  theirs = tff.simulation.baselines.keras_metrics.MaskedCategoricalAccuracy(masked_tokens=[0])
  correct, count = 0, 0
  for seed in range(3):
    y_true, y_pred = _random_sequences(seed)
    ours.update_state(y_true, y_pred)
    theirs.update_state(y_true, y_pred)
    keep = y_true != 0
    correct += (y_pred.argmax(-1) == y_true)[keep].sum()
    count += keep.sum()
  assert ours.result().numpy() == pytest.approx(correct / count)  # Token-weighted.
  assert ours.result().numpy() == pytest.approx(theirs.result().numpy())


def test_next_token_in_keras_evaluate_with_a_masking_model():
  # Keras hands the model's padding mask to metrics as sample weights; targets decide instead.
  inputs = tf.keras.Input((9,), dtype=tf.int64)
  embedded = tf.keras.layers.Embedding(6, 6, mask_zero=True)(inputs)
  model = tf.keras.Model(inputs, tf.keras.layers.Dense(6)(embedded))
  model.compile(loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=[accuracy.Accuracy('next_token')])
  y_true, _ = _random_sequences(7)
  x = np.roll(y_true, 1, axis=1)
  x[:, 0] = 3
  preds = model.predict(x, verbose=0)
  expected = (preds.argmax(-1) == y_true)[y_true != 0].mean()
  assert model.evaluate(x, y_true, verbose=0)[1] == pytest.approx(expected)


def test_multi_label_is_tffs_recall_at_5():
  rng = np.random.default_rng(0)
  y_true = (rng.random((50, 12)) < 0.2).astype(np.float32)
  y_pred = rng.random((50, 12)).astype(np.float32)
  recall = tf.keras.metrics.Recall(top_k=5)
  recall.update_state(y_true, y_pred)
  metric = accuracy.Accuracy('multi_label')
  metric.update_state(y_true, y_pred)
  assert metric.result().numpy() == pytest.approx(recall.result().numpy())
