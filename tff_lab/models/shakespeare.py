"""The Shakespeare next-character LSTM of McMahan et al., "Communication-Efficient Learning of
Deep Networks from Decentralized Data", AISTATS 2017 (arXiv:1602.05629), §3: "a stacked
character-level LSTM language model, which after reading each character in a line, predicts the
next character. The model takes a series of characters as input and embeds each of these into a
learned 8 dimensional space. The embedded characters are then processed through 2 LSTM layers,
each with 256 nodes", unrolled over 80 characters.

Built as TFF's baseline (`tff.simulation.baselines.shakespeare.char_prediction_models.
create_recurrent_model`, which the tests check it against weight for weight): the embedding masks
padding (id 0), both LSTMs return sequences and use He-normal kernels, and a Dense layer gives
logits (no softmax) at every position, for `SparseCategoricalCrossentropy(from_logits=True)`. The
padding mask travels with the output, and Keras losses leave masked positions out.
"""

import tensorflow as tf


def build_shakespeare_lstm(vocab_size: int, sequence_length: int = 80, embedding_dim: int = 8,
                           lstm_units: int = 256, mask_zero: bool = True) -> tf.keras.Model:
  """Embedding(8) -> LSTM(256) -> LSTM(256) -> Dense(vocab_size) logits, at every position.

  Args:
    vocab_size: Number of ids, characters plus specials
      (`tff_lab.data.shakespeare_preprocessing.num_ids`: 84 for LEAF's vocabulary, 90 for
      TFF's).
    sequence_length: Input length L.
    embedding_dim: Character embedding size.
    lstm_units: Units of each LSTM layer.
    mask_zero: Whether padding (id 0) is masked in the LSTMs.

  Returns:
    An uncompiled model mapping int ids [batch, L] to logits [batch, L, vocab_size].
  """
  if vocab_size < 1 or sequence_length < 1:
    raise ValueError(f'vocab_size and sequence_length must be >= 1, got {vocab_size} and '
                     f'{sequence_length}')
  inputs = tf.keras.Input(shape=(sequence_length,), dtype=tf.int64)
  x = tf.keras.layers.Embedding(vocab_size, embedding_dim, mask_zero=mask_zero)(inputs)
  for _ in range(2):
    x = tf.keras.layers.LSTM(lstm_units, kernel_initializer='he_normal',
                             return_sequences=True)(x)
  outputs = tf.keras.layers.Dense(vocab_size)(x)
  return tf.keras.Model(inputs, outputs, name='shakespeare_lstm')

