"""`synthetic`: FedProx's Synthetic(α, β) and Synthetic-IID with softmax regression.

Li et al., "Federated Optimization in Heterogeneous Networks", MLSys 2020 (arXiv:1812.06127),
§5.1 and App. C.1: 30 devices, x ∈ R⁶⁰, 10 classes, a single 60→10 softmax layer trained with
sparse softmax cross-entropy. The generator is `tff_lab.data.synthetic`.
"""

import functools

import numpy as np
import tensorflow as tf

from tff_lab import models
from tff_lab.data import client_data
from tff_lab.data import synthetic as synthetic_data
from tff_lab.tasks import task as task_lib


def build_synthetic_task(alpha: float = 1.0, beta: float = 1.0, iid: bool = False,
                         num_devices: int = 30, train_fraction: float = 0.8,
                         seed: int = 0) -> task_lib.Task:
  """Builds the task.

  Args:
    alpha: Standard deviation of u_k (model heterogeneity).
    beta: Standard deviation of B_k (feature heterogeneity).
    iid: Synthetic-IID instead of Synthetic(α, β).
    num_devices: Number of devices (clients).
    train_fraction: Per-device training share (paper 0.8; the authors' code 0.9).
    seed: Generator seed.
  """
  devices = synthetic_data.generate_synthetic(alpha=alpha, beta=beta, iid=iid,
                                              num_devices=num_devices,
                                              train_fraction=train_fraction, seed=seed)
  ids = client_data.client_ids_for(len(devices), prefix='device')
  train = {c: (d.x_train, d.y_train) for c, d in zip(ids, devices)}
  test = {c: (d.x_test, d.y_test) for c, d in zip(ids, devices)}
  dimension = devices[0].x_train.shape[1]
  num_classes = 10
  label = 'Synthetic-IID' if iid else f'Synthetic({alpha:g},{beta:g})'
  return task_lib.Task(
      name='synthetic', train_data=client_data.from_arrays(train),
      test_data=client_data.from_arrays(test), centralized_test_data=client_data.pool(test),
      model_fn=functools.partial(models.build_softmax_regression, input_dim=dimension,
                                 num_classes=num_classes),
      loss_fn=tf.keras.losses.SparseCategoricalCrossentropy, prediction_kind='sparse_categorical',
      description=f'FedProx {label}, {num_devices} devices, softmax regression')
