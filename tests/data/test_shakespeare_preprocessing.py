"""Character ids and windows: NumPy, tf.data and TFF's own preprocessing agree."""

import collections

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_lab.data import shakespeare_preprocessing as pp

TFF_PREPROCESSING = tff.simulation.baselines.shakespeare.char_prediction_preprocessing
SNIPPETS = ["Who's there?", '', 'Nay, answer me: stand, and unfold yourself. ' * 4,
            'OOV in LEAF: _ @ $; in both: é ~ and `\tq`', '}>' * 41]


def _reference_ids(snippet, vocab, sequence_length):
  """Independent re-implementation: one id per UTF-8 byte, framed and padded."""
  oov, bos, eos = len(vocab) + 1, len(vocab) + 2, len(vocab) + 3
  index = {c: i + 1 for i, c in enumerate(vocab)}
  ids = [bos] + [index.get(chr(b), oov) for b in snippet.encode('utf-8')] + [eos]
  while len(ids) % (sequence_length + 1):
    ids.append(0)
  return ids


def test_vocabularies():
  assert len(pp.LEAF_VOCAB) == 80 and len(set(pp.LEAF_VOCAB)) == 80
  assert list(pp.TFF_VOCAB) == list(TFF_PREPROCESSING.CHAR_VOCAB)
  assert pp.special_tokens(pp.TFF_VOCAB) == TFF_PREPROCESSING.get_special_tokens()
  assert pp.num_ids(pp.LEAF_VOCAB) == 84 and pp.num_ids(pp.TFF_VOCAB) == 90


@pytest.mark.parametrize('vocab', [pp.LEAF_VOCAB, pp.TFF_VOCAB], ids=['leaf', 'tff'])
@pytest.mark.parametrize('sequence_length', [80, 7])
def test_to_ids_matches_reference(vocab, sequence_length):
  ids = pp.to_ids(SNIPPETS, vocab, sequence_length)
  expected = [i for s in SNIPPETS for i in _reference_ids(s, vocab, sequence_length)]
  np.testing.assert_array_equal(ids, expected)
  assert ids.dtype == np.int64 and len(ids) % (sequence_length + 1) == 0


def test_out_of_vocabulary_characters():
  leaf_oov, tff_oov = pp.special_tokens(pp.LEAF_VOCAB)[1], pp.special_tokens(pp.TFF_VOCAB)[1]
  for char, in_leaf, in_tff in [('}', True, False), ('>', True, False), ('_', False, True),
                                ('a', True, True), ('~', False, False)]:
    assert (pp.to_ids([char], pp.LEAF_VOCAB)[1] != leaf_oov) == in_leaf, char
    assert (pp.to_ids([char], pp.TFF_VOCAB)[1] != tff_oov) == in_tff, char
  # A non-ASCII character is one OOV id per UTF-8 byte, as TFF's bytes_split gives.
  np.testing.assert_array_equal(pp.to_ids(['é'])[1:3], [leaf_oov, leaf_oov])


def test_windows_predict_the_next_character():
  text = 'Two households, both alike in dignity, in fair Verona, where we lay our scene.'
  ids = pp.to_ids([text, text[:20]], sequence_length=10)
  x, y = pp.to_sequences(ids, sequence_length=10)
  assert x.shape == y.shape and x.shape[1] == 10
  np.testing.assert_array_equal(x[:, 1:], y[:, :-1])  # y is x shifted by one.
  # The windows tile the id stream: each holds 11 ids, the first 10 as input, the last 10 as
  # targets (so a window's first character is context only, as in TFF).
  np.testing.assert_array_equal(np.concatenate([x, y[:, -1:]], axis=1).ravel(), ids)
  assert pp.to_text(ids) == f'<bos>{text}<eos><bos>{text[:20]}<eos>'
  _, _, bos, eos = pp.special_tokens()
  assert (x[:, 0] == bos).sum() == 2 and not (y == bos).any()  # Snippets start windows.
  assert (y == eos).sum() == 2


@pytest.mark.parametrize('vocab', [pp.LEAF_VOCAB, pp.TFF_VOCAB], ids=['leaf', 'tff'])
def test_tf_data_equals_numpy(vocab):
  x, y = pp.to_sequences(pp.to_ids(SNIPPETS, vocab))
  for elements in (SNIPPETS, collections.OrderedDict(snippets=SNIPPETS)):
    windows = list(pp.build_char_dataset(tf.data.Dataset.from_tensor_slices(elements), vocab))
    np.testing.assert_array_equal(np.stack([w['x'] for w in windows]), x)
    np.testing.assert_array_equal(np.stack([w['y'] for w in windows]), y)


def test_equals_tff_preprocessing():
  spec = tff.simulation.baselines.ClientSpec(num_epochs=1, batch_size=1000,
                                             shuffle_buffer_size=1)
  dataset = tf.data.Dataset.from_tensor_slices(collections.OrderedDict(snippets=SNIPPETS))
  tff_x, tff_y = next(iter(TFF_PREPROCESSING.create_preprocess_fn(spec)(dataset)))
  x, y = pp.to_sequences(pp.to_ids(SNIPPETS, pp.TFF_VOCAB))
  np.testing.assert_array_equal(tff_x, x)
  np.testing.assert_array_equal(tff_y, y)


@pytest.mark.parametrize('call, match', [
    (lambda: pp.to_ids(['a'], vocab=('a', 'a')), 'vocab'),
    (lambda: pp.to_ids(['a'], vocab=('ab',)), 'vocab'),
    (lambda: pp.to_ids(['a'], sequence_length=0), 'sequence_length'),
    (lambda: pp.to_sequences(np.zeros(80)), 'divisible'),
    (lambda: pp.build_char_dataset(tf.data.Dataset.from_tensor_slices(['a']),
                                   sequence_length=0), 'sequence_length'),
])
def test_invalid_arguments(call, match):
  with pytest.raises(ValueError, match=match):
    call()


def test_id_names_read_each_target_id_as_its_character():
  names = pp.id_names(pp.LEAF_VOCAB)
  ids = pp.to_ids(['to be'], pp.LEAF_VOCAB, sequence_length=8)
  _, oov, bos, eos = pp.special_tokens(pp.LEAF_VOCAB)
  assert ''.join(names[i] for i in ids if i not in (pp.PAD, bos, eos)) == 'to␣be'
  assert (names[oov], names[bos], names[eos]) == ('<oov>', '<bos>', '<eos>')
  assert len(names) == pp.num_ids(pp.LEAF_VOCAB) - 1  # every id but padding
