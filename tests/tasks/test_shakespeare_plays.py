"""The shakespeare_plays task: windows of the roles' text, TFF's model, next-character accuracy."""

import numpy as np
import pytest

from tff_lab import tasks
from tff_lab.data import shakespeare_plays as plays_data
from tff_lab.data import shakespeare_preprocessing as preprocessing

OPTIONS = dict(max_clients=6, max_chars_per_client=1500, seed=1)


@pytest.fixture(scope='module', name='cache')
def fixture_cache(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tff_lab_cache'))


@pytest.fixture(scope='module', name='task')
def fixture_task(cache):
  return tasks.create_task('shakespeare_plays', dict(OPTIONS, cache_dir=cache))


def _client_arrays(data, client_id):
  elements = list(data.create_tf_dataset_for_client(client_id).as_numpy_iterator())
  return np.stack([e['x'] for e in elements]), np.stack([e['y'] for e in elements])


def test_windows_hold_each_roles_text(task, cache):
  train_text, test_text = plays_data.build_clients(plays_data.load_plays(cache=cache), **OPTIONS)
  assert task.train_data.client_ids == task.test_data.client_ids == list(train_text)
  assert len(train_text) == 6
  for data, texts in ((task.train_data, train_text), (task.test_data, test_text)):
    for client_id, text in texts.items():
      x, y = _client_arrays(data, client_id)
      assert x.shape[1] == 80 and x.dtype == np.int64
      np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
      stream = np.concatenate([x, y[:, -1:]], axis=1).ravel()
      expected = ''.join(c if c in preprocessing.LEAF_VOCAB else '<oov>' for c in text)
      assert preprocessing.to_text(stream) == f'<bos>{expected}<eos>'
  x_test, _ = task.centralized_test_data
  assert len(x_test) == sum(len(_client_arrays(task.test_data, c)[0])
                            for c in task.test_data.client_ids)


def test_deterministic_and_cached(task, cache):
  again = tasks.create_task('shakespeare_plays', dict(OPTIONS, cache_dir=cache))
  for client_id in task.train_data.client_ids:
    for a, b in zip(_client_arrays(task.train_data, client_id),
                    _client_arrays(again.train_data, client_id)):
      np.testing.assert_array_equal(a, b)


def test_model_loss_and_accuracy_on_a_batch(task):
  assert task.prediction_kind == 'next_token' and task.train_spec.batch_size == 4
  batch = next(iter(task.preprocess_train(
      task.train_data.create_tf_dataset_for_client(task.train_data.client_ids[0]), seed=0)))
  model = task.model_fn()
  logits = model(batch['x'])
  assert logits.shape == (4, 80, preprocessing.num_ids(preprocessing.LEAF_VOCAB))
  loss = float(task.loss_fn()(batch['y'], logits))
  assert np.isfinite(loss) and loss == pytest.approx(np.log(84), rel=0.2)  # Untrained: ~uniform.
  metric = task.metrics_fn()[0]
  metric.update_state(batch['y'], logits)
  y = batch['y'].numpy()
  expected = (logits.numpy().argmax(-1) == y)[y != 0].mean()
  assert metric.result().numpy() == pytest.approx(expected)


def test_tff_vocabulary_and_bad_options(cache):
  task = tasks.create_task('shakespeare_plays', dict(OPTIONS, cache_dir=cache, vocabulary='tff'))
  assert task.model_fn.keywords['vocab_size'] == 90
  with pytest.raises(ValueError, match='vocabulary'):
    tasks.create_task('shakespeare_plays', dict(OPTIONS, cache_dir=cache, vocabulary='pg100'))


def test_tokenizing_each_round_gives_the_cached_examples():
  options = {'max_clients': 4, 'max_chars_per_client': 400}
  cached = tasks.create_task('shakespeare_plays', options)
  uncached = tasks.create_task('shakespeare_plays', dict(options, tokenize_each_round=True))
  assert uncached.example_preprocess is not None and cached.example_preprocess is None
  assert uncached.batch_spec == cached.batch_spec
  for cid in cached.train_data.client_ids:
    a = [b['x'] for b in cached.preprocess_train(
        cached.train_data.create_tf_dataset_for_client(cid), seed=3).as_numpy_iterator()]
    b = [b['x'] for b in uncached.preprocess_train(
        uncached.train_data.create_tf_dataset_for_client(cid), seed=3).as_numpy_iterator()]
    np.testing.assert_array_equal(np.concatenate(a), np.concatenate(b))
