"""TFF dataset loading from tiny files in TFF's on-disk formats, and the offline errors."""

import collections
import io
import json
import os
import sqlite3
import tarfile
import time
import urllib.request

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_lab.data import tff_datasets

_RNG = np.random.default_rng(0)
_EMNIST_CLIENTS = {'f0000_14': 3, 'f0001_41': 2, 'f0002_07': 4}


def _emnist_rows():
  rows = []
  for split in ('all_train', 'all_test', 'digits_only_train', 'digits_only_test'):
    classes = 10 if split.startswith('digits') else 62
    for cid, n in _EMNIST_CLIENTS.items():
      for _ in range(n):
        rows.append((split, cid, {'pixels': _RNG.random((28, 28), dtype=np.float32),
                                  'label': np.int64(_RNG.integers(classes))}))
  return rows


def _write_counts(data_dir, kind, text, archive_only=False):
  """Writes `<data_dir>/datasets/stackoverflow.<kind>_count.tar.bz2` (and the extracted file)."""
  path = tff_datasets.counts_path(kind, data_dir)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with tarfile.open(path + '.tar.bz2', 'w:bz2') as tar:
    info = tarfile.TarInfo(os.path.basename(path))
    info.size = len(text.encode())
    tar.addfile(info, io.BytesIO(text.encode()))
  if not archive_only:
    with open(path, 'w') as f:
      f.write(text)


@pytest.fixture
def emnist_dir(tmp_path):
  rows = _emnist_rows()
  tff_datasets.write_sql_client_data(str(tmp_path / 'emnist_all.sqlite'), rows)
  return str(tmp_path), rows


