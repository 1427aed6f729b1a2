"""The 2NN and CNN of McMahan et al., "Communication-Efficient Learning of Deep Networks from
Decentralized Data", AISTATS 2017 (arXiv:1602.05629), §3.

* 2NN: "a simple multilayer-perceptron with 2-hidden layers with 200 units each using ReLu
  activations" (199,210 parameters on MNIST).
* CNN: "two 5x5 convolution layers (the first with 32 channels, the second with 64, each followed
  with 2x2 max pooling), a fully connected layer with 512 units and ReLu activation, and a final
  softmax output layer" (1,663,370 parameters on MNIST with `same` padding).
* CNN-BN (not in the paper): the CNN with batch normalisation (Ioffe and Szegedy, ICML 2015,
  arXiv:1502.03167) after each convolution and after the hidden dense layer, before its ReLU, as
  in the digit models of FedBN (Li, Jiang, Zhang, Kamp, Dou, "FedBN: Federated Learning on
  Non-IID Features via Local Batch Normalization", ICLR 2021, arXiv:2102.07623), for algorithms
  that treat the batch-norm layers apart (`tff_lab.algorithms.fedbn`).
"""

from collections.abc import Sequence

import tensorflow as tf


def build_2nn(input_shape: Sequence[int] = (784,), num_classes: int = 10,
              hidden_units: int = 200) -> tf.keras.Model:
  """The 2NN: flatten, Dense(200, relu), Dense(200, relu), Dense(num_classes, softmax)."""
  inputs = tf.keras.Input(shape=tuple(input_shape))
  x = tf.keras.layers.Flatten()(inputs)
  x = tf.keras.layers.Dense(hidden_units, activation='relu')(x)
  x = tf.keras.layers.Dense(hidden_units, activation='relu')(x)
  outputs = tf.keras.layers.Dense(num_classes, activation='softmax')(x)
  return tf.keras.Model(inputs, outputs, name='mcmahan_2nn')


def build_cnn(input_shape: Sequence[int] = (28, 28, 1), num_classes: int = 10) -> tf.keras.Model:
  """The CNN: conv5x5(32)-pool2-conv5x5(64)-pool2-dense(512)-softmax, `same` padding.

  Args:
    input_shape: (height, width, channels); a 2-D (height, width) shape gets one channel added.
    num_classes: Number of output classes.
  """
  input_shape = tuple(input_shape)
  inputs = tf.keras.Input(shape=input_shape)
  x = inputs if len(input_shape) == 3 else tf.keras.layers.Reshape(input_shape + (1,))(inputs)
  x = tf.keras.layers.Conv2D(32, 5, padding='same', activation='relu')(x)
  x = tf.keras.layers.MaxPool2D(2, padding='same')(x)
  x = tf.keras.layers.Conv2D(64, 5, padding='same', activation='relu')(x)
  x = tf.keras.layers.MaxPool2D(2, padding='same')(x)
  x = tf.keras.layers.Flatten()(x)
  x = tf.keras.layers.Dense(512, activation='relu')(x)
  outputs = tf.keras.layers.Dense(num_classes, activation='softmax')(x)
  return tf.keras.Model(inputs, outputs, name='mcmahan_cnn')


def build_cnn_bn(input_shape: Sequence[int] = (28, 28, 1), num_classes: int = 10
                 ) -> tf.keras.Model:
  """The CNN with batch normalisation: conv5x5(32)-BN-relu-pool2-conv5x5(64)-BN-relu-pool2-
  dense(512)-BN-relu-softmax, `same` padding.

  The layers before a BatchNormalization have no bias (its β takes that role), so the model has
  the CNN's parameters less those 608 biases, plus γ, β (trainable) and the moving mean and
  variance (non-trainable) of each normalised channel: 1,665,194 on MNIST, 1,663,978 trainable.

  Args:
    input_shape: (height, width, channels); a 2-D (height, width) shape gets one channel added.
    num_classes: Number of output classes.
  """
  input_shape = tuple(input_shape)
  inputs = tf.keras.Input(shape=input_shape)
  x = inputs if len(input_shape) == 3 else tf.keras.layers.Reshape(input_shape + (1,))(inputs)
  for filters in (32, 64):
    x = tf.keras.layers.Conv2D(filters, 5, padding='same', use_bias=False)(x)
    x = tf.keras.layers.BatchNormalization()(x)
    x = tf.keras.layers.ReLU()(x)
    x = tf.keras.layers.MaxPool2D(2, padding='same')(x)
  x = tf.keras.layers.Flatten()(x)
  x = tf.keras.layers.Dense(512, use_bias=False)(x)
  x = tf.keras.layers.BatchNormalization()(x)
  x = tf.keras.layers.ReLU()(x)
  outputs = tf.keras.layers.Dense(num_classes, activation='softmax')(x)
  return tf.keras.Model(inputs, outputs, name='mcmahan_cnn_bn')
