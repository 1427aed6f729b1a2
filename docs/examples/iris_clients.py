"""Example plugin: a task on your own arrays (docs/extending.md, example 3).

scikit-learn's bundled iris flowers (150 examples, 4 features, 3 classes) split across clients
with label skew, and a small softmax-regression model, via `tff_lab.tasks.from_arrays`.

    tff-lab-run --plugin=iris_clients --task=iris_clients --iris_clients_num_clients=6
"""

import functools

import numpy as np
from sklearn import datasets
import tensorflow as tf

import tff_lab.tasks


def _model(num_features: int, num_classes: int) -> tf.keras.Model:
  return tf.keras.Sequential([
      tf.keras.layers.InputLayer(input_shape=(num_features,)),
      tf.keras.layers.Dense(num_classes, activation='softmax')])


def build_iris_task(num_clients: int = 6, alpha: float = 0.5, seed: int = 0):
  """Iris over `num_clients` clients, label skew Dirichlet(`alpha`)."""
  x, y = datasets.load_iris(return_X_y=True)
  x = ((x - x.mean(axis=0)) / x.std(axis=0)).astype(np.float32)
  return tff_lab.tasks.from_arrays(
      x, y.astype(np.int32), model_fn=functools.partial(_model, 4, 3),
      prediction_kind='sparse_categorical', partition='dirichlet', num_clients=num_clients,
      alpha=alpha, seed=seed, name='iris_clients')


tff_lab.tasks.register('iris_clients', build_iris_task)
