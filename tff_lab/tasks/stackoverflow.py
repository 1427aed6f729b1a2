"""`stackoverflow_word` and `stackoverflow_tag`: TFF's federated Stack Overflow tasks.

Both are TFF's baselines (`tff.simulation.baselines.stackoverflow`) on its Stack Overflow data
(342,477 training users), with TFF's preprocessing and models; Reddi et al., "Adaptive Federated
Optimization", ICLR 2021 (arXiv:2003.00295), §5 and App. C:

* `stackoverflow_word`, next-word prediction (`word_prediction_preprocessing`): each post's
  `tokens` become ids over the `vocab_size` most frequent words (0 padding, then the words, OOV
  buckets, begin and end of sentence), truncated or padded to `sequence_length + 1`; x and y are
  the sequence shifted by one. Model (`word_prediction_models.create_recurrent_model`): embedding
  96, one LSTM(670), a dense projection to 96 and dense logits. Its embedding masks padding
  inputs, so the loss averages over non-padding positions (in TFF too); accuracy (`next_token`)
  counts the positions whose target is not padding (TFF also reports it without OOV and EOS).
* `stackoverflow_tag`, tag prediction (`tag_prediction_preprocessing`): x is the normalised bag of
  words of `tokens` + `title` over `word_vocab_size` words, y the multi-hot vector of the post's
  tags among the `tag_vocab_size` most frequent; the model is logistic regression (one sigmoid
  dense layer) with binary cross-entropy. TFF sums that loss over the batch; here it is the batch
  mean, like every tff_lab loss (multiply the client learning rate by the batch size to match TFF).
  Accuracy (`multi_label`) is TFF's recall@5: the fraction of true tags among the 5 top scores.

The defaults keep the vocabularies small for this machine; TFF's and Reddi et al.'s are 10,000
words (both tasks) and 500 tags.
"""

import functools

import tensorflow as tf
from tensorflow_federated.python.simulation.baselines.stackoverflow import constants
from tensorflow_federated.python.simulation.baselines.stackoverflow import tag_prediction_preprocessing
from tensorflow_federated.python.simulation.baselines.stackoverflow import word_prediction_models
from tensorflow_federated.python.simulation.baselines.stackoverflow import word_prediction_preprocessing

from tff_lab.data import cache
from tff_lab.data import tff_datasets
from tff_lab.tasks import task as task_lib

DEFAULT_CENTRALIZED_TEST_SIZE = 10_000  # The test split has 16.6 million posts.


def build_stackoverflow_word_task(vocab_size: int = 1000,
                                  sequence_length: int = constants.DEFAULT_SEQUENCE_LENGTH,
                                  num_oov_buckets: int = 1, embedding_size: int = 96,
                                  lstm_size: int = 670,
                                  data_dir: str = tff_datasets.DEFAULT_DATA_DIR,
                                  download: bool = False,
                                  centralized_test_size: int = DEFAULT_CENTRALIZED_TEST_SIZE
                                  ) -> task_lib.Task:
  """Builds next-word prediction.

  Args:
    vocab_size: Most frequent words kept (TFF: 10,000).
    sequence_length: Words per example (TFF: 20).
    num_oov_buckets: Hash buckets for out-of-vocabulary words.
    embedding_size: Word embedding (and projection) width (TFF: 96).
    lstm_size: LSTM units (TFF: 670).
    data_dir: Cache directory holding `stackoverflow.sqlite` and the word counts.
    download: Let TFF download missing files.
    centralized_test_size: Test posts in the pooled centralised test set (0: all).

  Raises:
    ValueError: For a non-positive size.
    DatasetNotAvailableError: If the data is not cached and `download` is False.
  """
  for option, value in (('vocab_size', vocab_size), ('sequence_length', sequence_length),
                        ('num_oov_buckets', num_oov_buckets),
                        ('embedding_size', embedding_size), ('lstm_size', lstm_size)):
    if value < 1:
      raise ValueError(f'stackoverflow_word {option} must be >= 1, got {value}')
  train, _, test = tff_datasets.load_stackoverflow(data_dir, download)
  vocab = list(tff_datasets.load_stackoverflow_word_counts(vocab_size, data_dir, download))
  preprocess = tff_datasets.per_example(word_prediction_preprocessing.create_preprocess_fn(
      tff_datasets.ONE_EXAMPLE_SPEC, vocab, sequence_length, num_oov_buckets))
  # Preprocessed once per client, not every round it is sampled (tff_lab.data.cache).
  train, test = (cache.CachedClientData(d.preprocess(preprocess)) for d in (train, test))
  special = word_prediction_preprocessing.get_special_tokens(len(vocab), num_oov_buckets)
  return task_lib.Task(
      name='stackoverflow_word', train_data=train, test_data=test,
      centralized_test_data=tff_datasets.pooled_arrays(test, centralized_test_size),
      model_fn=functools.partial(
          word_prediction_models.create_recurrent_model,
          vocab_size=len(vocab) + special.get_number_of_special_tokens(),
          embedding_size=embedding_size, lstm_size=lstm_size),
      loss_fn=functools.partial(tf.keras.losses.SparseCategoricalCrossentropy, from_logits=True),
      prediction_kind='next_token',
      description=f'TFF Stack Overflow next word, {len(vocab)} words, {sequence_length} per post')


