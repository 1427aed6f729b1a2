"""What "accuracy" means for each kind of prediction, defined once.

The same definition feeds three places that must agree: the Keras metric TFF reports during
training, the per-client correctness inside federated evaluation, and centralised evaluation.

Kinds:
  * `sign`: regression onto labels in {-1, +1} (the seed article's linear model); a prediction is
    correct when sign(f(x)) == y.
  * `binary`: a sigmoid probability for labels in {0, 1}; correct when (p > 0.5) == y.
  * `sparse_categorical`: class probabilities for integer labels; correct when argmax == y.
  * `next_token`: class scores at every position of a sequence for integer targets
    [batch, time] (next-character or next-word prediction); every target that is not padding
    (id 0) is one prediction, correct when argmax == y. This is the accuracy of TFF's Shakespeare
    and Stack Overflow baselines (`MaskedCategoricalAccuracy` with the pad token masked,
    `tff.simulation.baselines`).
  * `multi_label`: sigmoid scores [batch, labels] for multi-hot targets (Stack Overflow tags);
    every true label is one prediction, correct when it is among the example's 5 highest scores.
    The mean is TFF's tag-prediction `Recall(top_k=5)` ("recall_at_5").

`correct_predictions` returns one value per prediction, so its length is the number of
predictions: the batch size for the first three kinds, the non-padding targets for sequences,
the true labels for `multi_label`.
"""

import tensorflow as tf

KINDS = ('sign', 'binary', 'sparse_categorical', 'next_token', 'multi_label')
# The kinds with one prediction per example (the others: one per non-padding target).
PER_EXAMPLE_KINDS = ('sign', 'binary', 'sparse_categorical')
PAD_TOKEN = 0


def _correct_and_valid(kind: str, y_true: tf.Tensor, y_pred: tf.Tensor):
  """Booleans of one shape: where a prediction is correct, and where there is one to make
  ([batch] for the per-example kinds, where every entry is one; [batch, time] for `next_token`,
  [batch, labels] for `multi_label`)."""
  if kind == 'sign':
    pred = tf.where(tf.reshape(y_pred, [-1]) >= 0.0, 1.0, -1.0)
    correct = tf.equal(pred, tf.cast(tf.reshape(y_true, [-1]), tf.float32))
  elif kind == 'binary':
    pred = tf.cast(tf.reshape(y_pred, [-1]) > 0.5, tf.float32)
    correct = tf.equal(pred, tf.cast(tf.reshape(y_true, [-1]), tf.float32))
  elif kind == 'sparse_categorical':
    pred = tf.argmax(y_pred, axis=-1, output_type=tf.int64)
    correct = tf.equal(pred, tf.cast(tf.reshape(y_true, [-1]), tf.int64))
  elif kind == 'next_token':
    targets = tf.cast(y_true, tf.int64)
    pred = tf.argmax(tf.reshape(y_pred, tf.concat([tf.shape(targets), [-1]], 0)), axis=-1,
                     output_type=tf.int64)
    return tf.equal(pred, targets), tf.not_equal(targets, PAD_TOKEN)
  elif kind == 'multi_label':
    num_labels = tf.shape(y_pred)[-1]
    top5 = tf.math.top_k(y_pred, k=tf.minimum(5, num_labels)).indices
    in_top5 = tf.reduce_sum(tf.one_hot(top5, num_labels), axis=-2) > 0
    return in_top5, tf.cast(y_true, tf.float32) > 0
  else:
    raise ValueError(f'unknown prediction kind {kind!r}; expected one of {KINDS}')
  return correct, tf.ones_like(correct)


@tf.autograph.experimental.do_not_convert
def correct_predictions(kind: str, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
  """Returns a float32 vector with one entry per prediction, 1.0 where it is correct.

  Args:
    kind: One of `KINDS`.
    y_true: Labels, shape [batch] or [batch, 1]; [batch, time] for `next_token`; multi-hot
      [batch, labels] for `multi_label`.
    y_pred: Model outputs, shape [batch, 1] for `sign`/`binary`, [batch, classes] for
      `sparse_categorical`, [batch, time, classes] for `next_token`, [batch, labels] for
      `multi_label`.
  """
  correct, valid = _correct_and_valid(kind, y_true, y_pred)
  if kind not in PER_EXAMPLE_KINDS:
    correct = tf.boolean_mask(correct, valid)
  return tf.cast(correct, tf.float32)


@tf.autograph.experimental.do_not_convert
def prediction_counts(kind: str, y_true: tf.Tensor, y_pred: tf.Tensor
                      ) -> tuple[tf.Tensor, tf.Tensor]:
  """Per example, its correct predictions and its predictions (float32 [batch] each): the sums
  of `correct_predictions` split by example, with no ragged masking (so it runs under
  `tf.vectorized_map`). Arguments as `correct_predictions`'s."""
  correct, valid = _correct_and_valid(kind, y_true, y_pred)
  if kind in PER_EXAMPLE_KINDS:
    return tf.cast(correct, tf.float32), tf.cast(valid, tf.float32)
  correct = tf.cast(tf.logical_and(correct, valid), tf.float32)
  return tf.reduce_sum(correct, axis=-1), tf.reduce_sum(tf.cast(valid, tf.float32), axis=-1)


class Accuracy(tf.keras.metrics.MeanMetricWrapper):
  """Keras metric named `accuracy`: the mean of `correct_predictions(kind, ...)`.

  The mean runs over predictions, so for sequences it is the token-weighted accuracy over all
  batches seen.
  """

  def __init__(self, kind: str = 'sparse_categorical', name: str = 'accuracy', dtype=None):
    if kind not in KINDS:
      raise ValueError(f'unknown prediction kind {kind!r}; expected one of {KINDS}')
    super().__init__(lambda y_true, y_pred: correct_predictions(kind, y_true, y_pred),
                     name=name, dtype=dtype)
    self.kind = kind

  def update_state(self, y_true, y_pred, sample_weight=None):
    if self.kind == 'next_token':
      # Keras passes a masked model's output mask ([batch, time]) as sample weights; padding
      # targets are already left out, as in TFF, which never sees that mask.
      sample_weight = None
    return super().update_state(y_true, y_pred, sample_weight)

  def get_config(self):
    return {'kind': self.kind, 'name': self.name, 'dtype': self.dtype}
