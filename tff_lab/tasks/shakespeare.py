"""`shakespeare`: TFF's federated Shakespeare, next-character prediction, as TFF's baseline.

TFF's `tff.simulation.baselines.shakespeare.create_character_prediction_task`: LEAF's Shakespeare
(Caldas et al., arXiv:1812.01097; one client per speaking role, 715 clients), TFF's preprocessing
(`char_prediction_preprocessing`: each snippet becomes character ids from TFF's 86-symbol
vocabulary, framed by begin/end tokens, zero-padded to a multiple of 81 and cut into 81-character
windows; x = the first 80, y = the last 80) and TFF's model: McMahan et al.'s character LSTM,
AISTATS 2017 (arXiv:1602.05629) — an 8-dimensional embedding, two LSTM(256) layers and a dense
layer of logits (`tff_lab.models.shakespeare`, built as TFF's `char_prediction_models`).

The embedding masks padding inputs (id 0), and Keras applies that mask to the loss too: the loss
is the mean cross-entropy over the positions whose input is not padding, in TFF as here. Accuracy
(`next_token`) counts the positions whose target is not padding.
"""

import functools

import tensorflow as tf
from tensorflow_federated.python.simulation.baselines.shakespeare import char_prediction_preprocessing

from tff_lab.data import cache
from tff_lab.data import shakespeare_preprocessing
from tff_lab.data import tff_datasets
from tff_lab.models import shakespeare as shakespeare_models
from tff_lab.tasks import task as task_lib

SEQUENCE_LENGTH = char_prediction_preprocessing.DEFAULT_SEQUENCE_LENGTH  # 80
VOCAB_SIZE = len(char_prediction_preprocessing.CHAR_VOCAB) + 4  # + padding, OOV, begin, end


def build_shakespeare_task(sequence_length: int = SEQUENCE_LENGTH,
                           data_dir: str = tff_datasets.DEFAULT_DATA_DIR, download: bool = False,
                           centralized_test_size: int = 0) -> task_lib.Task:
  """Builds the task.

  Args:
    sequence_length: Characters per example (80 in TFF and McMahan et al.).
    data_dir: Cache directory holding `shakespeare.sqlite`.
    download: Let TFF download the file if it is missing.
    centralized_test_size: Sequences kept in the pooled centralised test set (0: all).

  Raises:
    ValueError: For a non-positive sequence length.
    DatasetNotAvailableError: If the data is not cached and `download` is False.
  """
  if sequence_length < 1:
    raise ValueError(f'shakespeare sequence_length must be >= 1, got {sequence_length}')
  train, test = tff_datasets.load_shakespeare(data_dir, download)
  preprocess = tff_datasets.per_example(char_prediction_preprocessing.create_preprocess_fn(
      tff_datasets.ONE_EXAMPLE_SPEC, sequence_length))
  # Preprocessed once per client, not every round it is sampled (tff_lab.data.cache).
  train, test = (cache.CachedClientData(d.preprocess(preprocess)) for d in (train, test))
  return task_lib.Task(
      name='shakespeare', train_data=train, test_data=test,
      centralized_test_data=tff_datasets.pooled_arrays(test, centralized_test_size),
      model_fn=functools.partial(shakespeare_models.build_shakespeare_lstm,
                                 vocab_size=VOCAB_SIZE, sequence_length=sequence_length),
      loss_fn=functools.partial(tf.keras.losses.SparseCategoricalCrossentropy, from_logits=True),
      prediction_kind='next_token',
      label_names=shakespeare_preprocessing.id_names(shakespeare_preprocessing.TFF_VOCAB),
      description=f'TFF Shakespeare (LEAF roles), next character, {sequence_length} chars, LSTM')
