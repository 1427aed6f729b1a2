"""What "accuracy" means for each kind of prediction, defined once.

The same definition feeds three places that must agree: the Keras metric TFF reports during
training, the per-client correctness inside federated evaluation, and centralised evaluation.

Kinds:
  * `sign`: regression onto labels in {-1, +1} (the seed article's linear model); a prediction is
    correct when sign(f(x)) == y.
  * `binary`: a sigmoid probability for labels in {0, 1}; correct when (p > 0.5) == y.
  * `sparse_categorical`: class probabilities for integer labels; correct when argmax == y.
"""

import tensorflow as tf

KINDS = ('sign', 'binary', 'sparse_categorical')


def correct_predictions(kind: str, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
  """Returns a float32 vector with 1.0 for each correctly predicted example.

  Args:
    kind: One of `KINDS`.
    y_true: Labels, shape [batch] or [batch, 1].
    y_pred: Model outputs, shape [batch, 1] for `sign`/`binary`, [batch, classes] otherwise.
  """
  if kind == 'sign':
    pred = tf.where(tf.reshape(y_pred, [-1]) >= 0.0, 1.0, -1.0)
    correct = tf.equal(pred, tf.cast(tf.reshape(y_true, [-1]), tf.float32))
  elif kind == 'binary':
    pred = tf.cast(tf.reshape(y_pred, [-1]) > 0.5, tf.float32)
    correct = tf.equal(pred, tf.cast(tf.reshape(y_true, [-1]), tf.float32))
  elif kind == 'sparse_categorical':
    pred = tf.argmax(y_pred, axis=-1, output_type=tf.int64)
    correct = tf.equal(pred, tf.cast(tf.reshape(y_true, [-1]), tf.int64))
  else:
    raise ValueError(f'unknown prediction kind {kind!r}; expected one of {KINDS}')
  return tf.cast(correct, tf.float32)


class Accuracy(tf.keras.metrics.MeanMetricWrapper):
  """Keras metric named `accuracy` computing `correct_predictions(kind, ...)`'s mean."""

  def __init__(self, kind: str = 'sparse_categorical', name: str = 'accuracy', dtype=None):
    if kind not in KINDS:
      raise ValueError(f'unknown prediction kind {kind!r}; expected one of {KINDS}')
    super().__init__(lambda y_true, y_pred: correct_predictions(kind, y_true, y_pred),
                     name=name, dtype=dtype)
    self.kind = kind

  def get_config(self):
    return {'kind': self.kind, 'name': self.name, 'dtype': self.dtype}
