"""TFF's hosted federated datasets, loaded through `tff.simulation.datasets` from a local cache.

The datasets are those of TFF's baselines (`tff.simulation.baselines`) and of Reddi et al.,
"Adaptive Federated Optimization", ICLR 2021 (arXiv:2003.00295):

* EMNIST (Caldas et al., "LEAF: A Benchmark for Federated Settings", arXiv:1812.01097): one
  client per writer; `emnist_all.sqlite`, splits `all_train`/`all_test` (62 classes) and
  `digits_only_train`/`digits_only_test` (10 classes); features `pixels` float [28, 28] and
  `label` int64.
* Shakespeare (LEAF; McMahan et al., AISTATS 2017, arXiv:1602.05629): one client per speaking role;
  `shakespeare.sqlite`, splits `train`/`test`; feature `snippets` (bytes).
* Stack Overflow: one client per user; `stackoverflow.sqlite`, splits `train`/`heldout`/`test`;
  features `tokens`, `title`, `tags` (`|`-separated), `type`, `creation_date` (bytes) and `score`
  (int64). Vocabularies: `datasets/stackoverflow.word_count` (lines `word count`, most frequent
  first) and `datasets/stackoverflow.tag_count` (a JSON object), each shipped as a `.tar.bz2`.
* CIFAR-100 (Reddi et al.'s Pachinko-allocation split): 500 train and 100 test clients;
  `cifar100.sqlite`, splits `train`/`test`; features `image` int64 [32, 32, 3], `label` and
  `coarse_label` (int64).

Every `.sqlite` file is TFF's `SqlClientData` format: a table `examples(split_name, client_id,
serialized_example_proto)` holding one serialized `tf.train.Example` per row, and a table
`client_metadata(client_id, split_name, num_examples)`. TFF downloads each one as `<file>.lzma`
and keeps the decompressed file in the cache directory; the vocabularies go through
`tf.keras.utils.get_file`, i.e. into `<cache>/datasets/`.

Offline use: with `download=False` (the default) a missing file raises `DatasetNotAvailableError`
at once, with one line naming the file and where to get it, before anything could touch the
network. `download=True` lets TFF fetch what is missing.
"""

import collections
from collections.abc import Callable
import dataclasses
import json
import os
import sqlite3
import tarfile

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

DEFAULT_DATA_DIR = '~/.cache/tff_lab/tff_datasets'
_URL_ROOT = 'https://storage.googleapis.com/tff-datasets-public'
_OR_DOWNLOAD = 'or let TFF download it: download=True, flag --<task>_download'

# One example at a time: how TFF's baseline preprocessing functions are used to produce single
# examples (see `per_example`); shuffling, epochs and batching are the Task's ClientSpec's job.
ONE_EXAMPLE_SPEC = tff.simulation.baselines.ClientSpec(num_epochs=1, batch_size=1,
                                                       shuffle_buffer_size=1)


class DatasetNotAvailableError(ValueError):
  """A dataset file is missing from the cache (and downloading was not allowed) or unreadable."""


@dataclasses.dataclass(frozen=True)
class _Database:
  title: str
  filename: str  # The decompressed file TFF looks for in its cache directory.

  @property
  def url(self) -> str:
    return f'{_URL_ROOT}/{self.filename}.lzma'


DATABASES = {
    'emnist': _Database('EMNIST', 'emnist_all.sqlite'),
    'shakespeare': _Database('Shakespeare', 'shakespeare.sqlite'),
    'stackoverflow': _Database('Stack Overflow', 'stackoverflow.sqlite'),
    'cifar100': _Database('CIFAR-100', 'cifar100.sqlite'),
}
# `tff.simulation.datasets.stackoverflow.load_{word,tag}_counts` archives (Keras' get_file).
COUNT_FILES = {'word': 'stackoverflow.word_count', 'tag': 'stackoverflow.tag_count'}


def database_path(name: str, data_dir: str = DEFAULT_DATA_DIR) -> str:
  """Where TFF's `load_data(cache_dir=data_dir)` expects the decompressed database `name`."""
  return os.path.join(os.path.expanduser(data_dir), DATABASES[name].filename)


def counts_path(kind: str, data_dir: str = DEFAULT_DATA_DIR) -> str:
  """The extracted Stack Overflow `word` or `tag` count file inside `data_dir`."""
  return os.path.join(os.path.expanduser(data_dir), 'datasets', COUNT_FILES[kind])


