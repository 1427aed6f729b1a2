"""Character-level preprocessing shared by the Shakespeare tasks (TFF's and the offline one).

The conventions are those of TFF's Shakespeare baseline
(`tff.simulation.baselines.shakespeare`, after McMahan et al., AISTATS 2017, arXiv:1602.05629):
  * ids: 0 is padding; the i-th vocabulary character is i + 1; then out-of-vocabulary (OOV),
    beginning-of-snippet (BOS) and end-of-snippet (EOS), so a vocabulary of V characters gives
    V + 4 ids;
  * characters are the snippet's UTF-8 bytes (TFF's `tf.strings.bytes_split`), so a non-ASCII
    character is one OOV id per byte;
  * each snippet becomes `[BOS] ids [EOS]`, padded with 0 to a multiple of
    `sequence_length + 1`, and cut into pieces of `sequence_length + 1`; a piece gives the input
    `x = piece[:-1]` and the target `y = piece[1:]`: every position predicts the next
    character from the characters before it in its window. The first character of each piece is
    context only, so 1 character in `sequence_length + 1` is never a target (as in TFF).

Two vocabularies: `LEAF_VOCAB`, the 80 characters of LEAF (Caldas et al., arXiv:1812.01097,
`models/utils/language_utils.py`), whose own `str.find` lookup turns an unknown character into
-1 (here: the OOV id), and `TFF_VOCAB`, TFF's 86 (`char_prediction_preprocessing.CHAR_VOCAB`).

`to_ids` and `to_sequences` are the NumPy implementation (used to build cached arrays once);
`build_char_dataset` is the same in `tf.data`, for TFF's snippet datasets. They give identical
ids, and with `TFF_VOCAB` both equal TFF's own `create_preprocess_fn`.
"""

import collections
from collections.abc import Iterable, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

SEQUENCE_LENGTH = 80
PAD = 0
LEAF_VOCAB = tuple(
    '\n !"&\'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}')
TFF_VOCAB = tuple(tff.simulation.baselines.shakespeare.char_prediction_preprocessing.CHAR_VOCAB)
VOCABULARIES = {'leaf': LEAF_VOCAB, 'tff': TFF_VOCAB}


def special_tokens(vocab: Sequence[str] = LEAF_VOCAB) -> tuple[int, int, int, int]:
  """`(pad, oov, bos, eos)` ids, as TFF's `get_special_tokens` for its vocabulary."""
  return PAD, len(vocab) + 1, len(vocab) + 2, len(vocab) + 3


def id_names(vocab: Sequence[str] = LEAF_VOCAB) -> dict[int, str]:
  """How each id reads: its character (space as '␣', newline as '\\n'), then `<oov>`, `<bos>`,
  `<eos>`; padding (0) is never a target."""
  shown = {' ': '␣', '\n': '\\n', '\t': '\\t'}
  names = {i + 1: shown.get(c, c) for i, c in enumerate(vocab)}
  _, oov, bos, eos = special_tokens(vocab)
  names.update({oov: '<oov>', bos: '<bos>', eos: '<eos>'})
  return names


def num_ids(vocab: Sequence[str] = LEAF_VOCAB) -> int:
  """Number of distinct ids (the model's vocabulary size): characters plus the 4 specials."""
  return len(vocab) + 4


def _byte_table(vocab: Sequence[str]) -> np.ndarray:
  if any(len(c) != 1 or ord(c) > 127 for c in vocab) or len(set(vocab)) != len(vocab):
    raise ValueError('vocab must hold distinct single ASCII characters')
  table = np.full(256, special_tokens(vocab)[1], dtype=np.int64)
  table[[ord(c) for c in vocab]] = np.arange(1, len(vocab) + 1)
  return table


