"""Linear models: regression, logistic and softmax regression.

`build_linear` is the seed article's f(x) = θᵀx (no bias by default, as in the article's
derivation §4.3); `build_logistic_regression` is its one-unit sigmoid Dense (§5.2);
`build_softmax_regression` is the multinomial model of FedProx's Synthetic experiments
(Li et al., MLSys 2020, arXiv:1812.06127: a single 60→10 dense layer, Glorot-uniform kernel,
zero bias).
"""

import tensorflow as tf


def build_linear(input_dim: int, output_dim: int = 1, use_bias: bool = False) -> tf.keras.Model:
  """f(x) = θᵀx (+ b): a Dense layer with no activation."""
  inputs = tf.keras.Input(shape=(input_dim,))
  outputs = tf.keras.layers.Dense(output_dim, use_bias=use_bias, name='linear')(inputs)
  return tf.keras.Model(inputs, outputs, name='linear')


def build_logistic_regression(input_dim: int, use_bias: bool = True) -> tf.keras.Model:
  """σ(θᵀx + b): one sigmoid unit, for binary labels in {0, 1}."""
  inputs = tf.keras.Input(shape=(input_dim,))
  outputs = tf.keras.layers.Dense(1, activation='sigmoid', use_bias=use_bias,
                                  name='logistic')(inputs)
  return tf.keras.Model(inputs, outputs, name='logistic_regression')


def build_softmax_regression(input_dim: int, num_classes: int) -> tf.keras.Model:
  """softmax(Wx + b): multinomial logistic regression."""
  inputs = tf.keras.Input(shape=(input_dim,))
  outputs = tf.keras.layers.Dense(num_classes, activation='softmax', name='softmax')(inputs)
  return tf.keras.Model(inputs, outputs, name='softmax_regression')
