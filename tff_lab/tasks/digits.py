"""`digits`: scikit-learn's bundled 8×8 digits split across clients by a chosen partition.

Partitions (`tff_lab.data.partition`): `iid`; `dirichlet` label skew with concentration α
(Hsu et al. 2019, arXiv:1909.06335); `shards`, McMahan et al. 2017's pathological split with k
label-sorted shards per client (arXiv:1602.05629). Each client's examples are then split into its
own train and test sets. Models: McMahan et al.'s 2NN on the 64 pixels, or their CNN on 8×8×1
(`cnn_bn`: with batch normalisation, for `--algorithm=fedbn`).
"""

import functools

import numpy as np
import tensorflow as tf

from tff_lab import models
from tff_lab.data import client_data
from tff_lab.data import digits as digits_data
from tff_lab.data import partition as partition_lib
from tff_lab.tasks import task as task_lib

PARTITIONS = ('iid', 'dirichlet', 'shards')
MODELS = ('mlp', 'cnn', 'cnn_bn')


def build_digits_task(num_clients: int = 20, partition: str = 'dirichlet', alpha: float = 0.5,
                      shards_per_client: int = 2, model: str = 'cnn',
                      test_fraction: float = 0.2, seed: int = 0) -> task_lib.Task:
  """Builds the task.

  Args:
    num_clients: Number of clients.
    partition: `iid`, `dirichlet` or `shards`.
    alpha: Dirichlet concentration (partition=dirichlet); smaller is more skewed.
    shards_per_client: Label-sorted shards per client (partition=shards).
    model: `mlp` (the 2NN), `cnn` or `cnn_bn` (the CNN with batch normalisation).
    test_fraction: Fraction of each client's examples held out for evaluation.
    seed: Partition seed.
  """
  if partition not in PARTITIONS:
    raise ValueError(f'digits partition must be one of {PARTITIONS}, got {partition!r}')
  if model not in MODELS:
    raise ValueError(f'digits model must be one of {MODELS}, got {model!r}')
  x, y = digits_data.load_digits_arrays()
  # Every client needs one training and one test example.
  parts = partition_lib.partition_labels(partition, y, num_clients, seed, alpha=alpha,
                                         shards_per_client=shards_per_client, min_size=2)
  train, test = client_data.split_clients(x, y, parts, test_fraction, seed)
  if model == 'mlp':
    model_fn = functools.partial(models.build_2nn, input_shape=(8, 8, 1), num_classes=10)
  else:
    builder = models.build_cnn_bn if model == 'cnn_bn' else models.build_cnn
    model_fn = functools.partial(builder, input_shape=(8, 8, 1), num_classes=10)
  detail = {'iid': 'IID', 'dirichlet': f'Dirichlet(alpha={alpha:g})',
            'shards': f'{shards_per_client} shards/client'}[partition]
  return task_lib.Task(
      name='digits', train_data=client_data.from_arrays(train),
      test_data=client_data.from_arrays(test), centralized_test_data=client_data.pool(test),
      model_fn=model_fn, loss_fn=tf.keras.losses.SparseCategoricalCrossentropy,
      prediction_kind='sparse_categorical',
      input_preprocessing={'description': 'sklearn digits images (8x8, values 0-16) divided by 16: '
                                          'float32 in [0, 1], shape (8, 8, 1)'},
      description=f'sklearn digits, {num_clients} clients, {detail}, {model}')