def _schema(path):
  with sqlite3.connect(path) as db:
    tables = sorted(r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'"))
    return {t: [r[1:4] for r in db.execute(f'PRAGMA table_info({t})')] for t in tables}


def test_writer_uses_tffs_schema(tmp_path):
  data = tff.simulation.datasets.TestClientData(
      {'a': collections.OrderedDict(v=np.array([1, 2], np.int64))})
  theirs = str(tmp_path / 'theirs.sqlite')
  tff.simulation.datasets.save_to_sql_client_data(['a'], data.create_tf_dataset_for_client,
                                                  theirs)
  ours = str(tmp_path / 'ours.sqlite')
  tff_datasets.write_sql_client_data(ours, [('default_split', 'a', {'v': np.int64(1)}),
                                            ('default_split', 'a', {'v': np.int64(2)})])
  assert _schema(ours) == _schema(theirs)
  with sqlite3.connect(ours) as db:
    assert list(db.execute('SELECT * FROM client_metadata')) == [('a', 'default_split', 2)]
  # TFF's generic reader parses it back.
  parsed = tff.simulation.datasets.load_and_parse_sql_client_data(
      ours, {'v': tf.TensorSpec([], tf.int64)})
  assert [int(e['v']) for e in parsed.create_tf_dataset_for_client('a')] == [1, 2]


@pytest.mark.parametrize('only_digits, split', [(False, 'all_train'), (True, 'digits_only_train')])
def test_emnist_round_trip(emnist_dir, only_digits, split):
  data_dir, rows = emnist_dir
  train, test = tff_datasets.load_emnist(only_digits, data_dir)
  assert train.client_ids == test.client_ids == sorted(_EMNIST_CLIENTS)
  for cid in train.client_ids:
    written = [f for s, c, f in rows if s == split and c == cid]
    got = list(train.create_tf_dataset_for_client(cid).as_numpy_iterator())
    assert len(got) == len(written)
    for g, w in zip(got, written):
      np.testing.assert_array_equal(g['pixels'], w['pixels'])
      assert g['label'] == w['label']


def test_shakespeare_stackoverflow_cifar_round_trips(tmp_path):
  snippets = {'THE_TEMPEST_MIRANDA': [b'If by your art', b'my dearest father'], 'HAMLET_HAMLET':
              [b'To be, or not to be']}
  tff_datasets.write_sql_client_data(
      str(tmp_path / 'shakespeare.sqlite'),
      [(split, cid, {'snippets': s}) for split in ('train', 'test')
       for cid, ss in snippets.items() for s in ss])
  train, test = tff_datasets.load_shakespeare(str(tmp_path))
  assert [e['snippets'] for e in test.create_tf_dataset_for_client('HAMLET_HAMLET')
          .as_numpy_iterator()] == snippets['HAMLET_HAMLET']

  post = {'tokens': b'how do i sort a list', 'title': b'sorting', 'tags': b'python|list',
          'type': b'question', 'creation_date': b'2010-01-01', 'score': np.int64(3)}
  tff_datasets.write_sql_client_data(
      str(tmp_path / 'stackoverflow.sqlite'),
      [(split, '00000001', post) for split in ('train', 'heldout', 'test')])
  splits = tff_datasets.load_stackoverflow(str(tmp_path))
  for data in splits:
    (got,) = data.create_tf_dataset_for_client('00000001').as_numpy_iterator()
    assert got == post

  image = _RNG.integers(0, 256, (32, 32, 3))
  tff_datasets.write_sql_client_data(
      str(tmp_path / 'cifar100.sqlite'),
      [(split, '7', {'image': image, 'label': np.int64(42), 'coarse_label': np.int64(4)})
       for split in ('train', 'test')])
  train, test = tff_datasets.load_cifar100(str(tmp_path))
  (got,) = test.create_tf_dataset_for_client('7').as_numpy_iterator()
  np.testing.assert_array_equal(got['image'], image)
  assert (got['label'], got['coarse_label']) == (42, 4)


@pytest.fixture
def no_network(monkeypatch):
  def refuse(*args, **kwargs):
    raise AssertionError(f'network access attempted: {args}')
  monkeypatch.setattr(urllib.request, 'urlopen', refuse)
  monkeypatch.setattr(tf.keras.utils, 'get_file', refuse)


@pytest.mark.parametrize('load, filename, url', [
    (lambda d: tff_datasets.load_emnist(False, d), 'emnist_all.sqlite',
     'https://storage.googleapis.com/tff-datasets-public/emnist_all.sqlite.lzma'),
    (tff_datasets.load_shakespeare, 'shakespeare.sqlite',
     'https://storage.googleapis.com/tff-datasets-public/shakespeare.sqlite.lzma'),
    (tff_datasets.load_stackoverflow, 'stackoverflow.sqlite',
     'https://storage.googleapis.com/tff-datasets-public/stackoverflow.sqlite.lzma'),
    (tff_datasets.load_cifar100, 'cifar100.sqlite',
     'https://storage.googleapis.com/tff-datasets-public/cifar100.sqlite.lzma'),
    (lambda d: tff_datasets.load_stackoverflow_word_counts(10, d),
     os.path.join('datasets', 'stackoverflow.word_count'),
     'https://storage.googleapis.com/tff-datasets-public/stackoverflow.word_count.tar.bz2'),
    (tff_datasets.load_stackoverflow_tag_counts,
     os.path.join('datasets', 'stackoverflow.tag_count'),
     'https://storage.googleapis.com/tff-datasets-public/stackoverflow.tag_count.tar.bz2'),
])
def test_missing_file_fails_at_once_with_one_line(tmp_path, no_network, load, filename, url):
  start = time.monotonic()
  with pytest.raises(tff_datasets.DatasetNotAvailableError) as error:
    load(str(tmp_path))
  assert time.monotonic() - start < 1.0
  message = str(error.value)
  assert '\n' not in message
  assert f'expected {tmp_path / filename} ' in message and url in message
  assert isinstance(error.value, ValueError)  # the CLIs print ValueErrors as one line


def test_corrupt_database_is_one_line(tmp_path):
  (tmp_path / 'cifar100.sqlite').write_bytes(b'<html>not a database</html>' * 10)
  with pytest.raises(tff_datasets.DatasetNotAvailableError,
                     match=r'^CIFAR-100: .*cifar100.sqlite is not a TFF SQLite database'):
    tff_datasets.load_cifar100(str(tmp_path))


def test_count_files_are_read_as_tff_reads_them(tmp_path, monkeypatch):
  words = ''.join(f'w{i} {1000 - i}\n' for i in range(30))
  tags = json.dumps({'java': 5, 'python': 9, 'c++': 7})
  _write_counts(str(tmp_path), 'word', words, archive_only=True)
  _write_counts(str(tmp_path), 'tag', tags, archive_only=True)
  ours_words = tff_datasets.load_stackoverflow_word_counts(12, str(tmp_path))  # extracts
  ours_tags = tff_datasets.load_stackoverflow_tag_counts(str(tmp_path))
  assert list(ours_words) == [f'w{i}' for i in range(12)] and ours_words['w3'] == 997
  assert list(ours_tags.items()) == [('python', 9), ('c++', 7), ('java', 5)]
  # TFF's own readers, pointed at the same archives (instead of downloading them).
  monkeypatch.setattr(tf.keras.utils, 'get_file',
                      lambda fname, **kwargs: os.path.join(str(tmp_path), 'datasets', fname))
  so = tff.simulation.datasets.stackoverflow
  assert ours_words == so.load_word_counts(vocab_size=12)
  assert ours_tags == so.load_tag_counts()


def test_pooled_arrays_hold_every_example_once(emnist_dir):
  data_dir, rows = emnist_dir
  _, test = tff_datasets.load_emnist(False, data_dir)
  test = test.preprocess(
      lambda d: d.map(lambda e: collections.OrderedDict(x=e['pixels'], y=e['label'])))
  x, y = tff_datasets.pooled_arrays(test)
  written = [f for s, _, f in rows if s == 'all_test']
  assert len(x) == len(y) == len(written)
  key = lambda pixels, label: (label, pixels.tobytes())
  assert sorted(map(key, x, y)) == sorted(key(f['pixels'], int(f['label'])) for f in written)
  x2, _ = tff_datasets.pooled_arrays(test, max_examples=4)
  np.testing.assert_array_equal(x2, x[:4])
