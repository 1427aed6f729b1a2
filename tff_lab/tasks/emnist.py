"""`emnist62` and `emnist10`: federated EMNIST character recognition, as TFF's baseline.

TFF's `tff.simulation.baselines.emnist.create_character_recognition_task` with its data (LEAF's
per-writer split, Caldas et al. arXiv:1812.01097), its preprocessing (`emnist_preprocessing`:
28×28×1 pixels, integer label) and its models:

* `cnn_dropout` (default): TFF's `emnist_models.create_conv_dropout_model`, the EMNIST CNN of
  Reddi et al., "Adaptive Federated Optimization", ICLR 2021 (arXiv:2003.00295): two 3×3 convs
  (32, 64), max-pool, dropout 0.25, dense 128, dropout 0.5, softmax.
* `cnn`: McMahan et al.'s CNN, AISTATS 2017 (arXiv:1602.05629), TFF's `cnn`.
* `2nn`: McMahan et al.'s 2NN (two dense layers of 200), TFF's `2nn`.

EMNIST-62 has 3,400 writers and 62 classes; EMNIST-10 the digits of 3,383 writers. Each writer's
examples are split into its own train and test sets by TFF.
"""

import functools

import tensorflow as tf
from tensorflow_federated.python.simulation.baselines.emnist import emnist_models
from tensorflow_federated.python.simulation.baselines.emnist import emnist_preprocessing

from tff_lab import models
from tff_lab.data import cache
from tff_lab.data import tff_datasets
from tff_lab.tasks import task as task_lib

MODELS = ('cnn_dropout', 'cnn', '2nn')


def _model_fn(model: str, only_digits: bool):
  num_classes = 10 if only_digits else 62
  if model == 'cnn_dropout':
    return functools.partial(emnist_models.create_conv_dropout_model, only_digits=only_digits)
  if model == 'cnn':
    return functools.partial(models.build_cnn, input_shape=(28, 28, 1), num_classes=num_classes)
  return functools.partial(models.build_2nn, input_shape=(28, 28, 1), num_classes=num_classes)


def build_emnist_task(only_digits: bool, model: str = 'cnn_dropout',
                      data_dir: str = tff_datasets.DEFAULT_DATA_DIR, download: bool = False,
                      centralized_test_size: int = 0) -> task_lib.Task:
  """Builds EMNIST-10 (`only_digits`) or EMNIST-62.

  Args:
    only_digits: The 10-digit task if True, the 62-class task otherwise.
    model: `cnn_dropout`, `cnn` or `2nn`.
    data_dir: Cache directory holding `emnist_all.sqlite`.
    download: Let TFF download the file if it is missing.
    centralized_test_size: Examples kept in the pooled centralised test set (0: all).

  Raises:
    ValueError: For an unknown model.
    DatasetNotAvailableError: If the data is not cached and `download` is False.
  """
  if model not in MODELS:
    raise ValueError(f'emnist model must be one of {MODELS}, got {model!r}')
  train, test = tff_datasets.load_emnist(only_digits, data_dir, download)
  # With a `debug_seed`, TFF's parallel map keeps each client's file order (otherwise it does not,
  # and seeded client shuffles would not be reproducible); ONE_EXAMPLE_SPEC shuffles nothing.
  preprocess = tff_datasets.per_example(emnist_preprocessing.create_preprocess_fn(
      tff_datasets.ONE_EXAMPLE_SPEC, debug_seed=0))
  # Preprocessed once per client, not every round it is sampled (tff_lab.data.cache).
  train, test = (cache.CachedClientData(d.preprocess(preprocess)) for d in (train, test))
  name = 'emnist10' if only_digits else 'emnist62'
  return task_lib.Task(
      name=name, train_data=train, test_data=test,
      centralized_test_data=tff_datasets.pooled_arrays(test, centralized_test_size),
      model_fn=_model_fn(model, only_digits),
      loss_fn=tf.keras.losses.SparseCategoricalCrossentropy,
      prediction_kind='sparse_categorical',
      description=f'TFF EMNIST-{10 if only_digits else 62} (LEAF writers), {model}')


def build_emnist62_task(model: str = 'cnn_dropout',
                        data_dir: str = tff_datasets.DEFAULT_DATA_DIR, download: bool = False,
                        centralized_test_size: int = 0) -> task_lib.Task:
  """EMNIST-62: digits and upper- and lower-case letters; see `build_emnist_task`."""
  return build_emnist_task(False, model, data_dir, download, centralized_test_size)


def build_emnist10_task(model: str = 'cnn_dropout',
                        data_dir: str = tff_datasets.DEFAULT_DATA_DIR, download: bool = False,
                        centralized_test_size: int = 0) -> task_lib.Task:
  """EMNIST-10: digits only; see `build_emnist_task`."""
  return build_emnist_task(True, model, data_dir, download, centralized_test_size)