def to_ids(snippets: Iterable[str], vocab: Sequence[str] = LEAF_VOCAB,
           sequence_length: int = SEQUENCE_LENGTH) -> np.ndarray:
  """Token ids of the snippets, each `[BOS] chars [EOS]` padded to a multiple of length + 1.

  Args:
    snippets: Strings (e.g. one per speech, or one per role).
    vocab: The characters with ids 1..V.
    sequence_length: Window length L; every snippet is padded to a multiple of L + 1.

  Returns:
    One int64 array: the padded snippets one after the other.
  """
  if sequence_length < 1:
    raise ValueError(f'sequence_length must be >= 1, got {sequence_length}')
  table = _byte_table(vocab)
  _, _, bos, eos = special_tokens(vocab)
  pieces = []
  for snippet in snippets:
    chars = table[np.frombuffer(snippet.encode('utf-8'), dtype=np.uint8)]
    padding = -(len(chars) + 2) % (sequence_length + 1)
    pieces.append(np.concatenate([[bos], chars, [eos], np.zeros(padding, np.int64)]))
  return np.concatenate(pieces).astype(np.int64) if pieces else np.zeros(0, np.int64)


def to_sequences(ids: np.ndarray, sequence_length: int = SEQUENCE_LENGTH
                 ) -> tuple[np.ndarray, np.ndarray]:
  """Cuts `to_ids` output into windows: `x` [n, L] and its next characters `y` [n, L]."""
  ids = np.asarray(ids)
  if ids.ndim != 1 or len(ids) % (sequence_length + 1):
    raise ValueError(f'ids must be 1-D with a length divisible by sequence_length + 1 = '
                     f'{sequence_length + 1}, got shape {ids.shape}')
  pieces = ids.reshape(-1, sequence_length + 1)
  return pieces[:, :-1], pieces[:, 1:]


def to_text(ids: Iterable[int], vocab: Sequence[str] = LEAF_VOCAB) -> str:
  """Inverse of the character mapping, for reading model inputs and samples.

  Padding is dropped; OOV, BOS and EOS appear as `<oov>`, `<bos>` and `<eos>`.
  """
  _, oov, bos, eos = special_tokens(vocab)
  names = {oov: '<oov>', bos: '<bos>', eos: '<eos>', PAD: ''}
  return ''.join(names[i] if i in names else vocab[i - 1] for i in map(int, ids))


def build_char_dataset(snippets: tf.data.Dataset, vocab: Sequence[str] = LEAF_VOCAB,
                       sequence_length: int = SEQUENCE_LENGTH) -> tf.data.Dataset:
  """The same windows as `to_sequences(to_ids(...))`, computed in `tf.data`.

  Args:
    snippets: A dataset of scalar strings, or of TFF Shakespeare elements
      `OrderedDict(snippets=string)`.
    vocab: The characters with ids 1..V.
    sequence_length: Window length L.

  Returns:
    An unbatched dataset of `OrderedDict(x=int64 [L], y=int64 [L])`.
  """
  if sequence_length < 1:
    raise ValueError(f'sequence_length must be >= 1, got {sequence_length}')
  _byte_table(vocab)  # Validates the vocabulary.
  _, _, bos, eos = special_tokens(vocab)
  table = tf.lookup.StaticVocabularyTable(
      tf.lookup.KeyValueTensorInitializer(list(vocab), tf.range(len(vocab), dtype=tf.int64)),
      num_oov_buckets=1)  # Unknown -> len(vocab), which is the OOV id after the + 1.

  def to_tokens(snippet):
    if isinstance(snippet, dict):
      snippet = snippet['snippets']
    tokens = table.lookup(tf.strings.bytes_split(snippet)) + 1
    tokens = tf.concat([[bos], tokens, [eos]], 0)
    padding = tf.math.floormod(-tf.size(tokens, out_type=tf.int64), sequence_length + 1)
    return tf.concat([tokens, tf.zeros([padding], tf.int64)], 0)

  def split(piece):
    return collections.OrderedDict(x=piece[:-1], y=piece[1:])

  return (snippets.map(to_tokens).unbatch()
          .batch(sequence_length + 1, drop_remainder=True).map(split))
