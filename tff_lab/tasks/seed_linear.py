"""`seed_linear`: the seed article's two-feature example (shared/seed §4.3 and §5.2).

Two models, as in the article:
  * `linear`: f(x) = θᵀx (no bias) trained with mean squared error on y ∈ {-1, +1}; a prediction is
    correct when sign(f(x)) = y. Keras' MSE is mean((f - y)²), i.e. twice the article's ½(f - y)²,
    which only rescales the learning rate.
  * `logistic`: the article's `Dense(1, activation='sigmoid')` with binary cross-entropy; labels
    are mapped to {0, 1}.
"""

import functools

import numpy as np
import tensorflow as tf

from tff_lab import models
from tff_lab.data import client_data
from tff_lab.data import seed_linear as seed_linear_data
from tff_lab.tasks import task as task_lib

MODELS = ('linear', 'logistic')


def build_seed_linear_task(num_clients: int = 10, examples_per_client: int = 50,
                           noise: float = 1.0, iid: bool = True, model: str = 'linear',
                           test_fraction: float = 0.2, seed: int = 0) -> task_lib.Task:
  """Builds the task.

  Args:
    num_clients: Number of clients N.
    examples_per_client: Examples per client, before the train/test split.
    noise: Standard deviation of the features around their class mean.
    iid: Balanced labels on every client when True, label skew when False.
    model: `linear` (θᵀx, MSE) or `logistic` (sigmoid unit, cross-entropy).
    test_fraction: Fraction of each client's examples held out for evaluation.
    seed: Data seed.
  """
  if model not in MODELS:
    raise ValueError(f'seed_linear model must be one of {MODELS}, got {model!r}')
  arrays = seed_linear_data.generate_seed_linear(num_clients, examples_per_client, noise, iid,
                                                 seed)
  x = np.concatenate([a[0] for a in arrays])
  y = np.concatenate([a[1] for a in arrays])
  if model == 'logistic':
    y = (y + 1.0) / 2.0
  bounds = np.cumsum([0] + [len(a[1]) for a in arrays])
  partitions = [np.arange(bounds[i], bounds[i + 1]) for i in range(num_clients)]
  train, test = client_data.split_clients(x, y, partitions, test_fraction, seed)
  if model == 'linear':
    model_fn = functools.partial(models.build_linear, input_dim=2, use_bias=False)
    loss_fn, kind = tf.keras.losses.MeanSquaredError, 'sign'
  else:
    model_fn = functools.partial(models.build_logistic_regression, input_dim=2)
    loss_fn, kind = tf.keras.losses.BinaryCrossentropy, 'binary'
  return task_lib.Task(
      name='seed_linear', train_data=client_data.from_arrays(train),
      test_data=client_data.from_arrays(test), centralized_test_data=client_data.pool(test),
      model_fn=model_fn, loss_fn=loss_fn, prediction_kind=kind,
      description=f'seed article example: 2 features, y in {{-1,+1}}, {num_clients} clients, '
                  f'{model} model')