def _require_database(name: str, data_dir: str, download: bool) -> str:
  path = database_path(name, data_dir)
  if not download and not os.path.exists(path):
    db = DATABASES[name]
    raise DatasetNotAvailableError(
        f'{db.title} not found: expected {path} (download {db.url}, decompress it with '
        f'`xz -d`, and place it there; {_OR_DOWNLOAD})')
  return path


def _load(name: str, data_dir: str, download: bool, load_fn: Callable[[str], tuple]) -> tuple:
  """Calls TFF's loader on `data_dir` after the cache check, with one-line errors."""
  path = _require_database(name, data_dir, download)
  format_error = tff.simulation.datasets.sql_client_data.DatabaseFormatError
  try:
    return load_fn(os.path.expanduser(data_dir))
  except (sqlite3.DatabaseError, format_error) as e:
    raise DatasetNotAvailableError(
        f'{DATABASES[name].title}: {path} is not a TFF SQLite database ({e})') from None


def load_emnist(only_digits: bool, data_dir: str = DEFAULT_DATA_DIR, download: bool = False
                ) -> tuple[tff.simulation.datasets.ClientData, tff.simulation.datasets.ClientData]:
  """`(train, test)` of EMNIST-10 (`only_digits`) or EMNIST-62; elements `pixels`, `label`."""
  return _load('emnist', data_dir, download, lambda d: tff.simulation.datasets.emnist.load_data(
      only_digits=only_digits, cache_dir=d))


def load_shakespeare(data_dir: str = DEFAULT_DATA_DIR, download: bool = False
                     ) -> tuple[tff.simulation.datasets.ClientData,
                                tff.simulation.datasets.ClientData]:
  """`(train, test)` of Shakespeare; elements `snippets`."""
  return _load('shakespeare', data_dir, download,
               lambda d: tff.simulation.datasets.shakespeare.load_data(cache_dir=d))


def load_stackoverflow(data_dir: str = DEFAULT_DATA_DIR, download: bool = False
                       ) -> tuple[tff.simulation.datasets.ClientData,
                                  tff.simulation.datasets.ClientData,
                                  tff.simulation.datasets.ClientData]:
  """`(train, heldout, test)` of Stack Overflow; elements `tokens`, `title`, `tags`, ..."""
  return _load('stackoverflow', data_dir, download,
               lambda d: tff.simulation.datasets.stackoverflow.load_data(cache_dir=d))


def load_cifar100(data_dir: str = DEFAULT_DATA_DIR, download: bool = False
                  ) -> tuple[tff.simulation.datasets.ClientData,
                             tff.simulation.datasets.ClientData]:
  """`(train, test)` of CIFAR-100; elements `image`, `label`, `coarse_label`."""
  return _load('cifar100', data_dir, download,
               lambda d: tff.simulation.datasets.cifar100.load_data(cache_dir=d))


def _count_file(kind: str, data_dir: str) -> str:
  """The extracted count file, extracting its archive if only that is cached (no network)."""
  path = counts_path(kind, data_dir)
  archive = path + '.tar.bz2'
  if not os.path.exists(path):
    if not os.path.exists(archive):
      raise DatasetNotAvailableError(
          f'Stack Overflow {kind} counts not found: expected {path} (download '
          f'{_URL_ROOT}/{COUNT_FILES[kind]}.tar.bz2 and extract it into {os.path.dirname(path)}; '
          f'{_OR_DOWNLOAD})')
    with tarfile.open(archive) as tar:
      tar.extractall(os.path.dirname(path), filter='data')
  return path


def load_stackoverflow_word_counts(vocab_size: int, data_dir: str = DEFAULT_DATA_DIR,
                                   download: bool = False) -> 'collections.OrderedDict[str, int]':
  """The `vocab_size` most frequent words and their counts, most frequent first.

  Reads the file exactly as `tff.simulation.datasets.stackoverflow.load_word_counts` does, which
  is called instead when `download=True`.
  """
  if vocab_size < 1:
    raise ValueError(f'vocab_size must be >= 1, got {vocab_size}')
  if download:
    return tff.simulation.datasets.stackoverflow.load_word_counts(
        cache_dir=os.path.expanduser(data_dir), vocab_size=vocab_size)
  counts = collections.OrderedDict()
  with open(_count_file('word', data_dir)) as f:
    for line in f:
      word, count = line.split()
      counts[word] = int(count)
      if len(counts) >= vocab_size:
        break
  return counts