def build_stackoverflow_tag_task(word_vocab_size: int = 1000,
                                 tag_vocab_size: int = constants.DEFAULT_TAG_VOCAB_SIZE,
                                 data_dir: str = tff_datasets.DEFAULT_DATA_DIR,
                                 download: bool = False,
                                 centralized_test_size: int = DEFAULT_CENTRALIZED_TEST_SIZE
                                 ) -> task_lib.Task:
  """Builds tag prediction.

  Args:
    word_vocab_size: Most frequent words in the bag of words (TFF: 10,000).
    tag_vocab_size: Most frequent tags predicted (TFF: 500).
    data_dir: Cache directory holding `stackoverflow.sqlite` and the word and tag counts.
    download: Let TFF download missing files.
    centralized_test_size: Test posts in the pooled centralised test set (0: all).

  Raises:
    ValueError: For a non-positive vocabulary size.
    DatasetNotAvailableError: If the data is not cached and `download` is False.
  """
  for option, value in (('word_vocab_size', word_vocab_size), ('tag_vocab_size', tag_vocab_size)):
    if value < 1:
      raise ValueError(f'stackoverflow_tag {option} must be >= 1, got {value}')
  train, _, test = tff_datasets.load_stackoverflow(data_dir, download)
  word_vocab = list(tff_datasets.load_stackoverflow_word_counts(word_vocab_size, data_dir,
                                                                download))
  tag_vocab = list(tff_datasets.load_stackoverflow_tag_counts(data_dir, download))[:tag_vocab_size]
  preprocess = tff_datasets.per_example(tag_prediction_preprocessing.create_preprocess_fn(
      tff_datasets.ONE_EXAMPLE_SPEC, word_vocab, tag_vocab))
  # Preprocessed once per client, not every round it is sampled (tff_lab.data.cache).
  train, test = (cache.CachedClientData(d.preprocess(preprocess)) for d in (train, test))

  def model_fn() -> tf.keras.Model:
    inputs = tf.keras.Input(shape=(len(word_vocab),))
    outputs = tf.keras.layers.Dense(len(tag_vocab), activation='sigmoid')(inputs)
    return tf.keras.Model(inputs, outputs, name='tag_logistic_regression')

  return task_lib.Task(
      name='stackoverflow_tag', train_data=train, test_data=test,
      centralized_test_data=tff_datasets.pooled_arrays(test, centralized_test_size),
      model_fn=model_fn, loss_fn=tf.keras.losses.BinaryCrossentropy,
      prediction_kind='multi_label',
      description=f'TFF Stack Overflow tags, {len(word_vocab)} words -> {len(tag_vocab)} tags, '
                  'logistic regression')
