"""`breast_cancer_silos`: a cross-silo task, breast-cancer diagnosis across a few hospitals.

Cross-silo federated learning (Kairouz et al., "Advances and Open Problems in Federated
Learning", Foundations and Trends in ML 2021, arXiv:1912.04977, Table 1): a handful of
organisations, each with a sizeable dataset, all taking part in every round. The data is
scikit-learn's bundled Breast Cancer Wisconsin (Diagnostic) set (Street, Wolberg and
Mangasarian, "Nuclear feature extraction for breast tumor diagnosis", 1993): 569 tumours, 30
features of the cell nuclei, 212 malignant and 357 benign. Here the label is 1 for malignant.

The tumours are split over `num_silos` hospitals that differ in size and in case mix:
  * `dirichlet` (default): Dirichlet(α) label skew, which also skews sizes (`partition_dirichlet`);
  * `quantity`: lognormal(σ) hospital sizes with the same case mix (`partition_quantity_skew`);
  * `iid`: equal random split.
Each hospital holds out `test_fraction` of its tumours as its own test set. Features are
standardised with the mean and standard deviation of the pooled training sets (as if the
hospitals had agreed on a common normalisation), and the model is logistic regression.
`tff_lab.evaluation.per_silo` compares, hospital by hospital, the federated model with a model
trained on that hospital's data alone.
"""

import functools

import numpy as np
import tensorflow as tf

from tff_lab import models
from tff_lab.data import client_data
from tff_lab.data import partition as partition_lib
from tff_lab.tasks import task as task_lib

PARTITIONS = ('dirichlet', 'quantity', 'iid')
NUM_FEATURES = 30


def build_breast_cancer_silos_task(num_silos: int = 5, partition: str = 'dirichlet',
                                   alpha: float = 1.0, sigma: float = 1.0,
                                   min_silo_size: int = 20, test_fraction: float = 0.25,
                                   seed: int = 0) -> task_lib.Task:
  """Builds the task.

  Args:
    num_silos: Number of hospitals.
    partition: `dirichlet`, `quantity` or `iid`.
    alpha: Dirichlet concentration (partition=dirichlet); smaller means more label skew.
    sigma: Lognormal shape of the hospital sizes (partition=quantity); larger is more skewed.
    min_silo_size: Minimum number of tumours per hospital, before its train/test split.
    test_fraction: Fraction of each hospital's tumours held out as its test set.
    seed: Partition and split seed.
  """
  from sklearn import datasets  # pylint: disable=g-import-not-at-top

  if partition not in PARTITIONS:
    raise ValueError(
        f'breast_cancer_silos partition must be one of {PARTITIONS}, got {partition!r}')
  bunch = datasets.load_breast_cancer()
  x = bunch.data.astype(np.float32)
  y = (bunch.target == 0).astype(np.float32)  # sklearn's class 0 is malignant.
  if partition == 'dirichlet':
    parts = partition_lib.partition_dirichlet(y, num_silos, alpha, seed, min_size=min_silo_size)
  elif partition == 'quantity':
    parts = partition_lib.partition_quantity_skew(len(y), num_silos, seed, 'lognormal', sigma,
                                                  min_size=min_silo_size)
  else:
    parts = partition_lib.partition_iid(len(y), num_silos, seed, min_size=min_silo_size)
  train, test = client_data.split_clients(x, y[:, None], parts, test_fraction, seed,
                                          prefix='hospital')
  pooled_x = client_data.pool(train)[0]
  mean, std = pooled_x.mean(axis=0), pooled_x.std(axis=0)

  def standardize(clients):
    return {c: ((cx - mean) / std, cy) for c, (cx, cy) in clients.items()}

  train, test = standardize(train), standardize(test)
  detail = {'dirichlet': f'Dirichlet(alpha={alpha:g})', 'quantity': f'lognormal(sigma={sigma:g})',
            'iid': 'IID'}[partition]
  return task_lib.Task(
      name='breast_cancer_silos', train_data=client_data.from_arrays(train),
      test_data=client_data.from_arrays(test), centralized_test_data=client_data.pool(test),
      model_fn=functools.partial(models.build_logistic_regression, input_dim=NUM_FEATURES),
      loss_fn=tf.keras.losses.BinaryCrossentropy, prediction_kind='binary',
      input_preprocessing={'description': 'the 30 sklearn breast-cancer features, standardised '
                                          'as (x - mean) / std with the training silos\' pooled '
                                          'mean and std below; output: P(malignant)',
                           'mean': mean.tolist(), 'std': std.tolist()},
      description=f'breast cancer (sklearn), {num_silos} hospitals, {detail}, logistic '
                  'regression')