def load_stackoverflow_tag_counts(data_dir: str = DEFAULT_DATA_DIR, download: bool = False
                                  ) -> 'collections.OrderedDict[str, int]':
  """Every tag and its count, most frequent first (as `stackoverflow.load_tag_counts`)."""
  if download:
    return tff.simulation.datasets.stackoverflow.load_tag_counts(
        cache_dir=os.path.expanduser(data_dir))
  with open(_count_file('tag', data_dir)) as f:
    counts = json.load(f)
  return collections.OrderedDict(sorted(counts.items(), key=lambda item: item[1], reverse=True))


def per_example(tff_preprocess_fn: Callable[[tf.data.Dataset], tf.data.Dataset]
                ) -> Callable[[tf.data.Dataset], tf.data.Dataset]:
  """Turns a TFF baseline preprocessing function into one yielding `OrderedDict(x=, y=)` examples.

  Args:
    tff_preprocess_fn: A `create_preprocess_fn(ONE_EXAMPLE_SPEC, ...)` of a
      `tff.simulation.baselines` preprocessing module: raw elements in, batches of one `(x, y)`
      out. Unbatching them gives exactly TFF's examples (tokenisation, windows, crops, ...).
  """
  def preprocess(dataset: tf.data.Dataset) -> tf.data.Dataset:
    return tff_preprocess_fn(dataset).unbatch().map(
        lambda x, y: collections.OrderedDict(x=x, y=y))

  return preprocess


def pooled_arrays(data: tff.simulation.datasets.ClientData, max_examples: int = 0,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """All clients' `(x, y)` examples in two arrays, for centralised evaluation.

  Args:
    data: ClientData whose elements are `OrderedDict(x=, y=)`.
    max_examples: If positive, keep only the first `max_examples`, taking clients in an order
      shuffled with `seed` and each client's examples in file order.
    seed: Seed of the client order.
  """
  if max_examples < 0:
    raise ValueError(f'max_examples must be >= 0 (0: all), got {max_examples}')
  client_ids = list(data.client_ids)
  np.random.default_rng(seed).shuffle(client_ids)
  # One client at a time, as training reads them. (`create_tf_dataset_from_all_clients` nests the
  # preprocessing in a `flat_map`, where TF 2.14's map-and-batch fusion breaks TFF's Stack Overflow
  # tag preprocessing: "batch_size must be greater than zero".)
  xs, ys, count = [], [], 0
  for cid in client_ids:
    for batch in data.create_tf_dataset_for_client(cid).batch(4096).as_numpy_iterator():
      xs.append(batch['x'])
      ys.append(batch['y'])
      count += len(batch['y'])
    if max_examples and count >= max_examples:
      break
  x, y = np.concatenate(xs), np.concatenate(ys)
  return (x[:max_examples], y[:max_examples]) if max_examples else (x, y)


def write_sql_client_data(path: str, examples) -> None:
  """Writes examples to a new file in TFF's `SqlClientData` format (tests and custom datasets).

  Unlike `tff.simulation.datasets.save_to_sql_client_data`, a client may appear in several
  splits, as writers do in EMNIST's train and test splits.

  Args:
    path: The file to create (it must not exist).
    examples: Iterable of `(split_name, client_id, features)`, where `features` maps a feature
      name to bytes (a `bytes_list`), or to an integer or float array (an `int64_list` or
      `float_list`, flattened).
  """
  if os.path.exists(path):
    raise FileExistsError(f'{path} already exists')
  counts = collections.Counter()
  with sqlite3.connect(path) as db:
    db.execute('CREATE TABLE examples (split_name TEXT NOT NULL, client_id TEXT NOT NULL, '
               'serialized_example_proto BLOB NOT NULL)')
    db.execute('CREATE TABLE client_metadata (client_id TEXT NOT NULL, split_name TEXT NOT NULL, '
               'num_examples INTEGER NOT NULL)')
    for split, client_id, features in examples:
      proto = tf.train.Example(features=tf.train.Features(
          feature={k: _feature(v) for k, v in features.items()}))
      db.execute('INSERT INTO examples VALUES (?, ?, ?)',
                 (split, client_id, proto.SerializeToString()))
      counts[(client_id, split)] += 1
    db.executemany('INSERT INTO client_metadata VALUES (?, ?, ?)',
                   [(c, s, n) for (c, s), n in counts.items()])
  db.close()


def _feature(value) -> tf.train.Feature:
  if isinstance(value, bytes):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
  value = np.asarray(value)
  if np.issubdtype(value.dtype, np.integer):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=value.ravel()))
  return tf.train.Feature(float_list=tf.train.FloatList(value=value.ravel()))
