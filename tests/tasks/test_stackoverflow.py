"""stackoverflow_word / stackoverflow_tag from a tiny `stackoverflow.sqlite` and count files."""

import io
import json
import os
import tarfile

import numpy as np
import pytest

from tff_lab import algorithms
from tff_lab import tasks
from tff_lab.evaluation import centralized
from tff_lab.evaluation import federated
from tff_lab.data import tff_datasets

WORDS = ['the', 'i', 'to', 'a', 'how', 'in', 'is', 'list']  # most frequent first
TAGS = {'python': 50, 'java': 40, 'list': 30, 'sql': 20}
POSTS = {
    '00000001': [('how do i sort a list in the shell', 'sorting a list', 'python|list'),
                 ('the list is empty', 'empty list', 'java|haskell')],
    '00000002': [('i want to learn sql', 'learning', 'sql')],
}


def _tar_bz2(path, text):
  with tarfile.open(path + '.tar.bz2', 'w:bz2') as tar:
    info = tarfile.TarInfo(os.path.basename(path))
    info.size = len(text.encode())
    tar.addfile(info, io.BytesIO(text.encode()))


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp('stackoverflow')
  rows = [(split, cid, {'tokens': tokens.encode(), 'title': title.encode(),
                        'tags': tags.encode(), 'type': b'question',
                        'creation_date': b'2016-01-01 00:00:00+00:00', 'score': np.int64(1)})
          for split in ('train', 'heldout', 'test')
          for cid, posts in POSTS.items() for tokens, title, tags in posts]
  tff_datasets.write_sql_client_data(str(path / 'stackoverflow.sqlite'), rows)
  os.makedirs(path / 'datasets')
  _tar_bz2(tff_datasets.counts_path('word', str(path)),
           ''.join(f'{w} {100 - i}\n' for i, w in enumerate(WORDS)))
  _tar_bz2(tff_datasets.counts_path('tag', str(path)), json.dumps(TAGS))
  return str(path)


def expected_word_example(post: str, vocab: list, length: int):
  """TFF's next-word ids, re-implemented: 0 pad, words 1..V, OOV V+1, begin V+2, end V+3."""
  v = len(vocab)
  ids = [vocab.index(w) + 1 if w in vocab else v + 1 for w in post.split(' ')[:length]]
  if len(ids) < length:
    ids.append(v + 3)
  ids = [v + 2] + ids + [0] * (length - len(ids))
  return np.array(ids[:-1]), np.array(ids[1:])


def test_word_examples_and_model(data_dir):
  options = {'data_dir': data_dir, 'vocab_size': 5, 'sequence_length': 6, 'embedding_size': 4,
             'lstm_size': 8}
  task = tasks.create_task('stackoverflow_word', options)
  assert task.train_data.client_ids == sorted(POSTS)
  for cid, posts in POSTS.items():
    got = list(task.train_data.create_tf_dataset_for_client(cid).as_numpy_iterator())
    assert len(got) == len(posts)
    for e, (tokens, _, _) in zip(got, posts):
      x, y = expected_word_example(tokens, WORDS[:5], 6)
      np.testing.assert_array_equal(e['x'], x)
      np.testing.assert_array_equal(e['y'], y)
  x, y = task.centralized_test_data
  assert x.shape == y.shape == (3, 6)
  logits = task.model_fn()(x)
  assert logits.shape == (3, 6, 5 + 4)  # words + padding, one OOV bucket, begin, end
  assert np.isfinite(float(task.loss_fn()(y, logits)))


def test_tag_examples_and_model(data_dir):
  task = tasks.create_task('stackoverflow_tag', {'data_dir': data_dir, 'word_vocab_size': 6,
                                                 'tag_vocab_size': 3})
  words, tags = WORDS[:6], ['python', 'java', 'list']
  for cid, posts in POSTS.items():
    got = list(task.train_data.create_tf_dataset_for_client(cid).as_numpy_iterator())
    for e, (tokens, title, post_tags) in zip(got, posts):
      bag = np.array([f'{tokens} {title}'.split().count(w) for w in words], np.float32)
      np.testing.assert_allclose(e['x'], bag / bag.sum(), rtol=1e-6)  # OOV words dropped
      np.testing.assert_array_equal(e['y'], [t in post_tags.split('|') for t in tags])
  x, y = task.centralized_test_data
  assert x.shape == (3, 6) and y.shape == (3, 3)
  model = task.model_fn()
  assert model.count_params() == 6 * 3 + 3  # logistic regression
  probs = model(x)
  assert probs.shape == (3, 3) and np.all((0 < probs) & (probs < 1))
  assert np.isfinite(float(task.loss_fn()(y, probs)))

  # Through TFF: the SQLite reads and vocabulary tables run in TFF's worker for one FedAvg round.
  # Each client holds fewer posts than a batch, so the round is one gradient step on the pooled
  # loss, which decreases for this small, smooth problem; the test posts are the training posts.
  process = algorithms.create_learning_process('fedavg', task,
                                               algorithms.create_optimizer('sgd', 0.5),
                                               algorithms.create_optimizer('sgd', 1.0))
  initial = process.initialize()
  state = process.next(initial, [
      task.preprocess_train(task.train_data.create_tf_dataset_for_client(c), seed=0)
      for c in task.train_data.client_ids]).state
  weights = process.get_model_weights(state)
  fed = federated.evaluate_federated(task, weights)
  central = centralized.evaluate_centralized(task, weights)
  assert fed['num_examples'] == central['num_examples'] == 3
  assert fed['loss'] == pytest.approx(central['loss'], rel=1e-5)
  assert fed['accuracy'] == pytest.approx(central['accuracy'])
  before = centralized.evaluate_centralized(task, process.get_model_weights(initial))
  assert central['loss'] < before['loss']


def test_missing_files(tmp_path, data_dir):
  with pytest.raises(tff_datasets.DatasetNotAvailableError,
                     match=f'^Stack Overflow not found: expected {tmp_path}/stackoverflow.sqlite '):
    tasks.create_task('stackoverflow_tag', {'data_dir': str(tmp_path)})
  os.symlink(os.path.join(data_dir, 'stackoverflow.sqlite'), tmp_path / 'stackoverflow.sqlite')
  with pytest.raises(tff_datasets.DatasetNotAvailableError,
                     match='^Stack Overflow word counts not found: expected '
                           f'{tmp_path}/datasets/stackoverflow.word_count '):
    tasks.create_task('stackoverflow_word', {'data_dir': str(tmp_path)})
